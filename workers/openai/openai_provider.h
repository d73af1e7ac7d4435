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
// ProviderError codes and how responses map to them: openai_errors.h. Settings:
// openai_settings.h. One call's state machine and its threading: openai_call.h.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "aijobs/v1/providers.pb.h"
#include "workers/llm_provider.h"
#include "workers/openai/curl_loop.h"
#include "workers/openai/openai_errors.h"    // IWYU pragma: export
#include "workers/openai/openai_settings.h"  // IWYU pragma: export

namespace aijobs::openai {

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

}  // namespace aijobs::openai
