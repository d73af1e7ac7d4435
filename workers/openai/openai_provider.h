// The OpenAI-compatible HTTP provider (OpenAI, Azure-style proxies, Ollama, vLLM, llama.cpp
// server): streamed chat completions over SSE and embeddings, all calls of all deployments
// driven by one CurlLoop thread.
//
//   CurlLoop loop;  // outlives every provider and call
//   auto p = OpenAiProvider::Create(deployment, &loop, /*observer=*/nullptr);  // StatusOr
//   std::unique_ptr<LlmCall> call = (*p)->StartChat(request, sink);
//
// Failure handling follows the official OpenAI SDKs, inside one call (one job attempt):
//  - Retried: connection errors, timeouts, HTTP 408, 409, 429 and >= 500, and malformed or
//    cut streams — but only while no delta has reached the sink. `x-should-retry: true|false`
//    overrides that choice. The wait is the server's `retry-after-ms` / `retry-after`
//    (seconds or HTTP date) when 0 < hint <= 60 s, else min(initial·2ⁿ, max) × (1 − 0.25·U),
//    run on the loop's timers. At most Retry.max_retries (default 2) retries, never past
//    the call's deadline.
//  - After the last retry (or after output has streamed) the sink gets OnError with
//    retryable = true and retry_after = the server's hint (if any), so the scheduler's
//    job-level retry takes over.
//
// ProviderError codes (stable; JobFailure.code):
//   "RATE_LIMITED"          HTTP 429, or an error chunk of type/code rate_limit*. Retryable.
//   "PROVIDER_UNAVAILABLE"  connect/DNS/TLS/socket errors, HTTP 502/503/504. Retryable.
//   "TIMEOUT"               connect, first-byte, idle (stalled stream) or total timeout,
//                           HTTP 408. Retryable.
//   "PROVIDER_ERROR"        other HTTP >= 500, 409, a malformed chunk or response, a stream
//                           cut before [DONE], a mid-stream error chunk. Retryable.
//   "PROVIDER_REJECTED"     other HTTP 4xx (400, 401, 403, 404, 422, ...) or an error chunk
//                           of type invalid_request_error: not retryable; the message carries
//                           the provider's own message.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "aijobs/v1/providers.pb.h"
#include "workers/llm_provider.h"
#include "workers/openai/curl_loop.h"

namespace aijobs::openai {

inline constexpr char kRateLimited[] = "RATE_LIMITED";
inline constexpr char kProviderUnavailable[] = "PROVIDER_UNAVAILABLE";
inline constexpr char kTimeout[] = "TIMEOUT";
inline constexpr char kProviderError[] = "PROVIDER_ERROR";
inline constexpr char kProviderRejected[] = "PROVIDER_REJECTED";

// A deployment's settings with defaults applied and the API key resolved.
struct OpenAiSettings {
  std::string name;
  std::string base_url;  // Without a trailing slash.
  std::string model;
  std::string api_key;               // Empty: no Authorization header. Never logged.
  std::vector<std::string> headers;  // "Name: value", from Deployment.headers.
  absl::Duration connect_timeout = absl::Seconds(5);
  absl::Duration first_byte_timeout = absl::Seconds(60);
  absl::Duration idle_timeout = absl::Seconds(30);
  absl::Duration total_timeout = absl::Seconds(600);
  int max_retries = 2;
  absl::Duration initial_backoff = absl::Milliseconds(500);
  absl::Duration max_backoff = absl::Seconds(8);
};

// Validates `config` and applies defaults; reads the API key from api_key_env / api_key_file.
// INVALID_ARGUMENT names the bad field (e.g. `deployment "gpt": api_key_env names FOO,
// which is not set`). The key's value never appears in a message.
absl::StatusOr<OpenAiSettings> ResolveSettings(const aijobs::v1::Deployment& config);

class OpenAiProvider : public worker::LlmProvider {
 public:
  // Validates the config and resolves the API key (see ResolveSettings). `loop` must outlive
  // the provider and every call it starts; `observer` (nullable) must outlive the provider
  // and gets every response's x-ratelimit-* headers, on the loop thread.
  static absl::StatusOr<std::unique_ptr<OpenAiProvider>> Create(
      const aijobs::v1::Deployment& config, CurlLoop* loop, worker::RateLimitObserver* observer);

  OpenAiProvider(OpenAiSettings settings, CurlLoop* loop, worker::RateLimitObserver* observer);
  // Calls still running keep working (they share the settings); the loop must still exist.
  ~OpenAiProvider() override = default;

  // "openai": job inputs carry no per-job options for it (input.openai is ignored).
  std::string name() const override { return "openai"; }
  const OpenAiSettings& settings() const { return *settings_; }

  // POST {base_url}/chat/completions, stream: true with usage. The model sent is the
  // deployment's (request.model only when the deployment names none).
  std::unique_ptr<worker::LlmCall> StartChat(const worker::ChatRequest& request,
                                             std::shared_ptr<worker::ChatSink> sink) override;
  // POST {base_url}/embeddings; vectors come back in input order whatever the server's.
  std::unique_ptr<worker::LlmCall> StartEmbed(const worker::EmbedRequest& request,
                                              std::shared_ptr<worker::EmbedSink> sink) override;

 private:
  std::shared_ptr<const OpenAiSettings> settings_;
  CurlLoop* const loop_;
  worker::RateLimitObserver* const observer_;
};

// Parses an x-ratelimit-reset-* value: Go-style durations ("1s", "6m0s", "20ms",
// "1h2m3.5s") or a bare number of seconds ("60", "0.5").
std::optional<absl::Duration> ParseRateLimitDuration(absl::string_view value);

// The server's retry hint: retry-after-ms (milliseconds, fractional allowed) wins over
// retry-after (seconds, or an HTTP date relative to `now`). Unset when absent, malformed or
// not positive.
std::optional<absl::Duration> ParseRetryHint(const std::optional<std::string>& retry_after_ms,
                                             const std::optional<std::string>& retry_after,
                                             absl::Time now);

}  // namespace aijobs::openai
