#include "workers/openai/openai_call.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "workers/openai/openai_errors.h"

namespace aijobs::openai {
namespace {

using worker::ChatSink;
using worker::EmbedSink;
using worker::ProviderError;

constexpr size_t kMaxBufferedBody = 64 << 20;  // non-streamed bodies (embeddings, errors)

// Forwards one attempt's transfer events to the call, tagged with the attempt's number.
class AttemptHandler : public TransferHandler {
 public:
  AttemptHandler(std::shared_ptr<OpenAiCallState> state, int attempt)
      : state_(std::move(state)), attempt_(attempt) {}
  void OnStatus(long status) override { state_->OnStatus(attempt_, status); }
  void OnHeader(absl::string_view name, absl::string_view value) override {
    state_->OnHeader(attempt_, name, value);
  }
  void OnHeadersComplete(long status) override { state_->OnHeadersComplete(attempt_, status); }
  bool OnData(absl::string_view bytes) override { return state_->OnData(attempt_, bytes); }
  void OnComplete(const TransferResult& result) override { state_->OnComplete(attempt_, result); }

 private:
  const std::shared_ptr<OpenAiCallState> state_;
  const int attempt_;
};

class OpenAiCall : public worker::LlmCall {
 public:
  explicit OpenAiCall(std::shared_ptr<OpenAiCallState> state) : state_(std::move(state)) {}
  ~OpenAiCall() override { state_->Cancel(); }
  void Cancel() override { state_->Cancel(); }

 private:
  std::shared_ptr<OpenAiCallState> state_;
};

}  // namespace

std::unique_ptr<worker::LlmCall> StartOpenAiChat(std::shared_ptr<const OpenAiSettings> settings,
                                                 CurlLoop* loop,
                                                 worker::RateLimitObserver* observer,
                                                 HttpRequest request,
                                                 std::shared_ptr<ChatSink> sink) {
  auto state =
      std::make_shared<OpenAiCallState>(std::move(settings), loop, observer, std::move(request));
  state->StartChat(std::move(sink));
  return std::make_unique<OpenAiCall>(std::move(state));
}

std::unique_ptr<worker::LlmCall> StartOpenAiEmbed(std::shared_ptr<const OpenAiSettings> settings,
                                                  CurlLoop* loop,
                                                  worker::RateLimitObserver* observer,
                                                  HttpRequest request, size_t texts,
                                                  std::shared_ptr<EmbedSink> sink) {
  auto state =
      std::make_shared<OpenAiCallState>(std::move(settings), loop, observer, std::move(request));
  state->StartEmbed(std::move(sink), texts);
  return std::make_unique<OpenAiCall>(std::move(state));
}

OpenAiCallState::OpenAiCallState(std::shared_ptr<const OpenAiSettings> settings, CurlLoop* loop,
                                 worker::RateLimitObserver* observer, HttpRequest request)
    : settings_(std::move(settings)),
      loop_(loop),
      observer_(observer),
      request_(std::move(request)) {}

void OpenAiCallState::StartChat(std::shared_ptr<ChatSink> sink) {
  absl::MutexLock lock(&gate_.mu);
  chat_sink_ = std::move(sink);
  StartAttempt();
}

void OpenAiCallState::StartEmbed(std::shared_ptr<EmbedSink> sink, size_t texts) {
  absl::MutexLock lock(&gate_.mu);
  embed_sink_ = std::move(sink);
  embed_texts_ = texts;
  StartAttempt();
}

void OpenAiCallState::Cancel() {
  Outbox released;  // the sinks go after the lock
  absl::MutexLock lock(&gate_.mu);
  done_ = true;
  StopAttempt();
  released.chat = std::move(chat_sink_);
  released.embed = std::move(embed_sink_);
  gate_.Close();  // waits for a callback running on the loop thread
}

void OpenAiCallState::OnStatus(int attempt, long status) {
  absl::MutexLock lock(&gate_.mu);
  if (!Current(attempt)) return;
  status_ = status;
  retry_after_.reset();
  retry_after_ms_.reset();
  should_retry_.reset();
  content_type_.clear();
  rate_ = worker::RateLimitHeaders();
  has_rate_ = false;
}

void OpenAiCallState::OnHeader(int attempt, absl::string_view name, absl::string_view value) {
  absl::MutexLock lock(&gate_.mu);
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
  } else if (ParseRateLimitHeader(n, v, &rate_)) {
    has_rate_ = true;
  }
}

void OpenAiCallState::OnHeadersComplete(int attempt, long status) {
  absl::MutexLock lock(&gate_.mu);
  if (!Current(attempt)) return;
  status_ = status;
  streaming_ = chat_sink_ != nullptr && status >= 200 && status < 300 &&
               absl::StartsWith(content_type_, "text/event-stream");
  if (has_rate_ && observer_ != nullptr) {
    worker::RateLimitHeaders rate = rate_;
    // Through the gate: Cancel() waits for it, so the observer is not called after the
    // call (and perhaps the observer's owner) is gone.
    gate_.Run([&] { observer_->OnRateLimitHeaders(rate); });
  }
}

bool OpenAiCallState::OnData(int attempt, absl::string_view bytes) {
  Outbox out;
  absl::MutexLock lock(&gate_.mu);
  if (!Current(attempt)) return false;
  if (!streaming_) {
    if (body_.size() + bytes.size() > kMaxBufferedBody) {
      Fail(MakeProviderError(kProviderError,
                             absl::StrCat("deployment ", settings_->name, ": response over ",
                                          kMaxBufferedBody, " bytes"),
                             true),
           true, &out);
      Deliver(&out);
      return false;
    }
    body_.append(bytes.data(), bytes.size());
    return true;
  }
  // Called inside Feed, with the lock held: -Wthread-safety is told so.
  auto on_event = [&](const SseEvent& e)
                      ABSL_EXCLUSIVE_LOCKS_REQUIRED(gate_.mu) { return OnEvent(e, &out); };
  bool go_on = parser_.Feed(bytes, on_event);
  bool open = Deliver(&out);
  return go_on && open;
}

void OpenAiCallState::OnComplete(int attempt, const TransferResult& result) {
  Outbox out;
  absl::MutexLock lock(&gate_.mu);
  if (!Current(attempt)) return;
  transfer_ = 0;
  if (result.code != CURLE_OK) {
    ProviderError e = ErrorFromCurl(result, settings_->name);
    if (streaming_ && result.code != CURLE_OPERATION_TIMEDOUT) {
      e = MakeProviderError(kProviderError,
                            absl::StrCat("deployment ", settings_->name,
                                         ": stream cut before [DONE] (", result.error, ")"),
                            true);
    }
    bool retry = e.retryable;
    Fail(std::move(e), retry, &out);
  } else if (status_ < 200 || status_ >= 300) {
    bool in_call_retry = false;
    ProviderError e = ErrorFromStatus(status_, body_, settings_->name, &in_call_retry);
    Fail(std::move(e), in_call_retry, &out);
  } else if (embed_sink_ != nullptr) {
    FinishEmbed(&out);
  } else if (streaming_) {
    // A last event without its blank line still counts.
    auto on_event = [&](const SseEvent& e)
                        ABSL_EXCLUSIVE_LOCKS_REQUIRED(gate_.mu) { return OnEvent(e, &out); };
    bool parsed = !parser_.has_partial_event() || parser_.Feed("\n\n", on_event);
    if (parsed && Current(attempt)) {
      if (got_done_ || saw_finish_) {
        Succeed(&out);
      } else {
        Fail(
            MakeProviderError(
                kProviderError,
                absl::StrCat("deployment ", settings_->name, ": stream ended before [DONE]"), true),
            true, &out);
      }
    }
  } else {
    FinishNonStreamedChat(&out);
  }
  Deliver(&out);
}

void OpenAiCallState::StartAttempt() {
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

void OpenAiCallState::StopAttempt() {
  if (transfer_ != 0) loop_->Cancel(transfer_);
  transfer_ = 0;
  if (timer_ != 0) loop_->CancelTimer(timer_);
  timer_ = 0;
}

void OpenAiCallState::Retry(int attempt) {
  absl::MutexLock lock(&gate_.mu);
  if (!Current(attempt)) return;
  timer_ = 0;
  StartAttempt();
}

bool OpenAiCallState::OnEvent(const SseEvent& e, Outbox* out) {
  if (done_) return false;
  absl::string_view data = absl::StripAsciiWhitespace(e.data);
  if (data == "[DONE]") {
    got_done_ = true;
    return true;
  }
  if (data.empty()) return true;
  if (absl::Status status = decoder_.Decode(data, &chunk_); !status.ok()) {
    Fail(MakeProviderError(kProviderError,
                           absl::StrCat("deployment ", settings_->name,
                                        ": malformed stream chunk (", status.message(), ")"),
                           true),
         true, out);
    return false;
  }
  if (chunk_.has_error()) {
    ProviderError err = ErrorFromChunk(chunk_.error(), settings_->name);
    bool retry = err.retryable;
    Fail(std::move(err), retry, out);
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
      if (!out->chat) out->chat = chat_sink_;
      out->deltas.push_back(c.delta().content());
    }
  }
  return true;
}

void OpenAiCallState::FinishNonStreamedChat(Outbox* out) {
  ChatCompletion completion;
  auto status =
      google::protobuf::util::JsonStringToMessage(body_, &completion, OpenAiJsonParseOptions());
  if (!status.ok() || completion.choices().empty()) {
    Fail(MakeProviderError(
             kProviderError,
             absl::StrCat("deployment ", settings_->name, ": malformed chat completion response"),
             true),
         true, out);
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
    out->deltas.push_back(text);
  }
  Succeed(out);
}

void OpenAiCallState::Succeed(Outbox* out) {
  out->chat = std::move(chat_sink_);
  Finish();
  if (!has_usage_) usage_.completion_tokens = content_chunks_;
  out->chat_done = true;
  out->usage = usage_;
  out->model = model_.empty() ? settings_->model : model_;
}

void OpenAiCallState::FinishEmbed(Outbox* out) {
  EmbeddingResponse response;
  auto status =
      google::protobuf::util::JsonStringToMessage(body_, &response, OpenAiJsonParseOptions());
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
    Fail(MakeProviderError(
             kProviderError,
             absl::StrCat("deployment ", settings_->name,
                          ": malformed embeddings response (expected ", embed_texts_, " vectors)"),
             true),
         true, out);
    return;
  }
  out->embed = std::move(embed_sink_);
  Finish();
  out->embed_done = true;
  out->vectors = std::move(vectors);
  out->usage = worker::Usage();
  out->usage.prompt_tokens = response.usage().prompt_tokens();
  out->model = response.model().empty() ? settings_->model : response.model();
}

void OpenAiCallState::Fail(ProviderError error, bool retry, Outbox* out) {
  if (done_) return;
  StopAttempt();
  if (should_retry_.has_value()) retry = *should_retry_;
  std::optional<absl::Duration> hint = ParseRetryHint(retry_after_ms_, retry_after_, absl::Now());
  if (retry && !delivered_ && retries_ < settings_->max_retries) {
    thread_local absl::InsecureBitGen rng;
    absl::Time at =
        absl::Now() + RetryDelay(hint, *settings_, retries_, absl::Uniform(rng, 0.0, 1.0));
    if (at < request_.deadline) {
      ++retries_;
      int next = ++attempt_;  // makes the old transfer's late events stale
      timer_ = loop_->RunAt(at, [self = shared_from_this(), next] { self->Retry(next); });
      return;
    }
  }
  if (hint.has_value()) error.retry_after = *hint;
  if (retries_ > 0) absl::StrAppend(&error.message, " (after ", retries_ + 1, " requests)");
  out->error = std::move(error);
  out->chat = std::move(chat_sink_);
  out->embed = std::move(embed_sink_);
  Finish();
}

void OpenAiCallState::Finish() {
  done_ = true;
  StopAttempt();
}

bool OpenAiCallState::Deliver(Outbox* out) {
  for (const std::string& delta : out->deltas) {
    ChatSink* sink = out->chat.get();
    if (!gate_.Run([&] { sink->OnDelta(delta); })) return false;  // cancelled meanwhile
  }
  if (out->error.has_value()) {
    gate_.RunLast([&] {
      if (out->chat) out->chat->OnError(*out->error);
      if (out->embed) out->embed->OnError(*out->error);
    });
    return false;
  }
  if (out->chat_done) {
    gate_.RunLast([&] { out->chat->OnDone(out->usage, out->model); });
    return false;
  }
  if (out->embed_done) {
    gate_.RunLast([&] { out->embed->OnDone(std::move(out->vectors), out->usage, out->model); });
    return false;
  }
  return !gate_.closed();
}

}  // namespace aijobs::openai
