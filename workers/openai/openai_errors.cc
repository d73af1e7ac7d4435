#include "workers/openai/openai_errors.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "workers/openai/openai_json.h"

namespace aijobs::openai {
namespace {

using worker::ProviderError;

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

}  // namespace

ProviderError MakeProviderError(const char* code, std::string message, bool retryable) {
  ProviderError e;
  e.code = code;
  e.message = std::move(message);
  e.retryable = retryable;
  return e;
}

ProviderError ErrorFromChunk(const ErrorBody& body, const std::string& deployment) {
  std::string type = body.type();
  std::string code = ValueText(body.code());
  std::string message = absl::StrCat("deployment ", deployment, ": error in stream (",
                                     type.empty() ? code : type, "): ", body.message());
  if (absl::StartsWith(type, "rate_limit") || absl::StartsWith(code, "rate_limit")) {
    return MakeProviderError(kRateLimited, std::move(message), true);
  }
  if (type == "invalid_request_error") {
    return MakeProviderError(kProviderRejected, std::move(message), false);
  }
  return MakeProviderError(kProviderError, std::move(message), true);
}

ProviderError ErrorFromStatus(long status, const std::string& body, const std::string& deployment,
                              bool* in_call_retry) {
  ErrorResponse parsed;
  std::string detail;
  if (!body.empty() &&
      google::protobuf::util::JsonStringToMessage(body, &parsed, OpenAiJsonParseOptions()).ok() &&
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
  if (status == 429) return MakeProviderError(kRateLimited, std::move(message), true);
  if (status == 408) return MakeProviderError(kTimeout, std::move(message), true);
  if (status == 502 || status == 503 || status == 504) {
    return MakeProviderError(kProviderUnavailable, std::move(message), true);
  }
  if (status >= 500 || status == 409) {
    return MakeProviderError(kProviderError, std::move(message), true);
  }
  return MakeProviderError(kProviderRejected, std::move(message), false);
}

ProviderError ErrorFromCurl(const TransferResult& r, const std::string& deployment) {
  std::string message = absl::StrCat("deployment ", deployment, ": ", r.error);
  if (r.code == CURLE_OPERATION_TIMEDOUT) {
    return MakeProviderError(kTimeout, std::move(message), true);
  }
  if (r.code == CURLE_URL_MALFORMAT || r.code == CURLE_UNSUPPORTED_PROTOCOL) {
    return MakeProviderError(kProviderError, std::move(message), false);
  }
  if (r.code == CURLE_PARTIAL_FILE || r.code == CURLE_RECV_ERROR) {
    // The connection broke during the response: for a stream, the stream was cut.
    return MakeProviderError(kProviderError, absl::StrCat(message, " (response cut)"), true);
  }
  return MakeProviderError(kProviderUnavailable, std::move(message), true);
}

std::optional<absl::Duration> ParseRateLimitDuration(absl::string_view value) {
  absl::string_view v = absl::StripAsciiWhitespace(value);
  absl::Duration d;
  if (absl::ParseDuration(v, &d) && d >= absl::ZeroDuration()) return d;
  double seconds = 0;
  if (absl::SimpleAtod(v, &seconds) && seconds >= 0) return absl::Seconds(seconds);
  return std::nullopt;
}

bool ParseRateLimitHeader(absl::string_view name, absl::string_view value,
                          worker::RateLimitHeaders* headers) {
  if (!absl::StartsWith(name, "x-ratelimit-")) return false;
  absl::string_view key = name.substr(12);
  double number = 0;
  bool is_number = absl::SimpleAtod(value, &number);
  if (key == "limit-requests" && is_number) {
    headers->limit_requests = number;
  } else if (key == "limit-tokens" && is_number) {
    headers->limit_tokens = number;
  } else if (key == "remaining-requests" && is_number) {
    headers->remaining_requests = number;
  } else if (key == "remaining-tokens" && is_number) {
    headers->remaining_tokens = number;
  } else if (key == "reset-requests") {
    headers->reset_requests = ParseRateLimitDuration(value);
  } else if (key == "reset-tokens") {
    headers->reset_tokens = ParseRateLimitDuration(value);
  } else {
    return false;
  }
  return true;
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

absl::Duration RetryDelay(std::optional<absl::Duration> hint, const OpenAiSettings& settings,
                          int retries_done, double jitter) {
  if (hint.has_value() && *hint <= kMaxHonouredHint) return *hint;
  absl::Duration d = settings.initial_backoff;
  for (int i = 0; i < retries_done && d < settings.max_backoff; ++i) d *= 2;
  d = std::min(d, settings.max_backoff);
  return d * (1 - 0.25 * jitter);
}

}  // namespace aijobs::openai
