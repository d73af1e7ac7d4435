#include "workers/openai/openai_provider.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/type.pb.h>
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/type_resolver.h>
#include <google/protobuf/util/type_resolver_util.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/random/random.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "aijobs/v1/openai.pb.h"
#include "common/time_util.h"
#include "common/sse_parser.h"

namespace aijobs::openai {
namespace {

using worker::ChatSink;
using worker::EmbedSink;
using worker::ProviderError;
using worker::RateLimitHeaders;

constexpr size_t kMaxBufferedBody = 64 << 20;  // non-streamed bodies (embeddings, errors)
constexpr absl::Duration kMaxHonouredHint = absl::Seconds(60);

google::protobuf::util::JsonParseOptions ParseOptions() {
  google::protobuf::util::JsonParseOptions o;
  o.ignore_unknown_fields = true;
  return o;
}

google::protobuf::util::JsonPrintOptions PrintOptions() {
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  return o;
}

// protobuf's JsonStringToMessage resolves the target's types anew on every call: the
// generated pool's TypeResolver converts each Descriptor it is asked for into a
// google.protobuf.Type (a few dozen string copies per message type), and a stream parses one
// chunk per token — 25,000 chunks/s at 500 streams. This resolver converts each type once and
// hands out copies of the cached result; chunks are then parsed exactly as JsonStringToMessage
// does it (JsonToBinaryString, then ParseFromString), with the same options.
class CachingTypeResolver : public google::protobuf::util::TypeResolver {
 public:
  CachingTypeResolver()
      : base_(google::protobuf::util::NewTypeResolverForDescriptorPool(
            "type.googleapis.com", google::protobuf::DescriptorPool::generated_pool())) {}

  google::protobuf::util::Status ResolveMessageType(const std::string& type_url,
                                                    google::protobuf::Type* type) override {
    {
      absl::MutexLock lock(&mu_);
      if (auto it = types_.find(type_url); it != types_.end()) {
        *type = it->second;
        return google::protobuf::util::Status();
      }
    }
    google::protobuf::util::Status s = base_->ResolveMessageType(type_url, type);
    if (s.ok()) {
      absl::MutexLock lock(&mu_);
      types_.emplace(type_url, *type);
    }
    return s;
  }

  google::protobuf::util::Status ResolveEnumType(const std::string& type_url,
                                                 google::protobuf::Enum* enum_type) override {
    return base_->ResolveEnumType(type_url, enum_type);
  }

 private:
  const std::unique_ptr<google::protobuf::util::TypeResolver> base_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, google::protobuf::Type> types_ ABSL_GUARDED_BY(mu_);
};

google::protobuf::util::TypeResolver* ChunkTypeResolver() {
  static CachingTypeResolver* const resolver = new CachingTypeResolver();
  return resolver;
}

const std::string& ChunkTypeUrl() {
  static const std::string* const url = new std::string(
      absl::StrCat("type.googleapis.com/", ChatCompletionChunk::descriptor()->full_name()));
  return *url;
}

ProviderError MakeError(const char* code, std::string message, bool retryable) {
  ProviderError e;
  e.code = code;
  e.message = std::move(message);
  e.retryable = retryable;
  return e;
}

std::string ValueText(const google::protobuf::Value& v) {
  switch (v.kind_case()) {
    case google::protobuf::Value::kStringValue:
      return v.string_value();
    case google::protobuf::Value::kNumberValue:
      return absl::StrCat(v.number_value());
    default:
      return "";
  }
}

// Classifies an {"error": {...}} object sent inside a 200 stream.
ProviderError ErrorFromChunk(const ErrorBody& body, const std::string& deployment) {
  std::string type = body.type();
  std::string code = ValueText(body.code());
  std::string message = absl::StrCat("deployment ", deployment, ": error in stream (",
                                     type.empty() ? code : type, "): ", body.message());
  if (absl::StartsWith(type, "rate_limit") || absl::StartsWith(code, "rate_limit")) {
    return MakeError(kRateLimited, std::move(message), true);
  }
  if (type == "invalid_request_error")
    return MakeError(kProviderRejected, std::move(message), false);
  return MakeError(kProviderError, std::move(message), true);
}

// Classifies a non-2xx status. Sets *in_call_retry to what the OpenAI SDKs would do.
ProviderError ErrorFromStatus(long status, const std::string& body, const std::string& deployment,
                              bool* in_call_retry) {
  ErrorResponse parsed;
  std::string detail;
  if (!body.empty() &&
      google::protobuf::util::JsonStringToMessage(body, &parsed, ParseOptions()).ok() &&
      parsed.has_error()) {
    detail = parsed.error().message();
    if (std::string code = ValueText(parsed.error().code()); !code.empty()) {
      absl::StrAppend(&detail, " (", code, ")");
    }
  } else {
    detail = body.substr(0, 300);
  }
  std::string message = absl::StrCat("deployment ", deployment, ": HTTP ", status,
                                     detail.empty() ? "" : ": ", detail);
  *in_call_retry = status == 408 || status == 409 || status == 429 || status >= 500;
  if (status == 429) return MakeError(kRateLimited, std::move(message), true);
  if (status == 408) return MakeError(kTimeout, std::move(message), true);
  if (status == 502 || status == 503 || status == 504) {
    return MakeError(kProviderUnavailable, std::move(message), true);
  }
  if (status >= 500 || status == 409) return MakeError(kProviderError, std::move(message), true);
  return MakeError(kProviderRejected, std::move(message), false);
}

ProviderError ErrorFromCurl(const TransferResult& r, const std::string& deployment) {
  std::string message = absl::StrCat("deployment ", deployment, ": ", r.error);
  if (r.code == CURLE_OPERATION_TIMEDOUT) return MakeError(kTimeout, std::move(message), true);
  if (r.code == CURLE_URL_MALFORMAT || r.code == CURLE_UNSUPPORTED_PROTOCOL) {
    return MakeError(kProviderError, std::move(message), false);
  }
  if (r.code == CURLE_PARTIAL_FILE || r.code == CURLE_RECV_ERROR) {
    // The connection broke during the response: for a stream, the stream was cut.
    return MakeError(kProviderError, absl::StrCat(message, " (response cut)"), true);
  }
  return MakeError(kProviderUnavailable, std::move(message), true);
}

absl::Duration Backoff(const OpenAiSettings& s, int retries_done) {
  thread_local absl::InsecureBitGen rng;
  absl::Duration d = s.initial_backoff;
  for (int i = 0; i < retries_done && d < s.max_backoff; ++i) d *= 2;
  d = std::min(d, s.max_backoff);
  return d * (1 - 0.25 * absl::Uniform(rng, 0.0, 1.0));
}

// The state of one call (all its HTTP attempts), shared by the LlmCall handle, the loop's
// transfer handler and the retry timer. `mu_` is held while a sink callback runs, which is
// what makes Cancel() wait for a running callback; it is recursive so a callback may cancel
// its own call.
class CallState : public std::enable_shared_from_this<CallState> {
 public:
  CallState(std::shared_ptr<const OpenAiSettings> settings, CurlLoop* loop,
            worker::RateLimitObserver* observer, HttpRequest request)
      : settings_(std::move(settings)),
        loop_(loop),
        observer_(observer),
        request_(std::move(request)) {}

  void StartChat(std::shared_ptr<ChatSink> sink) {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    chat_sink_ = std::move(sink);
    StartAttempt();
  }

  void StartEmbed(std::shared_ptr<EmbedSink> sink, size_t texts) {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    embed_sink_ = std::move(sink);
    embed_texts_ = texts;
    StartAttempt();
  }

  void Cancel() {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    if (done_) return;
    done_ = true;
    StopAttempt();
    chat_sink_.reset();
    embed_sink_.reset();
  }

  // Transfer events, forwarded by AttemptHandler; stale attempts are ignored.
  void OnStatus(int attempt, long status) {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    if (!Current(attempt)) return;
    status_ = status;
    retry_after_.reset();
    retry_after_ms_.reset();
    should_retry_.reset();
    content_type_.clear();
    rate_ = RateLimitHeaders();
    has_rate_ = false;
  }

  void OnHeader(int attempt, absl::string_view name, absl::string_view value) {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    if (!Current(attempt)) return;
    std::string n = absl::AsciiStrToLower(name);
    std::string v(value.data(), value.size());
    if (n == "retry-after") {
      retry_after_ = v;
    } else if (n == "retry-after-ms") {
      retry_after_ms_ = v;
    } else if (n == "x-should-retry") {
      if (v == "true") should_retry_ = true;
      if (v == "false") should_retry_ = false;
    } else if (n == "content-type") {
      content_type_ = absl::AsciiStrToLower(v);
    } else if (absl::StartsWith(n, "x-ratelimit-")) {
      absl::string_view key = absl::string_view(n).substr(12);
      double number = 0;
      bool is_number = absl::SimpleAtod(v, &number);
      if (key == "limit-requests" && is_number) {
        rate_.limit_requests = number;
      } else if (key == "limit-tokens" && is_number) {
        rate_.limit_tokens = number;
      } else if (key == "remaining-requests" && is_number) {
        rate_.remaining_requests = number;
      } else if (key == "remaining-tokens" && is_number) {
        rate_.remaining_tokens = number;
      } else if (key == "reset-requests") {
        rate_.reset_requests = ParseRateLimitDuration(v);
      } else if (key == "reset-tokens") {
        rate_.reset_tokens = ParseRateLimitDuration(v);
      } else {
        return;
      }
      has_rate_ = true;
    }
  }

  void OnHeadersComplete(int attempt, long status) {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    if (!Current(attempt)) return;
    status_ = status;
    streaming_ = chat_sink_ != nullptr && status >= 200 && status < 300 &&
                 absl::StartsWith(content_type_, "text/event-stream");
    if (has_rate_ && observer_ != nullptr) observer_->OnRateLimitHeaders(rate_);
  }

  bool OnData(int attempt, absl::string_view bytes) {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    if (!Current(attempt)) return false;
    if (!streaming_) {
      if (body_.size() + bytes.size() > kMaxBufferedBody) {
        Fail(MakeError(kProviderError,
                       absl::StrCat("deployment ", settings_->name, ": response over ",
                                    kMaxBufferedBody, " bytes"),
                       true),
             true);
        return false;
      }
      body_.append(bytes.data(), bytes.size());
      return true;
    }
    return parser_.Feed(bytes, [&](const SseEvent& e) { return OnEvent(e); });
  }

  void OnComplete(int attempt, const TransferResult& result) {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    if (!Current(attempt)) return;
    transfer_ = 0;
    if (result.code != CURLE_OK) {
      ProviderError e = ErrorFromCurl(result, settings_->name);
      if (streaming_ && result.code != CURLE_OPERATION_TIMEDOUT) {
        e = MakeError(kProviderError,
                      absl::StrCat("deployment ", settings_->name, ": stream cut before [DONE] (",
                                   result.error, ")"),
                      true);
      }
      bool retry = e.retryable;
      Fail(std::move(e), retry);
      return;
    }
    if (status_ < 200 || status_ >= 300) {
      bool in_call_retry = false;
      ProviderError e = ErrorFromStatus(status_, body_, settings_->name, &in_call_retry);
      Fail(std::move(e), in_call_retry);
      return;
    }
    if (embed_sink_ != nullptr) {
      FinishEmbed();
    } else if (streaming_) {
      // A last event without its blank line still counts.
      if (parser_.has_partial_event() &&
          !parser_.Feed("\n\n", [&](const SseEvent& e) { return OnEvent(e); })) {
        return;
      }
      if (done_ || !Current(attempt)) return;
      if (got_done_ || saw_finish_) {
        Succeed();
      } else {
        Fail(MakeError(kProviderError,
                       absl::StrCat("deployment ", settings_->name, ": stream ended before [DONE]"),
                       true),
             true);
      }
    } else {
      FinishNonStreamedChat();
    }
  }

 private:
  bool Current(int attempt) const { return !done_ && attempt == attempt_; }

  void StartAttempt();

  // Stops the running transfer or pending retry timer.
  void StopAttempt() {
    if (transfer_ != 0) loop_->Cancel(transfer_);
    transfer_ = 0;
    if (timer_ != 0) loop_->CancelTimer(timer_);
    timer_ = 0;
  }

  bool OnEvent(const SseEvent& e) {
    if (done_) return false;
    absl::string_view data = absl::StripAsciiWhitespace(e.data);
    if (data == "[DONE]") {
      got_done_ = true;
      return true;
    }
    if (data.empty()) return true;
    binary_.clear();  // keeps its capacity: no allocation per chunk once warm
    auto status = google::protobuf::util::JsonToBinaryString(
        ChunkTypeResolver(), ChunkTypeUrl(), google::protobuf::StringPiece(data.data(), data.size()),
        &binary_, ParseOptions());
    if (status.ok() && !chunk_.ParseFromString(binary_)) {
      status = google::protobuf::util::Status(google::protobuf::util::StatusCode::kInvalidArgument,
                                              "JSON transcoder produced invalid protobuf output.");
    }
    if (!status.ok()) {
      Fail(MakeError(kProviderError,
                     absl::StrCat("deployment ", settings_->name, ": malformed stream chunk (",
                                  status.message().as_string(), ")"),
                     true),
           true);
      return false;
    }
    if (chunk_.has_error()) {
      ProviderError err = ErrorFromChunk(chunk_.error(), settings_->name);
      bool retry = err.retryable;
      Fail(std::move(err), retry);
      return false;
    }
    if (!chunk_.model().empty()) model_ = chunk_.model();
    if (chunk_.has_usage()) {
      usage_.prompt_tokens = chunk_.usage().prompt_tokens();
      usage_.completion_tokens = chunk_.usage().completion_tokens();
      has_usage_ = true;
    }
    for (const ChunkChoice& c : chunk_.choices()) {
      if (c.index() != 0) continue;  // aijobs asks for one choice
      if (!c.finish_reason().empty()) saw_finish_ = true;
      if (!c.delta().content().empty()) {
        delivered_ = true;
        ++content_chunks_;
        std::shared_ptr<ChatSink> sink = chat_sink_;  // survives Cancel() from the callback
        sink->OnDelta(c.delta().content());
        if (done_) return false;
      }
    }
    return true;
  }

  void FinishNonStreamedChat() {
    ChatCompletion completion;
    auto status = google::protobuf::util::JsonStringToMessage(body_, &completion, ParseOptions());
    if (!status.ok() || completion.choices().empty()) {
      Fail(MakeError(
               kProviderError,
               absl::StrCat("deployment ", settings_->name, ": malformed chat completion response"),
               true),
           true);
      return;
    }
    model_ = completion.model();
    if (completion.has_usage()) {
      usage_.prompt_tokens = completion.usage().prompt_tokens();
      usage_.completion_tokens = completion.usage().completion_tokens();
      has_usage_ = true;
    }
    const std::string& text = completion.choices(0).message().content();
    if (!text.empty()) {
      delivered_ = true;
      ++content_chunks_;
      std::shared_ptr<ChatSink> sink = chat_sink_;
      sink->OnDelta(text);
      if (done_) return;
    }
    Succeed();
  }

  void Succeed() {
    std::shared_ptr<ChatSink> sink = std::move(chat_sink_);
    Finish();
    if (!has_usage_) usage_.completion_tokens = content_chunks_;
    sink->OnDone(usage_, model_.empty() ? settings_->model : model_);
  }

  void FinishEmbed() {
    EmbeddingResponse response;
    auto status = google::protobuf::util::JsonStringToMessage(body_, &response, ParseOptions());
    std::vector<std::vector<float>> vectors(embed_texts_);
    std::vector<bool> seen(embed_texts_, false);
    bool ok = status.ok() && static_cast<size_t>(response.data_size()) == embed_texts_;
    if (ok) {
      for (const Embedding& e : response.data()) {
        if (e.index() < 0 || static_cast<size_t>(e.index()) >= embed_texts_ || seen[e.index()]) {
          ok = false;
          break;
        }
        seen[e.index()] = true;
        vectors[e.index()].assign(e.embedding().begin(), e.embedding().end());
      }
    }
    if (!ok) {
      Fail(MakeError(kProviderError,
                     absl::StrCat("deployment ", settings_->name,
                                  ": malformed embeddings "
                                  "response (expected ",
                                  embed_texts_, " vectors)"),
                     true),
           true);
      return;
    }
    worker::Usage usage;
    usage.prompt_tokens = response.usage().prompt_tokens();
    std::shared_ptr<EmbedSink> sink = std::move(embed_sink_);
    Finish();
    sink->OnDone(std::move(vectors), usage,
                 response.model().empty() ? settings_->model : response.model());
  }

  // Ends the current attempt with `error`: retries inside the call when `retry` (the
  // classification), as overridden by x-should-retry, allows it and no output has streamed;
  // otherwise reports the error.
  void Fail(ProviderError error, bool retry) {
    if (done_) return;
    StopAttempt();
    if (should_retry_.has_value()) retry = *should_retry_;
    std::optional<absl::Duration> hint = ParseRetryHint(retry_after_ms_, retry_after_, absl::Now());
    if (retry && !delivered_ && retries_ < settings_->max_retries) {
      absl::Duration wait =
          hint.has_value() && *hint <= kMaxHonouredHint ? *hint : Backoff(*settings_, retries_);
      absl::Time at = absl::Now() + wait;
      if (at < request_.deadline) {
        ++retries_;
        int next = ++attempt_;  // makes the old transfer's late events stale
        timer_ = loop_->RunAt(at, [self = shared_from_this(), next] { self->Retry(next); });
        return;
      }
    }
    if (hint.has_value()) error.retry_after = *hint;
    if (retries_ > 0) absl::StrAppend(&error.message, " (after ", retries_ + 1, " requests)");
    std::shared_ptr<ChatSink> chat = std::move(chat_sink_);
    std::shared_ptr<EmbedSink> embed = std::move(embed_sink_);
    Finish();
    if (chat) chat->OnError(error);
    if (embed) embed->OnError(error);
  }

  void Retry(int attempt) {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    if (!Current(attempt)) return;
    timer_ = 0;
    StartAttempt();
  }

  void Finish() {
    done_ = true;
    StopAttempt();
  }

  const std::shared_ptr<const OpenAiSettings> settings_;
  CurlLoop* const loop_;
  worker::RateLimitObserver* const observer_;
  const HttpRequest request_;  // deadline = the call's deadline

  std::recursive_mutex mu_;
  bool done_ = false;
  std::shared_ptr<ChatSink> chat_sink_;
  std::shared_ptr<EmbedSink> embed_sink_;
  size_t embed_texts_ = 0;
  int attempt_ = 0;  // HTTP requests started
  int retries_ = 0;
  bool delivered_ = false;
  CurlLoop::TransferId transfer_ = 0;
  CurlLoop::TimerId timer_ = 0;

  // Per attempt.
  long status_ = 0;
  bool streaming_ = false;
  std::string content_type_;
  std::optional<std::string> retry_after_;
  std::optional<std::string> retry_after_ms_;
  std::optional<bool> should_retry_;
  RateLimitHeaders rate_;
  bool has_rate_ = false;
  std::string body_;
  SseParser parser_;
  bool got_done_ = false;
  bool saw_finish_ = false;
  ChatCompletionChunk chunk_;  // reused: its strings and choices keep their capacity
  std::string binary_;         // the chunk in protobuf wire format, reused

  // Across attempts (only the last attempt can have produced them).
  worker::Usage usage_;
  bool has_usage_ = false;
  int content_chunks_ = 0;
  std::string model_;
};

class AttemptHandler : public TransferHandler {
 public:
  AttemptHandler(std::shared_ptr<CallState> state, int attempt)
      : state_(std::move(state)), attempt_(attempt) {}
  void OnStatus(long status) override { state_->OnStatus(attempt_, status); }
  void OnHeader(absl::string_view name, absl::string_view value) override {
    state_->OnHeader(attempt_, name, value);
  }
  void OnHeadersComplete(long status) override { state_->OnHeadersComplete(attempt_, status); }
  bool OnData(absl::string_view bytes) override { return state_->OnData(attempt_, bytes); }
  void OnComplete(const TransferResult& result) override { state_->OnComplete(attempt_, result); }

 private:
  const std::shared_ptr<CallState> state_;
  const int attempt_;
};

void CallState::StartAttempt() {
  if (attempt_ == 0) attempt_ = 1;
  status_ = 0;
  streaming_ = false;
  content_type_.clear();
  retry_after_.reset();
  retry_after_ms_.reset();
  should_retry_.reset();
  has_rate_ = false;
  body_.clear();
  parser_ = SseParser();
  got_done_ = false;
  saw_finish_ = false;
  transfer_ =
      loop_->Start(request_, std::make_shared<AttemptHandler>(shared_from_this(), attempt_));
}

class OpenAiCall : public worker::LlmCall {
 public:
  explicit OpenAiCall(std::shared_ptr<CallState> state) : state_(std::move(state)) {}
  ~OpenAiCall() override { state_->Cancel(); }
  void Cancel() override { state_->Cancel(); }

 private:
  std::shared_ptr<CallState> state_;
};

HttpRequest BaseRequest(const OpenAiSettings& s, absl::string_view path, absl::Time deadline,
                        bool stream) {
  HttpRequest r;
  r.url = absl::StrCat(s.base_url, path);
  r.method = "POST";
  r.headers.push_back("Content-Type: application/json");
  r.headers.push_back(stream ? "Accept: text/event-stream" : "Accept: application/json");
  r.headers.push_back("User-Agent: aijobs-worker");
  if (!s.api_key.empty()) r.headers.push_back(absl::StrCat("Authorization: Bearer ", s.api_key));
  for (const std::string& h : s.headers) r.headers.push_back(h);
  r.connect_timeout = s.connect_timeout;
  r.first_byte_timeout = s.first_byte_timeout;
  r.idle_timeout = s.idle_timeout;
  r.deadline = std::min(deadline, absl::Now() + s.total_timeout);
  return r;
}

absl::Status DurationField(const google::protobuf::Duration& d, bool present,
                           const std::string& where, absl::Duration* out) {
  if (!present) return absl::OkStatus();
  absl::Duration v = FromProtoDuration(d);
  if (v <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, " must be positive, got ", absl::FormatDuration(v)));
  }
  *out = v;
  return absl::OkStatus();
}

}  // namespace

std::optional<absl::Duration> ParseRateLimitDuration(absl::string_view value) {
  absl::string_view v = absl::StripAsciiWhitespace(value);
  absl::Duration d;
  if (absl::ParseDuration(v, &d) && d >= absl::ZeroDuration()) return d;
  double seconds = 0;
  if (absl::SimpleAtod(v, &seconds) && seconds >= 0) return absl::Seconds(seconds);
  return std::nullopt;
}

std::optional<absl::Duration> ParseRetryHint(const std::optional<std::string>& retry_after_ms,
                                             const std::optional<std::string>& retry_after,
                                             absl::Time now) {
  double number = 0;
  if (retry_after_ms.has_value() &&
      absl::SimpleAtod(absl::StripAsciiWhitespace(*retry_after_ms), &number) && number > 0) {
    return absl::Milliseconds(number);
  }
  if (!retry_after.has_value()) return std::nullopt;
  absl::string_view v = absl::StripAsciiWhitespace(*retry_after);
  if (absl::SimpleAtod(v, &number)) {
    if (number > 0) return absl::Seconds(number);
    return std::nullopt;
  }
  time_t when = curl_getdate(std::string(v).c_str(), nullptr);
  if (when == -1) return std::nullopt;
  absl::Duration d = absl::FromTimeT(when) - now;
  if (d <= absl::ZeroDuration()) return std::nullopt;
  return d;
}

absl::StatusOr<OpenAiSettings> ResolveSettings(const aijobs::v1::Deployment& config) {
  const std::string where = absl::StrCat("deployment \"", config.name(), "\": ");
  OpenAiSettings s;
  s.name = config.name();
  if (!config.provider().empty() && config.provider() != "openai") {
    return absl::InvalidArgumentError(
        absl::StrCat(where, "provider is \"", config.provider(), "\", not \"openai\""));
  }
  s.base_url = config.base_url();
  while (!s.base_url.empty() && s.base_url.back() == '/') s.base_url.pop_back();
  if (!absl::StartsWith(s.base_url, "http://") && !absl::StartsWith(s.base_url, "https://")) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, "base_url must start with http:// or https://, got \"", config.base_url(), "\""));
  }
  s.model = config.model();
  if (!config.api_key_env().empty() && !config.api_key_file().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, "set only one of api_key_env and api_key_file"));
  }
  if (!config.api_key_env().empty()) {
    const char* key = std::getenv(config.api_key_env().c_str());
    if (key == nullptr || *key == '\0') {
      return absl::InvalidArgumentError(absl::StrCat(
          where, "api_key_env names ", config.api_key_env(), ", which is not set or empty"));
    }
    s.api_key = key;
  } else if (!config.api_key_file().empty()) {
    std::ifstream in(config.api_key_file());
    std::string line;
    if (!in || !std::getline(in, line)) {
      return absl::InvalidArgumentError(absl::StrCat(where, "api_key_file ", config.api_key_file(),
                                                     " cannot be read or is empty"));
    }
    s.api_key = std::string(absl::StripAsciiWhitespace(line));
    if (s.api_key.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "api_key_file ", config.api_key_file(), " has an empty first line"));
    }
  }
  for (const auto& [name, value] : config.headers()) {
    if (name.empty() || name.find_first_of(":\r\n ") != std::string::npos ||
        value.find_first_of("\r\n") != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "headers[\"", name, "\"] is not a valid HTTP header"));
    }
    s.headers.push_back(absl::StrCat(name, ": ", value));
  }
  const v1::Timeouts& t = config.timeouts();
  absl::Status st;
  if (!(st = DurationField(t.connect(), t.has_connect(), where + "timeouts.connect",
                           &s.connect_timeout))
           .ok() ||
      !(st = DurationField(t.first_byte(), t.has_first_byte(), where + "timeouts.first_byte",
                           &s.first_byte_timeout))
           .ok() ||
      !(st = DurationField(t.idle(), t.has_idle(), where + "timeouts.idle", &s.idle_timeout))
           .ok() ||
      !(st = DurationField(t.total(), t.has_total(), where + "timeouts.total", &s.total_timeout))
           .ok()) {
    return st;
  }
  const v1::Retry& r = config.retry();
  if (r.has_max_retries()) {
    if (r.max_retries() < 0 || r.max_retries() > 20) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "retry.max_retries must be between 0 and 20, got ", r.max_retries()));
    }
    s.max_retries = r.max_retries();
  }
  if (!(st = DurationField(r.initial_backoff(), r.has_initial_backoff(),
                           where + "retry.initial_backoff", &s.initial_backoff))
           .ok() ||
      !(st = DurationField(r.max_backoff(), r.has_max_backoff(), where + "retry.max_backoff",
                           &s.max_backoff))
           .ok()) {
    return st;
  }
  return s;
}

absl::StatusOr<std::unique_ptr<OpenAiProvider>> OpenAiProvider::Create(
    const aijobs::v1::Deployment& config, CurlLoop* loop, worker::RateLimitObserver* observer) {
  absl::StatusOr<OpenAiSettings> settings = ResolveSettings(config);
  if (!settings.ok()) return settings.status();
  return std::make_unique<OpenAiProvider>(*std::move(settings), loop, observer);
}

OpenAiProvider::OpenAiProvider(OpenAiSettings settings, CurlLoop* loop,
                               worker::RateLimitObserver* observer)
    : settings_(std::make_shared<const OpenAiSettings>(std::move(settings))),
      loop_(loop),
      observer_(observer) {}

std::unique_ptr<worker::LlmCall> OpenAiProvider::StartChat(const worker::ChatRequest& request,
                                                           std::shared_ptr<ChatSink> sink) {
  ChatCompletionRequest body;
  body.set_model(settings_->model.empty() ? request.model : settings_->model);
  for (const worker::ChatMessage& m : request.messages) {
    ChatMessage* out = body.add_messages();
    out->set_role(m.role);
    out->set_content(m.content);
  }
  body.set_stream(true);
  body.mutable_stream_options()->set_include_usage(true);
  if (request.max_tokens > 0) body.set_max_tokens(request.max_tokens);
  if (request.temperature.has_value()) body.set_temperature(*request.temperature);
  HttpRequest http = BaseRequest(*settings_, "/chat/completions", request.deadline, true);
  (void)google::protobuf::util::MessageToJsonString(body, &http.body, PrintOptions());
  auto state = std::make_shared<CallState>(settings_, loop_, observer_, std::move(http));
  state->StartChat(std::move(sink));
  return std::make_unique<OpenAiCall>(std::move(state));
}

std::unique_ptr<worker::LlmCall> OpenAiProvider::StartEmbed(const worker::EmbedRequest& request,
                                                            std::shared_ptr<EmbedSink> sink) {
  EmbeddingRequest body;
  body.set_model(settings_->model.empty() ? request.model : settings_->model);
  for (const std::string& t : request.texts) body.add_input(t);
  HttpRequest http = BaseRequest(*settings_, "/embeddings", request.deadline, false);
  (void)google::protobuf::util::MessageToJsonString(body, &http.body, PrintOptions());
  auto state = std::make_shared<CallState>(settings_, loop_, observer_, std::move(http));
  state->StartEmbed(std::move(sink), request.texts.size());
  return std::make_unique<OpenAiCall>(std::move(state));
}

}  // namespace aijobs::openai
