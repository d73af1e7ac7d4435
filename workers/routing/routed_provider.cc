#include "workers/routing/routed_provider.h"

#include <algorithm>
#include <mutex>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/time_util.h"
#include "workers/routing/providers_config.h"

namespace aijobs::worker {

// One deployment: its provider, breaker and buckets. It is the provider's RateLimitObserver.
struct RoutedProvider::Deployment : public RateLimitObserver {
  Deployment(const aijobs::v1::Deployment& c, const RoutedProviderOptions& options)
      : config(c), breaker(BreakerOptionsFrom(c.breaker()), options.clock) {
    // Seconds / 60 rather than ToDoubleMinutes: 3000/min x 0.2 s comes out as exactly 10.
    // The deployment's own burst wins over the process-wide default.
    absl::Duration burst = FromProtoDuration(c.rate_limit().burst());
    if (burst <= absl::ZeroDuration()) burst = options.rate_burst;
    double burst_minutes = absl::ToDoubleSeconds(burst) / 60;
    if (c.rate_limit().requests_per_minute() > 0) {
      double rpm = c.rate_limit().requests_per_minute();
      requests =
          std::make_unique<TokenBucket>(rpm, std::max(1.0, rpm * burst_minutes), options.clock);
    }
    if (c.rate_limit().tokens_per_minute() > 0) {
      double tpm = c.rate_limit().tokens_per_minute();
      tokens =
          std::make_unique<TokenBucket>(tpm, std::max(1.0, tpm * burst_minutes), options.clock);
    }
  }

  void OnRateLimitHeaders(const RateLimitHeaders& h) override {
    if (requests) requests->Observe(h.limit_requests, h.remaining_requests, h.reset_requests);
    if (tokens) tokens->Observe(h.limit_tokens, h.remaining_tokens, h.reset_tokens);
  }

  // How long until a call estimated at `estimate` tokens may start (zero: now).
  absl::Duration Wait(double estimate) {
    absl::Duration w = absl::ZeroDuration();
    if (requests) w = std::max(w, requests->TimeUntil(1));
    if (tokens) w = std::max(w, tokens->TimeUntil(estimate));
    return w;
  }
  bool TryTake(double estimate) {
    if (requests && !requests->TryTake(1)) return false;
    if (tokens && !tokens->TryTake(estimate)) {
      if (requests) requests->Return(1);
      return false;
    }
    return true;
  }
  absl::Duration Reserve(double estimate) {
    absl::Duration w = absl::ZeroDuration();
    if (requests) w = std::max(w, requests->Reserve(1));
    if (tokens) w = std::max(w, tokens->Reserve(estimate));
    return w;
  }
  void Return(double estimate) {
    if (requests) requests->Return(1);
    if (tokens) tokens->Return(estimate);
  }
  absl::Time PausedUntil() const {
    absl::Time t = absl::InfinitePast();
    if (requests) t = std::max(t, requests->paused_until());
    if (tokens) t = std::max(t, tokens->paused_until());
    return t;
  }

  const aijobs::v1::Deployment config;
  CircuitBreaker breaker;
  std::unique_ptr<TokenBucket> requests;  // nullptr: unlimited
  std::unique_ptr<TokenBucket> tokens;
  // Last: destroyed first, while the observer (this) and the buckets still exist.
  std::unique_ptr<LlmProvider> provider;
};

namespace {

ProviderError MakeError(std::string code, std::string message, bool retryable,
                        absl::Duration retry_after = absl::ZeroDuration()) {
  ProviderError e;
  e.code = std::move(code);
  e.message = std::move(message);
  e.retryable = retryable;
  e.retry_after = retry_after;
  return e;
}

double EstimateChatTokens(const ChatRequest& r, int default_max_tokens) {
  size_t chars = 0;
  for (const ChatMessage& m : r.messages) chars += m.content.size() + m.role.size();
  return static_cast<double>(chars) / 4 + (r.max_tokens > 0 ? r.max_tokens : default_max_tokens);
}

double EstimateEmbedTokens(const EmbedRequest& r) {
  size_t chars = 0;
  for (const std::string& t : r.texts) chars += t.size();
  return std::max(1.0, static_cast<double>(chars) / 4);
}

}  // namespace

// The state of one routed call, shared by its LlmCall handle, its pending timer and (weakly)
// the sinks of its inner calls. `mu_` is held while the caller's sink runs, which is what
// lets Cancel() promise no callback after it returns; it is recursive so that a callback may
// cancel its own call. Inner calls are started on the routing timer thread or in StartChat,
// never from inside another provider's callback.
class RoutedProvider::Call : public std::enable_shared_from_this<RoutedProvider::Call> {
 public:
  Call(RoutedProvider* owner, std::vector<Deployment*> order)
      : owner_(owner), order_(std::move(order)), tried_(order_.size(), false) {}

  void StartChat(const ChatRequest& request, std::shared_ptr<ChatSink> sink) {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    chat_ = request;
    chat_sink_ = std::move(sink);
    deadline_ = request.deadline;
    estimate_ = EstimateChatTokens(request, owner_->options_.default_max_tokens);
    RouteLocked(/*inside_start=*/true);
  }

  void StartEmbed(const EmbedRequest& request, std::shared_ptr<EmbedSink> sink) {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    is_embed_ = true;
    embed_ = request;
    embed_sink_ = std::move(sink);
    deadline_ = request.deadline;
    estimate_ = EstimateEmbedTokens(request);
    RouteLocked(/*inside_start=*/true);
  }

  // Reports `error` from the timer thread (never from inside Start*).
  void FailSoon(ProviderError error, std::shared_ptr<ChatSink> chat,
                std::shared_ptr<EmbedSink> embed) {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    chat_sink_ = std::move(chat);
    embed_sink_ = std::move(embed);
    FailLocked(std::move(error), /*inside_start=*/true);
  }

  void Cancel() {
    LlmCall* inner = nullptr;
    {
      std::lock_guard<std::recursive_mutex> lock(mu_);
      if (cancelled_) return;
      cancelled_ = true;
      if (timer_ != 0) owner_->timers_.Cancel(timer_);
      timer_ = 0;
      if (!done_) {
        if (reserved_ >= 0) order_[reserved_]->Return(estimate_);
        reserved_ = -1;
        if (running_) {
          order_[current_]->breaker.Release(permit_);  // no verdict on the deployment
          inner = inner_.get();
        }
      }
      done_ = true;
      chat_sink_.reset();
      embed_sink_.reset();
    }
    // Outside our lock: the inner call's Cancel() waits for its running callback, which may
    // be waiting for our lock. (From inside our own callback the lock is still held by the
    // callback's frame, but then we are on the inner call's thread or ours, where that is
    // allowed.) cancelled_ keeps inner_ from changing meanwhile.
    if (inner != nullptr) inner->Cancel();
  }

  // Hands over every inner call handle, so the caller destroys them outside our lock.
  std::vector<std::unique_ptr<LlmCall>> TakeHandles() {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    std::vector<std::unique_ptr<LlmCall>> handles = std::move(spent_);
    spent_.clear();
    if (inner_) handles.push_back(std::move(inner_));
    return handles;
  }

  // --- events of inner call `serial` (any provider thread) ---

  void OnInnerDelta(uint64_t serial, const std::string& text) {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    if (!IsCurrent(serial)) return;
    delivered_any_ = true;
    std::shared_ptr<ChatSink> sink = chat_sink_;  // survives a Cancel() from the callback
    if (sink) sink->OnDelta(text);
  }

  void OnInnerChatDone(uint64_t serial, const Usage& usage) {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    if (!IsCurrent(serial)) return;
    Deployment* d = Succeeded(usage);
    std::shared_ptr<ChatSink> sink = std::move(chat_sink_);
    if (sink) sink->OnDone(usage, d->config.name());
  }

  void OnInnerEmbedDone(uint64_t serial, std::vector<std::vector<float>> vectors,
                        const Usage& usage) {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    if (!IsCurrent(serial)) return;
    Deployment* d = Succeeded(usage);
    std::shared_ptr<EmbedSink> sink = std::move(embed_sink_);
    if (sink) sink->OnDone(std::move(vectors), usage, d->config.name());
  }

  void OnInnerError(uint64_t serial, const ProviderError& error) {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    if (!IsCurrent(serial)) return;
    Deployment* d = order_[current_];
    // Only provider failures say something about the deployment's health.
    if (error.retryable) {
      d->breaker.Record(permit_, /*failed=*/true);
    } else {
      d->breaker.Release(permit_);
    }
    running_ = false;
    if (error.retryable && !delivered_any_) {
      NoteError(error);
      // Fall back on the routing thread, not inside this provider's callback.
      ScheduleLocked(absl::Now(), &Call::Continue);
      return;
    }
    // After output (or a caller mistake): the error is the caller's to handle; another
    // deployment's text must not follow this one's.
    done_ = true;
    DeliverErrorLocked(error);
  }

 private:
  bool IsCurrent(uint64_t serial) const {
    return !cancelled_ && !done_ && running_ && serial == serial_;
  }

  Deployment* Succeeded(const Usage& usage) {
    Deployment* d = order_[current_];
    done_ = true;
    running_ = false;
    d->breaker.Record(permit_, /*failed=*/false);
    double actual = static_cast<double>(usage.prompt_tokens) + usage.completion_tokens;
    if (d->tokens && actual > 0) d->tokens->Return(estimate_ - actual);
    return d;
  }

  void NoteError(const ProviderError& error) {
    last_error_ = error;
    have_error_ = true;
    if (error.retry_after > absl::ZeroDuration()) {
      min_hint_ = std::min(min_hint_, error.retry_after);
    }
  }

  void ScheduleLocked(absl::Time when, void (Call::*step)()) {
    timer_ = owner_->timers_.Schedule(when, [self = shared_from_this(), step] {
      std::lock_guard<std::recursive_mutex> lock(self->mu_);
      self->timer_ = 0;
      if (self->cancelled_ || self->done_) return;
      ((*self).*step)();
    });
  }

  void Continue() { RouteLocked(/*inside_start=*/false); }

  // Picks the next member and starts it, or waits for one, or fails the call.
  void RouteLocked(bool inside_start) {
    int wait_index = -1;
    absl::Duration best_wait = absl::InfiniteDuration();
    absl::Duration first_probe = absl::InfiniteDuration();
    bool breaker_skipped = false;
    for (size_t i = 0; i < order_.size(); ++i) {
      if (tried_[i]) continue;
      Deployment* d = order_[i];
      if (absl::Duration p = d->breaker.TimeUntilProbe(); p > absl::ZeroDuration()) {
        breaker_skipped = true;
        first_probe = std::min(first_probe, p);
        continue;
      }
      absl::Duration wait = d->Wait(estimate_);
      if (wait <= absl::ZeroDuration()) {
        CircuitBreaker::Permit permit = d->breaker.Allow();
        if (permit == CircuitBreaker::Permit::kRejected) {
          // Half-open with another call's probe out: not for this call.
          tried_[i] = true;
          breaker_skipped = true;
          first_probe = std::min(first_probe, absl::ZeroDuration());
          continue;
        }
        if (d->TryTake(estimate_)) {
          StartInnerLocked(static_cast<int>(i), permit);
          return;
        }
        d->breaker.Release(permit);  // lost the race for the last token
        wait = std::max(d->Wait(estimate_), absl::Microseconds(1));
      }
      if (wait < best_wait) {
        best_wait = wait;
        wait_index = static_cast<int>(i);
      }
    }
    absl::Time now = absl::Now();
    if (wait_index >= 0) {
      if (now + best_wait <= deadline_) {
        // Queue behind the calls already waiting on this member.
        absl::Duration wait = order_[wait_index]->Reserve(estimate_);
        reserved_ = wait_index;
        ScheduleLocked(now + wait, &Call::ReservationDue);
        return;
      }
      if (!have_error_) {
        FailLocked(
            MakeError("RATE_LIMITED",
                      absl::StrCat("every deployment of this model is at its rate limit; "
                                   "the next slot (in ",
                                   absl::FormatDuration(best_wait), ") is past the job's deadline"),
                      true, best_wait),
            inside_start);
        return;
      }
      min_hint_ = std::min(min_hint_, best_wait);
    }
    if (have_error_) {
      ProviderError e = last_error_;
      e.retryable = true;
      absl::Duration hint = std::min(min_hint_, first_probe);
      e.retry_after = hint == absl::InfiniteDuration() ? absl::ZeroDuration() : hint;
      FailLocked(std::move(e), inside_start);
      return;
    }
    std::vector<std::string> names;
    for (Deployment* d : order_) names.push_back(d->config.name());
    absl::Duration hint =
        first_probe == absl::InfiniteDuration() ? absl::ZeroDuration() : first_probe;
    FailLocked(MakeError("PROVIDER_UNAVAILABLE",
                         absl::StrCat(breaker_skipped ? "the circuit breaker is open for every "
                                                        "deployment of this model ("
                                                      : "no deployment available (",
                                      absl::StrJoin(names, ", "), ")"),
                         true, hint),
               inside_start);
  }

  void ReservationDue() {
    Deployment* d = order_[reserved_];
    absl::Time paused = d->PausedUntil();
    if (paused > absl::Now()) {  // the provider asked for a pause after we reserved
      ScheduleLocked(paused, &Call::ReservationDue);
      return;
    }
    int index = reserved_;
    reserved_ = -1;
    CircuitBreaker::Permit permit = d->breaker.Allow();
    if (permit == CircuitBreaker::Permit::kRejected) {
      d->Return(estimate_);
      tried_[index] = true;
      RouteLocked(/*inside_start=*/false);
      return;
    }
    StartInnerLocked(index, permit);
  }

  void StartInnerLocked(int index, CircuitBreaker::Permit permit);

  void FailLocked(ProviderError error, bool inside_start) {
    if (inside_start) {
      // Never call the sink from inside StartChat/StartEmbed.
      pending_error_ = std::move(error);
      ScheduleLocked(absl::Now(), &Call::DeliverPending);
      return;
    }
    done_ = true;
    DeliverErrorLocked(error);
  }

  void DeliverPending() {
    done_ = true;
    DeliverErrorLocked(pending_error_);
  }

  void DeliverErrorLocked(const ProviderError& error) {
    std::shared_ptr<ChatSink> chat = std::move(chat_sink_);
    std::shared_ptr<EmbedSink> embed = std::move(embed_sink_);
    if (chat) chat->OnError(error);
    if (embed) embed->OnError(error);
  }

  RoutedProvider* const owner_;
  std::vector<Deployment*> order_;
  std::vector<bool> tried_;
  std::recursive_mutex mu_;
  bool is_embed_ = false;
  ChatRequest chat_;
  EmbedRequest embed_;
  absl::Time deadline_ = absl::InfiniteFuture();
  double estimate_ = 0;
  std::shared_ptr<ChatSink> chat_sink_;
  std::shared_ptr<EmbedSink> embed_sink_;
  bool cancelled_ = false;
  bool done_ = false;
  bool running_ = false;        // an inner call is out
  bool delivered_any_ = false;  // output reached the caller: no more fallback
  uint64_t serial_ = 0;         // of the current inner call
  int current_ = -1;            // index in order_ of the current inner call
  int reserved_ = -1;           // index in order_ holding our reservation
  CircuitBreaker::Permit permit_ = CircuitBreaker::Permit::kRejected;
  std::unique_ptr<LlmCall> inner_;
  std::vector<std::unique_ptr<LlmCall>> spent_;  // finished inner calls, destroyed with us
  TimerQueue::TimerId timer_ = 0;
  ProviderError last_error_;
  bool have_error_ = false;
  absl::Duration min_hint_ = absl::InfiniteDuration();
  ProviderError pending_error_;
};

namespace {

// Forward an inner call's events to the routed call, tagged with the inner call's serial;
// weak, so an abandoned routed call is not kept alive by a provider.
template <typename CallT>
class InnerChatSink : public ChatSink {
 public:
  InnerChatSink(std::weak_ptr<CallT> call, uint64_t serial)
      : call_(std::move(call)), serial_(serial) {}
  void OnDelta(const std::string& text) override {
    if (auto c = call_.lock()) c->OnInnerDelta(serial_, text);
  }
  void OnDone(const Usage& usage, const std::string& model) override {
    if (auto c = call_.lock()) c->OnInnerChatDone(serial_, usage);
  }
  void OnError(const ProviderError& error) override {
    if (auto c = call_.lock()) c->OnInnerError(serial_, error);
  }

 private:
  std::weak_ptr<CallT> call_;
  const uint64_t serial_;
};

template <typename CallT>
class InnerEmbedSink : public EmbedSink {
 public:
  InnerEmbedSink(std::weak_ptr<CallT> call, uint64_t serial)
      : call_(std::move(call)), serial_(serial) {}
  void OnDone(std::vector<std::vector<float>> vectors, const Usage& usage,
              const std::string& model) override {
    if (auto c = call_.lock()) c->OnInnerEmbedDone(serial_, std::move(vectors), usage);
  }
  void OnError(const ProviderError& error) override {
    if (auto c = call_.lock()) c->OnInnerError(serial_, error);
  }

 private:
  std::weak_ptr<CallT> call_;
  const uint64_t serial_;
};

}  // namespace

void RoutedProvider::Call::StartInnerLocked(int index, CircuitBreaker::Permit permit) {
  Deployment* d = order_[index];
  tried_[index] = true;
  current_ = index;
  permit_ = permit;
  running_ = true;
  ++serial_;
  if (inner_) spent_.push_back(std::move(inner_));
  // Per-job options are for the provider they are named after (input.sim -> sim).
  bool pass_options = d->config.provider() == owner_->options_.name;
  if (is_embed_) {
    EmbedRequest r = embed_;
    r.model = d->config.model();
    if (!pass_options) r.provider_options.Clear();
    inner_ = d->provider->StartEmbed(
        r, std::make_shared<InnerEmbedSink<Call>>(weak_from_this(), serial_));
  } else {
    ChatRequest r = chat_;
    r.model = d->config.model();
    if (!pass_options) r.provider_options.Clear();
    inner_ =
        d->provider->StartChat(r, std::make_shared<InnerChatSink<Call>>(weak_from_this(), serial_));
  }
}

namespace {

// The handle the caller holds.
template <typename CallT>
class RoutedCallHandle : public LlmCall {
 public:
  explicit RoutedCallHandle(std::shared_ptr<CallT> call) : call_(std::move(call)) {}
  ~RoutedCallHandle() override {
    call_->Cancel();
    // Destroyed here, outside the call's lock.
    std::vector<std::unique_ptr<LlmCall>> handles = call_->TakeHandles();
    handles.clear();
  }
  void Cancel() override { call_->Cancel(); }

 private:
  std::shared_ptr<CallT> call_;
};

}  // namespace

RoutedProvider::RoutedProvider(aijobs::v1::ProvidersConfig config, RoutedProviderOptions options)
    : config_(std::move(config)),
      options_(std::move(options)),
      rng_(options_.seed != 0 ? options_.seed : std::random_device{}()) {}

RoutedProvider::~RoutedProvider() = default;

absl::StatusOr<std::unique_ptr<RoutedProvider>> RoutedProvider::Create(
    aijobs::v1::ProvidersConfig config, const DeploymentFactory& factory,
    RoutedProviderOptions options) {
  if (absl::Status s = ValidateProvidersConfig(config); !s.ok()) return s;
  ApplyProviderDefaults(&config);
  std::unique_ptr<RoutedProvider> p(new RoutedProvider(std::move(config), std::move(options)));
  for (int i = 0; i < p->config_.deployments_size(); ++i) {
    const aijobs::v1::Deployment& dc = p->config_.deployments(i);
    auto d = std::make_unique<Deployment>(dc, p->options_);
    absl::StatusOr<std::unique_ptr<LlmProvider>> provider = factory(dc, d.get());
    if (!provider.ok() || *provider == nullptr) {
      absl::Status s = provider.ok() ? absl::InternalError("the factory returned no provider")
                                     : provider.status();
      return absl::Status(s.code(),
                          absl::StrCat("deployments[", i, "] (\"", dc.name(), "\", provider ",
                                       dc.provider(), "): ", s.message()));
    }
    d->provider = std::move(*provider);
    p->deployment_by_name_[dc.name()] = d.get();
    p->deployments_.push_back(std::move(d));
  }
  for (const auto& g : p->config_.model_groups()) {
    std::vector<Member>& members = p->groups_[g.name()];
    for (const auto& m : g.members()) {
      members.push_back(Member{p->deployment_by_name_.at(m.deployment()),
                               std::max<uint32_t>(1, m.weight()), m.priority()});
    }
    std::stable_sort(members.begin(), members.end(),
                     [](const Member& a, const Member& b) { return a.priority < b.priority; });
  }
  return p;
}

bool RoutedProvider::OrderFor(const std::string& model, std::vector<Deployment*>* order) {
  auto it = groups_.find(model.empty() ? config_.default_model_group() : model);
  if (it == groups_.end()) return false;
  const std::vector<Member>& members = it->second;
  absl::MutexLock lock(&rng_mu_);
  for (size_t begin = 0; begin < members.size();) {
    size_t end = begin;
    while (end < members.size() && members[end].priority == members[begin].priority) ++end;
    // Weighted sampling without replacement within the tier: the first pick carries the
    // load balancing, the rest give the fallback order.
    std::vector<Member> tier(members.begin() + begin, members.begin() + end);
    while (!tier.empty()) {
      uint64_t total = 0;
      for (const Member& m : tier) total += m.weight;
      uint64_t r = std::uniform_int_distribution<uint64_t>(0, total - 1)(rng_);
      size_t pick = 0;
      while (r >= tier[pick].weight) r -= tier[pick++].weight;
      order->push_back(tier[pick].deployment);
      tier.erase(tier.begin() + pick);
    }
    begin = end;
  }
  return true;
}

std::unique_ptr<LlmCall> RoutedProvider::StartChat(const ChatRequest& request,
                                                   std::shared_ptr<ChatSink> sink) {
  std::vector<Deployment*> order;
  bool known = OrderFor(request.model, &order);
  auto call = std::make_shared<Call>(this, std::move(order));
  if (!known) {
    call->FailSoon(MakeError("INVALID_INPUT",
                             absl::StrCat("unknown model \"", request.model,
                                          "\" (known: ", absl::StrJoin(models(), ", "), ")"),
                             false),
                   std::move(sink), nullptr);
  } else {
    call->StartChat(request, std::move(sink));
  }
  return std::make_unique<RoutedCallHandle<Call>>(std::move(call));
}

std::unique_ptr<LlmCall> RoutedProvider::StartEmbed(const EmbedRequest& request,
                                                    std::shared_ptr<EmbedSink> sink) {
  std::vector<Deployment*> order;
  bool known = OrderFor(request.model, &order);
  auto call = std::make_shared<Call>(this, std::move(order));
  if (!known) {
    call->FailSoon(MakeError("INVALID_INPUT",
                             absl::StrCat("unknown model \"", request.model,
                                          "\" (known: ", absl::StrJoin(models(), ", "), ")"),
                             false),
                   nullptr, std::move(sink));
  } else {
    call->StartEmbed(request, std::move(sink));
  }
  return std::make_unique<RoutedCallHandle<Call>>(std::move(call));
}

std::vector<std::string> RoutedProvider::models() const {
  std::vector<std::string> names;
  for (const auto& g : config_.model_groups()) names.push_back(g.name());
  return names;
}

CircuitBreaker* RoutedProvider::breaker(const std::string& deployment) const {
  auto it = deployment_by_name_.find(deployment);
  return it == deployment_by_name_.end() ? nullptr : &it->second->breaker;
}

TokenBucket* RoutedProvider::request_bucket(const std::string& deployment) const {
  auto it = deployment_by_name_.find(deployment);
  return it == deployment_by_name_.end() ? nullptr : it->second->requests.get();
}

TokenBucket* RoutedProvider::token_bucket(const std::string& deployment) const {
  auto it = deployment_by_name_.find(deployment);
  return it == deployment_by_name_.end() ? nullptr : it->second->tokens.get();
}

}  // namespace aijobs::worker
