// The provider-neutral, asynchronous LLM interface the job handlers call. One LlmProvider
// serves hundreds of concurrent calls without a thread per call: a call reports through its
// sink from the provider's own threads (sim: one timer thread; HTTP: one curl-multi loop).
//
//   auto sink = std::make_shared<MyChatSink>();
//   std::unique_ptr<LlmCall> call = provider.StartChat(request, sink);
//   ...; call->Cancel();  // optional: no callback fires once Cancel() returns
#pragma once

#include <google/protobuf/struct.pb.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"

namespace aijobs::worker {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant", ...
  std::string content;
};

struct ChatRequest {
  std::string model;  // Empty: the provider's default model.
  std::vector<ChatMessage> messages;
  int max_tokens = 0;                 // 0: the provider's default length.
  std::optional<double> temperature;  // Unset: the provider's default.
  // Which attempt of the job this call serves (1-based). Informational for real providers;
  // the sim uses it for deterministic fault injection (fail_attempts).
  int attempt = 1;
  // The job's deadline; a provider may use it as its request timeout.
  absl::Time deadline = absl::InfiniteFuture();
  // Provider-specific knobs, taken from input.<provider name> (the sim reads input.sim).
  google::protobuf::Struct provider_options;
};

struct EmbedRequest {
  std::string model;
  std::vector<std::string> texts;
  int attempt = 1;
  absl::Time deadline = absl::InfiniteFuture();
  google::protobuf::Struct provider_options;
};

struct Usage {
  int prompt_tokens = 0;
  int completion_tokens = 0;
};

// Why a call failed. `code` is one of the JobFailure codes (see .agents/COMMON.md):
// "PROVIDER_ERROR", "SIM_FAILURE", "INVALID_INPUT", ...
struct ProviderError {
  std::string code;
  std::string message;
  bool retryable = true;
  absl::Duration retry_after = absl::ZeroDuration();  // Zero: no hint.
};

// Rate-limit state a provider reported in a response (OpenAI's x-ratelimit-* headers). Unset
// fields were absent. A provider passes it to its RateLimitObserver (if any) so that the
// deployment's token buckets slow down before the provider answers 429.
struct RateLimitHeaders {
  std::optional<double> limit_requests;
  std::optional<double> limit_tokens;
  std::optional<double> remaining_requests;
  std::optional<double> remaining_tokens;
  std::optional<absl::Duration> reset_requests;
  std::optional<absl::Duration> reset_tokens;
};

// Told about every response's rate-limit headers. Called from provider threads; must not
// block.
class RateLimitObserver {
 public:
  virtual ~RateLimitObserver() = default;
  virtual void OnRateLimitHeaders(const RateLimitHeaders& headers) = 0;
};

// Receives the events of one chat call: OnDelta zero or more times, then exactly one of
// OnDone / OnError. Calls for one LlmCall never overlap; they run on provider threads, so
// implementations must not block for long.
class ChatSink {
 public:
  virtual ~ChatSink() = default;
  virtual void OnDelta(const std::string& text) = 0;
  virtual void OnDone(const Usage& usage, const std::string& model) = 0;
  virtual void OnError(const ProviderError& error) = 0;
};

// Receives the result of one embed call: exactly one of OnDone / OnError.
class EmbedSink {
 public:
  virtual ~EmbedSink() = default;
  virtual void OnDone(std::vector<std::vector<float>> vectors, const Usage& usage,
                      const std::string& model) = 0;
  virtual void OnError(const ProviderError& error) = 0;
};

// A handle on one running call. Destroying the handle cancels the call.
class LlmCall {
 public:
  virtual ~LlmCall() = default;
  // Aborts the call. Once Cancel() returns no callback of this call runs any more: a
  // callback already running on another thread is waited for. Calling Cancel() from inside
  // one of this call's own callbacks is allowed; that callback finishes, nothing follows it.
  // Idempotent; a no-op after OnDone/OnError.
  virtual void Cancel() = 0;
};

class LlmProvider {
 public:
  virtual ~LlmProvider() = default;
  // The provider's name, e.g. "sim" or "openai"; also the key of its per-job options in the
  // job input (input.sim).
  virtual std::string name() const = 0;
  // Starts a chat completion. Never calls the sink synchronously from inside StartChat.
  virtual std::unique_ptr<LlmCall> StartChat(const ChatRequest& request,
                                             std::shared_ptr<ChatSink> sink) = 0;
  // Starts an embedding request. Never calls the sink synchronously from inside StartEmbed.
  virtual std::unique_ptr<LlmCall> StartEmbed(const EmbedRequest& request,
                                              std::shared_ptr<EmbedSink> sink) = 0;
};

}  // namespace aijobs::worker
