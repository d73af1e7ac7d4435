#include "workers/sim_provider.h"

#include <climits>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "workers/call_gate.h"

namespace aijobs::worker {
namespace {

constexpr const char* kVocabulary[] = {
    "the",     "a",       "model",  "answer", "token",  "stream",  "job",     "worker",
    "queue",   "durable", "fast",   "simple", "result", "context", "prompt",  "reply",
    "system",  "user",    "data",   "signal", "quiet",  "bright",  "river",   "stone",
    "cloud",   "light",   "green",  "blue",   "north",  "south",   "early",   "late",
    "and",     "of",      "to",     "in",     "with",   "for",     "on",      "by",
    "runs",    "writes",  "reads",  "sends",  "holds",  "brings",  "finds",   "keeps",
    "many",    "few",     "every",  "some",   "small",  "large",   "steady",  "careful",
    "morning", "evening", "garden", "harbor", "market", "window",  "journey", "letter"};
constexpr int kVocabularySize = sizeof(kVocabulary) / sizeof(kVocabulary[0]);

uint64_t Fnv1a(uint64_t hash, const std::string& text) {
  for (unsigned char c : text) {
    hash ^= c;
    hash *= 1099511628211ULL;
  }
  return hash;
}

// splitmix64: tiny, fast and good enough to pick words and vector components.
uint64_t NextRandom(uint64_t* state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

int CountWords(const std::vector<ChatMessage>& messages) {
  int words = 0;
  for (const ChatMessage& m : messages) {
    bool in_word = false;
    for (char c : m.content) {
      bool space = c == ' ' || c == '\n' || c == '\t' || c == '\r';
      if (!space && !in_word) ++words;
      in_word = !space;
    }
  }
  return words;
}

// Reads a non-negative number option; `integer` also requires a whole number.
absl::Status ReadNumber(const google::protobuf::Value& value, const std::string& key, bool integer,
                        double max, double* out) {
  if (value.kind_case() != google::protobuf::Value::kNumberValue) {
    return absl::InvalidArgumentError(absl::StrCat("input.sim.", key, " must be a number"));
  }
  double v = value.number_value();
  if (!(v >= 0 && v <= max) || (integer && v != std::floor(v))) {
    return absl::InvalidArgumentError(absl::StrCat("input.sim.", key, " must be ",
                                                   integer ? "an integer" : "a number",
                                                   " between 0 and ", max, ", got ", v));
  }
  *out = v;
  return absl::OkStatus();
}

// The state of one sim call, shared by its LlmCall handle and its pending timer step. Every
// callback runs on the timer thread through `gate_` (call_gate.h): with gate_.mu released,
// so a callback may cancel its own call, and Cancel() waits for one running elsewhere.
class SimCallState : public std::enable_shared_from_this<SimCallState> {
 public:
  SimCallState(TimerQueue* timers, SimOptions options, bool fail)
      : timers_(timers), options_(std::move(options)), fail_(fail) {}

  void StartChat(uint64_t seed, int total, int prompt_tokens, std::string model,
                 std::shared_ptr<ChatSink> sink) {
    absl::MutexLock lock(&gate_.mu);
    rng_ = seed;
    total_ = total;
    fail_at_ = std::min(options_.fail_after_tokens, total);
    usage_.prompt_tokens = prompt_tokens;
    model_ = std::move(model);
    chat_sink_ = std::move(sink);
    next_at_ = absl::Now() + options_.ttft;
    Schedule(next_at_, &SimCallState::ChatStep);
  }

  void StartEmbed(std::vector<std::string> texts, int prompt_tokens, std::string model,
                  std::shared_ptr<EmbedSink> sink) {
    absl::MutexLock lock(&gate_.mu);
    texts_ = std::move(texts);
    usage_.prompt_tokens = prompt_tokens;
    model_ = std::move(model);
    embed_sink_ = std::move(sink);
    Schedule(absl::Now() + options_.ttft, &SimCallState::EmbedStep);
  }

  // Reports `error` on the timer thread right away (never from inside Start*).
  void StartWithError(ProviderError error, std::shared_ptr<ChatSink> chat,
                      std::shared_ptr<EmbedSink> embed) {
    absl::MutexLock lock(&gate_.mu);
    early_error_ = std::move(error);
    chat_sink_ = std::move(chat);
    embed_sink_ = std::move(embed);
    Schedule(absl::Now(), &SimCallState::ErrorStep);
  }

  void Cancel() {
    Sinks released;  // destroyed after the lock: a sink's destructor may be anything
    absl::MutexLock lock(&gate_.mu);
    if (timer_ != 0) timers_->Cancel(timer_);
    timer_ = 0;
    released = TakeSinks();
    gate_.Close();
  }

 private:
  struct Sinks {
    std::shared_ptr<ChatSink> chat;
    std::shared_ptr<EmbedSink> embed;
  };

  void Schedule(absl::Time when, void (SimCallState::*step)())
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(gate_.mu) {
    timer_ = timers_->Schedule(when, [self = shared_from_this(), step] { ((*self).*step)(); });
  }

  ProviderError InjectedError() const ABSL_SHARED_LOCKS_REQUIRED(gate_.mu) {
    ProviderError e;
    e.code = "SIM_FAILURE";
    e.message = absl::StrCat("sim: injected failure after ", emitted_, " token(s)");
    e.retryable = options_.retryable;
    e.retry_after = options_.retry_after;
    return e;
  }

  void ChatStep() {
    Sinks sinks;
    std::shared_ptr<ChatSink> sink;  // may be the last reference once Cancel() ran
    absl::MutexLock lock(&gate_.mu);
    if (gate_.closed()) return;
    timer_ = 0;
    sink = chat_sink_;
    int budget = options_.tokens_per_s > 0 ? 1 : INT_MAX;
    for (;;) {
      if (fail_ && emitted_ >= fail_at_) {
        ProviderError error = InjectedError();
        sinks = TakeSinks();
        gate_.RunLast([&] { sink->OnError(error); });
        return;
      }
      if (!fail_ && emitted_ >= total_) {
        usage_.completion_tokens = emitted_;
        Usage usage = usage_;
        std::string model = model_;
        sinks = TakeSinks();
        gate_.RunLast([&] { sink->OnDone(usage, model); });
        return;
      }
      if (budget-- == 0) break;
      std::string token = kVocabulary[NextRandom(&rng_) % kVocabularySize];
      if (emitted_ > 0) token.insert(0, " ");
      ++emitted_;
      if (!gate_.Run([&] { sink->OnDelta(token); })) return;  // cancelled meanwhile
    }
    // Keep the average rate even when the timer thread runs late.
    next_at_ = std::max(next_at_ + absl::Seconds(1) / options_.tokens_per_s,
                        absl::Now() - absl::Milliseconds(100));
    Schedule(next_at_, &SimCallState::ChatStep);
  }

  void EmbedStep() {
    Sinks sinks;
    absl::MutexLock lock(&gate_.mu);
    if (gate_.closed()) return;
    timer_ = 0;
    sinks = TakeSinks();
    EmbedSink* sink = sinks.embed.get();
    if (fail_) {
      ProviderError error = InjectedError();
      gate_.RunLast([&] { sink->OnError(error); });
      return;
    }
    std::vector<std::vector<float>> vectors;
    vectors.reserve(texts_.size());
    for (const std::string& t : texts_) vectors.push_back(SimEmbedding(t, options_.dims));
    Usage usage = usage_;
    std::string model = model_;
    gate_.RunLast([&] { sink->OnDone(std::move(vectors), usage, model); });
  }

  void ErrorStep() {
    Sinks sinks;
    absl::MutexLock lock(&gate_.mu);
    if (gate_.closed()) return;
    timer_ = 0;
    sinks = TakeSinks();
    ProviderError error = early_error_;
    gate_.RunLast([&] {
      if (sinks.chat) sinks.chat->OnError(error);
      if (sinks.embed) sinks.embed->OnError(error);
    });
  }

  // Releases the sinks before the last callback, so the call state no longer keeps the job
  // alive; the caller lets them go once gate_.mu is unlocked.
  Sinks TakeSinks() ABSL_EXCLUSIVE_LOCKS_REQUIRED(gate_.mu) {
    return Sinks{std::move(chat_sink_), std::move(embed_sink_)};
  }

  TimerQueue* const timers_;
  const SimOptions options_;
  const bool fail_;
  CallGate gate_;
  TimerQueue::TimerId timer_ ABSL_GUARDED_BY(gate_.mu) = 0;
  uint64_t rng_ ABSL_GUARDED_BY(gate_.mu) = 0;
  int total_ ABSL_GUARDED_BY(gate_.mu) = 0;
  int emitted_ ABSL_GUARDED_BY(gate_.mu) = 0;
  int fail_at_ ABSL_GUARDED_BY(gate_.mu) = 0;
  absl::Time next_at_ ABSL_GUARDED_BY(gate_.mu);
  Usage usage_ ABSL_GUARDED_BY(gate_.mu);
  std::string model_ ABSL_GUARDED_BY(gate_.mu);
  std::vector<std::string> texts_ ABSL_GUARDED_BY(gate_.mu);
  ProviderError early_error_ ABSL_GUARDED_BY(gate_.mu);
  std::shared_ptr<ChatSink> chat_sink_ ABSL_GUARDED_BY(gate_.mu);
  std::shared_ptr<EmbedSink> embed_sink_ ABSL_GUARDED_BY(gate_.mu);
};

class SimCall : public LlmCall {
 public:
  explicit SimCall(std::shared_ptr<SimCallState> state) : state_(std::move(state)) {}
  ~SimCall() override { state_->Cancel(); }
  void Cancel() override { state_->Cancel(); }

 private:
  std::shared_ptr<SimCallState> state_;
};

ProviderError InvalidOptions(const absl::Status& status) {
  ProviderError e;
  e.code = "INVALID_INPUT";
  e.message = std::string(status.message());
  e.retryable = false;
  return e;
}

}  // namespace

absl::StatusOr<SimOptions> ApplySimOverrides(const SimOptions& defaults,
                                             const google::protobuf::Struct& overrides) {
  SimOptions o = defaults;
  for (const auto& [key, value] : overrides.fields()) {
    double v = 0;
    absl::Status s;
    if (key == "ttft_ms") {
      s = ReadNumber(value, key, false, 3600e3, &v);
      o.ttft = absl::Milliseconds(v);
    } else if (key == "tokens_per_s") {
      s = ReadNumber(value, key, false, 1e9, &v);
      o.tokens_per_s = v;
    } else if (key == "tokens") {
      s = ReadNumber(value, key, true, 1e7, &v);
      o.tokens = static_cast<int>(v);
    } else if (key == "error_rate") {
      s = ReadNumber(value, key, false, 1, &v);
      o.error_rate = v;
    } else if (key == "retryable") {
      if (value.kind_case() != google::protobuf::Value::kBoolValue) {
        s = absl::InvalidArgumentError("input.sim.retryable must be true or false");
      }
      o.retryable = value.bool_value();
    } else if (key == "fail_attempts") {
      s = ReadNumber(value, key, true, 1e6, &v);
      o.fail_attempts = static_cast<int>(v);
    } else if (key == "fail_after_tokens") {
      s = ReadNumber(value, key, true, 1e7, &v);
      o.fail_after_tokens = static_cast<int>(v);
    } else if (key == "retry_after_ms") {
      s = ReadNumber(value, key, false, 86400e3, &v);
      o.retry_after = absl::Milliseconds(v);
    } else if (key == "dims") {
      s = ReadNumber(value, key, true, 65536, &v);
      o.dims = static_cast<int>(v);
      if (s.ok() && o.dims == 0) s = absl::InvalidArgumentError("input.sim.dims must be >= 1");
    } else {
      s = absl::InvalidArgumentError(absl::StrCat(
          "input.sim.", key,
          " is not a sim option (known: ttft_ms, tokens_per_s, tokens, error_rate, retryable, "
          "fail_attempts, fail_after_tokens, retry_after_ms, dims)"));
    }
    if (!s.ok()) return s;
  }
  return o;
}

uint64_t SimPromptSeed(const std::vector<ChatMessage>& messages) {
  uint64_t h = 14695981039346656037ULL;
  for (const ChatMessage& m : messages) {
    h = Fnv1a(h, m.role);
    h = Fnv1a(h, std::string(1, '\0'));
    h = Fnv1a(h, m.content);
    h = Fnv1a(h, std::string(1, '\x1e'));
  }
  return h;
}

std::vector<std::string> SimTokens(uint64_t seed, int count) {
  std::vector<std::string> tokens;
  tokens.reserve(count);
  uint64_t rng = seed;
  for (int i = 0; i < count; ++i) {
    std::string t = kVocabulary[NextRandom(&rng) % kVocabularySize];
    if (i > 0) t.insert(0, " ");
    tokens.push_back(std::move(t));
  }
  return tokens;
}

std::vector<float> SimEmbedding(const std::string& text, int dims) {
  uint64_t rng = Fnv1a(14695981039346656037ULL, text);
  std::vector<float> v(dims);
  double norm = 0;
  for (int i = 0; i < dims; ++i) {
    // Uniform in [-1, 1); all-zero is practically impossible but guarded below.
    double x = static_cast<double>(NextRandom(&rng) >> 11) / static_cast<double>(1ULL << 53);
    v[i] = static_cast<float>(2 * x - 1);
    norm += static_cast<double>(v[i]) * v[i];
  }
  norm = std::sqrt(norm);
  for (float& x : v) x = norm > 0 ? static_cast<float>(x / norm) : 0.0f;
  if (norm == 0 && dims > 0) v[0] = 1;
  return v;
}

SimProvider::SimProvider(SimOptions defaults) : defaults_(std::move(defaults)) {}

SimProvider::~SimProvider() = default;

bool SimProvider::ShouldFail(const SimOptions& options, int attempt) {
  if (options.fail_attempts > 0) return attempt <= options.fail_attempts;
  if (options.error_rate <= 0) return false;
  if (options.error_rate >= 1) return true;
  absl::MutexLock lock(&rng_mu_);
  return absl::Bernoulli(rng_, options.error_rate);
}

std::unique_ptr<LlmCall> SimProvider::StartChat(const ChatRequest& request,
                                                std::shared_ptr<ChatSink> sink) {
  absl::StatusOr<SimOptions> options = ApplySimOverrides(defaults_, request.provider_options);
  if (!options.ok()) {
    auto state = std::make_shared<SimCallState>(&timers_, defaults_, false);
    state->StartWithError(InvalidOptions(options.status()), std::move(sink), nullptr);
    return std::make_unique<SimCall>(std::move(state));
  }
  int total = options->tokens;
  if (request.max_tokens > 0) total = std::min(total, request.max_tokens);
  bool fail = ShouldFail(*options, request.attempt);
  auto state = std::make_shared<SimCallState>(&timers_, *options, fail);
  state->StartChat(SimPromptSeed(request.messages), total, CountWords(request.messages),
                   request.model.empty() ? "sim-1" : request.model, std::move(sink));
  return std::make_unique<SimCall>(std::move(state));
}

std::unique_ptr<LlmCall> SimProvider::StartEmbed(const EmbedRequest& request,
                                                 std::shared_ptr<EmbedSink> sink) {
  absl::StatusOr<SimOptions> options = ApplySimOverrides(defaults_, request.provider_options);
  if (!options.ok()) {
    auto state = std::make_shared<SimCallState>(&timers_, defaults_, false);
    state->StartWithError(InvalidOptions(options.status()), nullptr, std::move(sink));
    return std::make_unique<SimCall>(std::move(state));
  }
  bool fail = ShouldFail(*options, request.attempt);
  auto state = std::make_shared<SimCallState>(&timers_, *options, fail);
  std::vector<ChatMessage> as_messages;
  for (const std::string& t : request.texts) as_messages.push_back({"", t});
  state->StartEmbed(request.texts, CountWords(as_messages),
                    request.model.empty() ? "sim-embed-1" : request.model, std::move(sink));
  return std::make_unique<SimCall>(std::move(state));
}

}  // namespace aijobs::worker
