#include "workers/routing/routed_call.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"

namespace aijobs::worker {
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

// Forward an inner call's events to the routed call, tagged with the inner call's serial;
// weak, so an abandoned routed call is not kept alive by a provider.
class InnerChatSink : public ChatSink {
 public:
  InnerChatSink(std::weak_ptr<RoutedCall> call, uint64_t serial)
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
  const std::weak_ptr<RoutedCall> call_;
  const uint64_t serial_;
};

class InnerEmbedSink : public EmbedSink {
 public:
  InnerEmbedSink(std::weak_ptr<RoutedCall> call, uint64_t serial)
      : call_(std::move(call)), serial_(serial) {}
  void OnDone(std::vector<std::vector<float>> vectors, const Usage& usage,
              const std::string& model) override {
    if (auto c = call_.lock()) c->OnInnerEmbedDone(serial_, std::move(vectors), usage);
  }
  void OnError(const ProviderError& error) override {
    if (auto c = call_.lock()) c->OnInnerError(serial_, error);
  }

 private:
  const std::weak_ptr<RoutedCall> call_;
  const uint64_t serial_;
};

}  // namespace

RoutedCall::RoutedCall(TimerQueue* timers, std::string options_provider, int default_max_tokens,
                       std::vector<RoutedDeployment*> order)
    : timers_(timers),
      options_provider_(std::move(options_provider)),
      default_max_tokens_(default_max_tokens),
      order_(std::move(order)),
      tried_(order_.size(), false) {}

void RoutedCall::StartChat(const ChatRequest& request, std::shared_ptr<ChatSink> sink) {
  Outbox out;
  absl::MutexLock lock(&gate_.mu);
  chat_ = request;
  chat_sink_ = std::move(sink);
  deadline_ = request.deadline;
  estimate_ = EstimateChatTokens(request, default_max_tokens_);
  Route(/*inside_start=*/true, &out);
  Flush(&out);  // starts the first member; never calls the sink (inside_start)
}

void RoutedCall::StartEmbed(const EmbedRequest& request, std::shared_ptr<EmbedSink> sink) {
  Outbox out;
  absl::MutexLock lock(&gate_.mu);
  is_embed_ = true;
  embed_ = request;
  embed_sink_ = std::move(sink);
  deadline_ = request.deadline;
  estimate_ = EstimateEmbedTokens(request);
  Route(/*inside_start=*/true, &out);
  Flush(&out);
}

void RoutedCall::FailSoon(ProviderError error, std::shared_ptr<ChatSink> chat,
                          std::shared_ptr<EmbedSink> embed) {
  absl::MutexLock lock(&gate_.mu);
  chat_sink_ = std::move(chat);
  embed_sink_ = std::move(embed);
  Outbox unused;  // inside_start: nothing to flush
  Fail(std::move(error), /*inside_start=*/true, &unused);
}

void RoutedCall::Cancel() {
  Outbox released;  // the sinks go after the lock
  LlmCall* inner = nullptr;
  {
    absl::MutexLock lock(&gate_.mu);
    if (!cancelled_) {
      cancelled_ = true;
      if (timer_ != 0) timers_->Cancel(timer_);
      timer_ = 0;
      if (!done_) {
        if (reserved_ >= 0) order_[reserved_]->Return(estimate_);
        reserved_ = -1;
        if (running_) {
          order_[current_]->breaker.Release(permit_);  // no verdict on the deployment
          // While the current inner call is still starting, its launch cancels it.
          if (inner_serial_ == serial_) inner = inner_.get();
        }
      }
      done_ = true;
      released.chat = std::move(chat_sink_);
      released.embed = std::move(embed_sink_);
    }
    gate_.Close();  // waits for our callback running on another thread
  }
  // Outside our lock: the inner call's Cancel() waits for its running callback, which may be
  // waiting for our lock. The handle is only destroyed by TakeHandles(), after Cancel().
  if (inner != nullptr) inner->Cancel();
}

std::vector<std::unique_ptr<LlmCall>> RoutedCall::TakeHandles() {
  absl::MutexLock lock(&gate_.mu);
  std::vector<std::unique_ptr<LlmCall>> handles = std::move(spent_);
  spent_.clear();
  if (inner_) handles.push_back(std::move(inner_));
  return handles;
}

void RoutedCall::OnInnerDelta(uint64_t serial, const std::string& text) {
  std::shared_ptr<ChatSink> sink;  // may be the last reference once Cancel() ran
  absl::MutexLock lock(&gate_.mu);
  if (!IsCurrent(serial)) return;
  delivered_any_ = true;
  sink = chat_sink_;
  if (sink) gate_.Run([&] { sink->OnDelta(text); });
}

void RoutedCall::OnInnerChatDone(uint64_t serial, const Usage& usage) {
  Outbox out;
  absl::MutexLock lock(&gate_.mu);
  if (!IsCurrent(serial)) return;
  std::string name = Succeeded(usage)->config.name();
  out.chat = std::move(chat_sink_);
  if (out.chat) gate_.RunLast([&] { out.chat->OnDone(usage, name); });
}

void RoutedCall::OnInnerEmbedDone(uint64_t serial, std::vector<std::vector<float>> vectors,
                                  const Usage& usage) {
  Outbox out;
  absl::MutexLock lock(&gate_.mu);
  if (!IsCurrent(serial)) return;
  std::string name = Succeeded(usage)->config.name();
  out.embed = std::move(embed_sink_);
  if (out.embed) gate_.RunLast([&] { out.embed->OnDone(std::move(vectors), usage, name); });
}

void RoutedCall::OnInnerError(uint64_t serial, const ProviderError& error) {
  Outbox out;
  absl::MutexLock lock(&gate_.mu);
  if (!IsCurrent(serial)) return;
  RoutedDeployment* d = order_[current_];
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
    ScheduleLocked(absl::Now(), &RoutedCall::Continue);
    return;
  }
  // After output (or a caller mistake): the error is the caller's to handle; another
  // deployment's text must not follow this one's.
  Fail(error, /*inside_start=*/false, &out);
  Flush(&out);
}

RoutedDeployment* RoutedCall::Succeeded(const Usage& usage) {
  RoutedDeployment* d = order_[current_];
  done_ = true;
  running_ = false;
  d->breaker.Record(permit_, /*failed=*/false);
  double actual = static_cast<double>(usage.prompt_tokens) + usage.completion_tokens;
  if (d->tokens && actual > 0) d->tokens->Return(estimate_ - actual);
  return d;
}

void RoutedCall::NoteError(const ProviderError& error) {
  last_error_ = error;
  have_error_ = true;
  if (error.retry_after > absl::ZeroDuration()) {
    min_hint_ = std::min(min_hint_, error.retry_after);
  }
}

void RoutedCall::ScheduleLocked(absl::Time when, Step step) {
  timer_ = timers_->Schedule(when, [self = shared_from_this(), step] { self->RunStep(step); });
}

void RoutedCall::RunStep(Step step) {
  Outbox out;
  absl::MutexLock lock(&gate_.mu);
  timer_ = 0;
  if (done_) return;
  (this->*step)(&out);
  Flush(&out);
}

void RoutedCall::Continue(Outbox* out) { Route(/*inside_start=*/false, out); }

void RoutedCall::Route(bool inside_start, Outbox* out) {
  int wait_index = -1;
  absl::Duration best_wait = absl::InfiniteDuration();
  absl::Duration first_probe = absl::InfiniteDuration();
  bool breaker_skipped = false;
  for (size_t i = 0; i < order_.size(); ++i) {
    if (tried_[i]) continue;
    RoutedDeployment* d = order_[i];
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
        StartInner(static_cast<int>(i), permit, out);
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
      ScheduleLocked(now + wait, &RoutedCall::ReservationDue);
      return;
    }
    if (!have_error_) {
      Fail(MakeError("RATE_LIMITED",
                     absl::StrCat("every deployment of this model is at its rate limit; "
                                  "the next slot (in ",
                                  absl::FormatDuration(best_wait), ") is past the job's deadline"),
                     true, best_wait),
           inside_start, out);
      return;
    }
    min_hint_ = std::min(min_hint_, best_wait);
  }
  if (have_error_) {
    ProviderError e = last_error_;
    e.retryable = true;
    absl::Duration hint = std::min(min_hint_, first_probe);
    e.retry_after = hint == absl::InfiniteDuration() ? absl::ZeroDuration() : hint;
    Fail(std::move(e), inside_start, out);
    return;
  }
  std::vector<std::string> names;
  for (RoutedDeployment* d : order_) names.push_back(d->config.name());
  absl::Duration hint =
      first_probe == absl::InfiniteDuration() ? absl::ZeroDuration() : first_probe;
  Fail(MakeError("PROVIDER_UNAVAILABLE",
                 absl::StrCat(breaker_skipped ? "the circuit breaker is open for every "
                                                "deployment of this model ("
                                              : "no deployment available (",
                              absl::StrJoin(names, ", "), ")"),
                 true, hint),
       inside_start, out);
}

void RoutedCall::ReservationDue(Outbox* out) {
  RoutedDeployment* d = order_[reserved_];
  absl::Time paused = d->PausedUntil();
  if (paused > absl::Now()) {  // the provider asked for a pause after we reserved
    ScheduleLocked(paused, &RoutedCall::ReservationDue);
    return;
  }
  int index = reserved_;
  reserved_ = -1;
  CircuitBreaker::Permit permit = d->breaker.Allow();
  if (permit == CircuitBreaker::Permit::kRejected) {
    d->Return(estimate_);
    tried_[index] = true;
    Route(/*inside_start=*/false, out);
    return;
  }
  StartInner(index, permit, out);
}

void RoutedCall::DeliverPending(Outbox* out) {
  done_ = true;
  out->error = pending_error_;
  out->chat = std::move(chat_sink_);
  out->embed = std::move(embed_sink_);
}

void RoutedCall::StartInner(int index, CircuitBreaker::Permit permit, Outbox* out) {
  tried_[index] = true;
  current_ = index;
  permit_ = permit;
  running_ = true;
  out->launch = Launch{order_[index], ++serial_};
}

void RoutedCall::Fail(ProviderError error, bool inside_start, Outbox* out) {
  if (inside_start) {
    // Never call the sink from inside StartChat/StartEmbed.
    pending_error_ = std::move(error);
    ScheduleLocked(absl::Now(), &RoutedCall::DeliverPending);
    return;
  }
  done_ = true;
  out->error = std::move(error);
  out->chat = std::move(chat_sink_);
  out->embed = std::move(embed_sink_);
}

void RoutedCall::Flush(Outbox* out) {
  if (out->launch.has_value()) LaunchUnlocked(*out->launch);
  if (out->error.has_value()) {
    gate_.RunLast([&] {
      if (out->chat) out->chat->OnError(*out->error);
      if (out->embed) out->embed->OnError(*out->error);
    });
  }
}

void RoutedCall::LaunchUnlocked(const Launch& launch) {
  RoutedDeployment* d = launch.deployment;
  // Per-job options are for the provider they are named after (input.sim -> sim).
  bool pass_options = d->config.provider() == options_provider_;
  std::unique_ptr<LlmCall> handle;
  if (is_embed_) {
    EmbedRequest r = embed_;
    r.model = d->config.model();
    if (!pass_options) r.provider_options.Clear();
    auto sink = std::make_shared<InnerEmbedSink>(weak_from_this(), launch.serial);
    gate_.mu.Unlock();
    handle = d->provider->StartEmbed(r, std::move(sink));
    gate_.mu.Lock();
  } else {
    ChatRequest r = chat_;
    r.model = d->config.model();
    if (!pass_options) r.provider_options.Clear();
    auto sink = std::make_shared<InnerChatSink>(weak_from_this(), launch.serial);
    gate_.mu.Unlock();
    handle = d->provider->StartChat(r, std::move(sink));
    gate_.mu.Lock();
  }
  if (cancelled_ && launch.serial == serial_) {
    // Cancel() came while this call was starting, too early to reach it.
    gate_.mu.Unlock();
    handle->Cancel();
    gate_.mu.Lock();
  }
  // Inner calls may finish (and the next one start) before an earlier launch gets here.
  if (launch.serial > inner_serial_) {
    if (inner_) spent_.push_back(std::move(inner_));
    inner_ = std::move(handle);
    inner_serial_ = launch.serial;
  } else {
    spent_.push_back(std::move(handle));
  }
}

RoutedCallHandle::~RoutedCallHandle() {
  call_->Cancel();
  // Destroyed here, outside the call's lock.
  std::vector<std::unique_ptr<LlmCall>> handles = call_->TakeHandles();
  handles.clear();
}

}  // namespace aijobs::worker
