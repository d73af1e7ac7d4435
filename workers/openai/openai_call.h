// One call of the OpenAI-compatible provider: every HTTP attempt of one LlmCall (the
// SDK-style retries of openai_provider.h), driven by the CurlLoop. OpenAiProvider builds the
// request and starts the call here.
//
//   std::unique_ptr<LlmCall> call =
//       StartOpenAiChat(settings, &loop, observer, std::move(http_request), sink);
//   call->Cancel();  // from any thread, also from inside one of the sink's callbacks
//
// Threading: transfer events, retry timers and every callback (the sink's, and the
// RateLimitObserver's) run on the loop thread; Start* and Cancel() come from any thread.
// All call state is guarded by one CallGate (workers/call_gate.h): callbacks run through it
// with the lock released, so a sink may cancel its own call, and Cancel() from another thread
// waits for a callback that is running. Lock order: OpenAiCallState::gate_.mu, then
// CurlLoop's internal lock (Start, Cancel, RunAt, CancelTimer); nothing else is taken under it.
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "aijobs/v1/openai.pb.h"
#include "common/sse_parser.h"
#include "workers/call_gate.h"
#include "workers/llm_provider.h"
#include "workers/openai/curl_loop.h"
#include "workers/openai/openai_json.h"
#include "workers/openai/openai_settings.h"

namespace aijobs::openai {

// Starts a chat call: `request` is the POST of a streamed chat completion. `loop` must
// outlive the call; `observer` (nullable) is told every response's x-ratelimit-* headers.
std::unique_ptr<worker::LlmCall> StartOpenAiChat(std::shared_ptr<const OpenAiSettings> settings,
                                                 CurlLoop* loop,
                                                 worker::RateLimitObserver* observer,
                                                 HttpRequest request,
                                                 std::shared_ptr<worker::ChatSink> sink);

// Starts an embeddings call for `texts` inputs; the vectors come back in input order.
std::unique_ptr<worker::LlmCall> StartOpenAiEmbed(std::shared_ptr<const OpenAiSettings> settings,
                                                  CurlLoop* loop,
                                                  worker::RateLimitObserver* observer,
                                                  HttpRequest request, size_t texts,
                                                  std::shared_ptr<worker::EmbedSink> sink);

// The state of one call, shared by its LlmCall handle, the loop's transfer handler of the
// current attempt and the retry timer.
class OpenAiCallState : public std::enable_shared_from_this<OpenAiCallState> {
 public:
  OpenAiCallState(std::shared_ptr<const OpenAiSettings> settings, CurlLoop* loop,
                  worker::RateLimitObserver* observer, HttpRequest request);

  // Start the first attempt; one of them, once.
  void StartChat(std::shared_ptr<worker::ChatSink> sink);
  void StartEmbed(std::shared_ptr<worker::EmbedSink> sink, size_t texts);
  // LlmCall::Cancel(): stops the transfer or retry timer; no callback runs once it returns.
  void Cancel();

  // Events of HTTP attempt `attempt`, from its TransferHandler on the loop thread; those of
  // a stale attempt (retried or cancelled) are ignored.
  void OnStatus(int attempt, long status);
  void OnHeader(int attempt, absl::string_view name, absl::string_view value);
  void OnHeadersComplete(int attempt, long status);
  bool OnData(int attempt, absl::string_view bytes);
  void OnComplete(int attempt, const TransferResult& result);

 private:
  // What one event decided to tell the sink: deltas, then at most one final callback.
  // Filled under gate_.mu and delivered through the gate by Deliver(); callers declare it
  // before taking the lock, so the sinks it holds are released after the lock.
  struct Outbox {
    std::shared_ptr<worker::ChatSink> chat;
    std::shared_ptr<worker::EmbedSink> embed;
    std::vector<std::string> deltas;
    std::optional<worker::ProviderError> error;
    bool chat_done = false;
    bool embed_done = false;
    worker::Usage usage;
    std::string model;
    std::vector<std::vector<float>> vectors;
  };

  bool Current(int attempt) const ABSL_SHARED_LOCKS_REQUIRED(gate_.mu) {
    return !done_ && attempt == attempt_;
  }
  void StartAttempt() ABSL_EXCLUSIVE_LOCKS_REQUIRED(gate_.mu);
  // Stops the running transfer or pending retry timer.
  void StopAttempt() ABSL_EXCLUSIVE_LOCKS_REQUIRED(gate_.mu);
  void Retry(int attempt);
  // Handles one SSE event of the stream; false stops the parsing (the attempt ended).
  bool OnEvent(const SseEvent& e, Outbox* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(gate_.mu);
  void FinishNonStreamedChat(Outbox* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(gate_.mu);
  void FinishEmbed(Outbox* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(gate_.mu);
  void Succeed(Outbox* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(gate_.mu);
  // Ends the current attempt with `error`: retries inside the call when `retry` (the
  // classification), as overridden by x-should-retry, allows it and no output has streamed;
  // otherwise puts the error in *out.
  void Fail(worker::ProviderError error, bool retry, Outbox* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(gate_.mu);
  // Marks the call finished (its final callback is in an Outbox) and stops the attempt.
  void Finish() ABSL_EXCLUSIVE_LOCKS_REQUIRED(gate_.mu);
  // Runs the callbacks in *out, in order, through the gate. Returns false when the call
  // ended (final callback delivered, or cancelled meanwhile).
  bool Deliver(Outbox* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(gate_.mu);

  const std::shared_ptr<const OpenAiSettings> settings_;
  CurlLoop* const loop_;
  worker::RateLimitObserver* const observer_;
  const HttpRequest request_;  // deadline = the call's deadline

  worker::CallGate gate_;
  bool done_ ABSL_GUARDED_BY(gate_.mu) = false;  // finished or cancelled
  std::shared_ptr<worker::ChatSink> chat_sink_ ABSL_GUARDED_BY(gate_.mu);
  std::shared_ptr<worker::EmbedSink> embed_sink_ ABSL_GUARDED_BY(gate_.mu);
  size_t embed_texts_ ABSL_GUARDED_BY(gate_.mu) = 0;
  int attempt_ ABSL_GUARDED_BY(gate_.mu) = 0;  // HTTP requests started
  int retries_ ABSL_GUARDED_BY(gate_.mu) = 0;
  bool delivered_ ABSL_GUARDED_BY(gate_.mu) = false;
  CurlLoop::TransferId transfer_ ABSL_GUARDED_BY(gate_.mu) = 0;
  CurlLoop::TimerId timer_ ABSL_GUARDED_BY(gate_.mu) = 0;

  // Per attempt.
  long status_ ABSL_GUARDED_BY(gate_.mu) = 0;
  bool streaming_ ABSL_GUARDED_BY(gate_.mu) = false;
  std::string content_type_ ABSL_GUARDED_BY(gate_.mu);
  std::optional<std::string> retry_after_ ABSL_GUARDED_BY(gate_.mu);
  std::optional<std::string> retry_after_ms_ ABSL_GUARDED_BY(gate_.mu);
  std::optional<bool> should_retry_ ABSL_GUARDED_BY(gate_.mu);
  worker::RateLimitHeaders rate_ ABSL_GUARDED_BY(gate_.mu);
  bool has_rate_ ABSL_GUARDED_BY(gate_.mu) = false;
  std::string body_ ABSL_GUARDED_BY(gate_.mu);
  SseParser parser_ ABSL_GUARDED_BY(gate_.mu);
  bool got_done_ ABSL_GUARDED_BY(gate_.mu) = false;
  bool saw_finish_ ABSL_GUARDED_BY(gate_.mu) = false;
  // Reused: its strings and choices keep their capacity.
  ChatCompletionChunk chunk_ ABSL_GUARDED_BY(gate_.mu);
  ChunkDecoder decoder_ ABSL_GUARDED_BY(gate_.mu);

  // Across attempts (only the last attempt can have produced them).
  worker::Usage usage_ ABSL_GUARDED_BY(gate_.mu);
  bool has_usage_ ABSL_GUARDED_BY(gate_.mu) = false;
  int content_chunks_ ABSL_GUARDED_BY(gate_.mu) = 0;
  std::string model_ ABSL_GUARDED_BY(gate_.mu);
};

}  // namespace aijobs::openai
