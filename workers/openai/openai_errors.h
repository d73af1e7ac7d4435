// How an OpenAI-compatible server's failures map to ProviderError, and the hints a response
// carries for the caller's next request (retry-after, x-ratelimit-*). Pure functions: the
// call state (openai_call.h) decides when to use them.
//
//   bool in_call_retry = false;
//   ProviderError e = ErrorFromStatus(429, body, "gpt", &in_call_retry);  // RATE_LIMITED
//   absl::Duration wait = RetryDelay(ParseRetryHint(ms, s, absl::Now()), settings, 0, u);
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

#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "aijobs/v1/openai.pb.h"
#include "workers/llm_provider.h"
#include "workers/openai/curl_loop.h"
#include "workers/openai/openai_settings.h"

namespace aijobs::openai {

inline constexpr char kRateLimited[] = "RATE_LIMITED";
inline constexpr char kProviderUnavailable[] = "PROVIDER_UNAVAILABLE";
inline constexpr char kTimeout[] = "TIMEOUT";
inline constexpr char kProviderError[] = "PROVIDER_ERROR";
inline constexpr char kProviderRejected[] = "PROVIDER_REJECTED";

// A server's retry hint is honoured for an in-call retry only up to this long; a longer one
// is passed on to the job-level retry instead.
inline constexpr absl::Duration kMaxHonouredHint = absl::Seconds(60);

// Returns an error with `code` (one of the k* codes above).
worker::ProviderError MakeProviderError(const char* code, std::string message, bool retryable);

// Classifies a non-2xx response from its status and body (an OpenAI {"error": {...}} body
// gives the message; any other body its first 300 bytes). Sets *in_call_retry to what the
// OpenAI SDKs do: retry 408, 409, 429 and >= 500 inside the call.
worker::ProviderError ErrorFromStatus(long status, const std::string& body,
                                      const std::string& deployment, bool* in_call_retry);

// Classifies an {"error": {...}} object sent inside a 200 stream.
worker::ProviderError ErrorFromChunk(const ErrorBody& body, const std::string& deployment);

// Classifies a transfer that failed below HTTP (connect, TLS, timeouts, a cut response).
worker::ProviderError ErrorFromCurl(const TransferResult& result, const std::string& deployment);

// Parses an x-ratelimit-reset-* value: Go-style durations ("1s", "6m0s", "20ms",
// "1h2m3.5s") or a bare number of seconds ("60", "0.5").
std::optional<absl::Duration> ParseRateLimitDuration(absl::string_view value);

// Records one x-ratelimit-* header in *headers. `name` is lower-case. Returns whether it was
// one of the six known ones (limits and remainders count only when numeric; a reset that does
// not parse is recorded as unset).
bool ParseRateLimitHeader(absl::string_view name, absl::string_view value,
                          worker::RateLimitHeaders* headers);

// The server's retry hint: retry-after-ms (milliseconds, fractional allowed) wins over
// retry-after (seconds, or an HTTP date relative to `now`). Unset when absent, malformed or
// not positive.
std::optional<absl::Duration> ParseRetryHint(const std::optional<std::string>& retry_after_ms,
                                             const std::optional<std::string>& retry_after,
                                             absl::Time now);

// How long to wait before in-call retry number `retries_done + 1`: the server's hint when
// 0 < hint <= kMaxHonouredHint, else min(initial_backoff * 2^retries_done, max_backoff)
// * (1 - 0.25 * jitter), with `jitter` drawn uniformly from [0, 1).
absl::Duration RetryDelay(std::optional<absl::Duration> hint, const OpenAiSettings& settings,
                          int retries_done, double jitter);

}  // namespace aijobs::openai
