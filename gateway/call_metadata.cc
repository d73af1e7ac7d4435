#include "gateway/call_metadata.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace aijobs::gateway {
namespace {

constexpr absl::string_view kGrpcMetadataPrefix = "grpc-metadata-";
constexpr absl::string_view kHttpHeaderPrefix = "x-http-header-";

bool IsValidMetadataKey(absl::string_view key) {
  if (key.empty()) return false;
  for (char c : key) {
    if (!(absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '-' || c == '_' || c == '.')) {
      return false;
    }
  }
  return !absl::StartsWith(key, "grpc-");
}

bool IsValidMetadataValue(absl::string_view value) {
  for (char c : value) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

void AppendShaped(const std::multimap<std::string, std::string>& md, HttpResponseShape* shape) {
  for (const auto& [key, value] : md) {
    if (key == "x-http-code") {
      int code = 0;
      if (absl::SimpleAtoi(value, &code) && code >= 100 && code <= 599) shape->http_status = code;
      continue;
    }
    if (absl::StartsWith(key, "grpc-") || absl::EndsWith(key, "-bin") || key == "content-type") {
      continue;
    }
    if (absl::StartsWith(key, kHttpHeaderPrefix)) {
      // Metadata keys are lower-case; headers read better in their usual case ("Location").
      std::string name = key.substr(kHttpHeaderPrefix.size());
      bool word_start = true;
      for (char& c : name) {
        if (word_start) c = absl::ascii_toupper(c);
        word_start = c == '-';
      }
      shape->headers.emplace_back(std::move(name), value);
    } else {
      shape->headers.emplace_back(absl::StrCat("Grpc-Metadata-", key), value);
    }
  }
}

}  // namespace

absl::StatusOr<absl::Duration> ParseGrpcTimeout(absl::string_view text) {
  if (text.size() < 2 || text.size() > 9) {
    return absl::InvalidArgumentError(
        absl::StrCat("Grpc-Timeout \"", text, "\": expected 1-8 digits and a unit (H M S m u n)"));
  }
  int64_t n = 0;
  if (!absl::SimpleAtoi(text.substr(0, text.size() - 1), &n) || n < 0 ||
      !absl::ascii_isdigit(text[0])) {
    return absl::InvalidArgumentError(
        absl::StrCat("Grpc-Timeout \"", text, "\": the amount must be 1-8 digits"));
  }
  switch (text.back()) {
    case 'H': return absl::Hours(n);
    case 'M': return absl::Minutes(n);
    case 'S': return absl::Seconds(n);
    case 'm': return absl::Milliseconds(n);
    case 'u': return absl::Microseconds(n);
    case 'n': return absl::Nanoseconds(n);
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("Grpc-Timeout \"", text, "\": unknown unit, expected H M S m u or n"));
  }
}

absl::StatusOr<std::string> RequestIdFromHeader(absl::string_view value) {
  if (!IsValidMetadataValue(value) || value.size() > 256) {
    return absl::InvalidArgumentError(
        "header X-Request-Id: must be printable ASCII of at most 256 characters");
  }
  return std::string(value);
}

absl::StatusOr<CallMetadata> MetadataFromHeaders(const HeaderList& headers,
                                                 const std::function<std::string()>& new_id) {
  CallMetadata md;
  for (const auto& [name, value] : headers) {
    std::string key = absl::AsciiStrToLower(name);
    if (key == "authorization" || key == "traceparent" || key == "tracestate") {
      if (!IsValidMetadataValue(value)) {
        return absl::InvalidArgumentError(absl::StrCat("header ", name, ": invalid characters"));
      }
      md.entries.emplace_back(std::move(key), value);
    } else if (key == "x-request-id") {
      absl::StatusOr<std::string> id = RequestIdFromHeader(value);
      if (!id.ok()) return id.status();
      md.request_id = *std::move(id);
    } else if (key == "grpc-timeout") {
      absl::StatusOr<absl::Duration> t = ParseGrpcTimeout(value);
      if (!t.ok()) return t.status();
      if (*t <= absl::ZeroDuration()) {
        return absl::InvalidArgumentError(
            absl::StrCat("Grpc-Timeout \"", value, "\": a zero timeout cannot succeed"));
      }
      md.timeout = *t;
    } else if (absl::StartsWith(key, kGrpcMetadataPrefix)) {
      std::string md_key = key.substr(kGrpcMetadataPrefix.size());
      if (!IsValidMetadataKey(md_key) || absl::EndsWith(md_key, "-bin")) {
        return absl::InvalidArgumentError(absl::StrCat(
            "header ", name, ": metadata keys may hold only a-z 0-9 - _ . and must not start "
            "with grpc- or end with -bin"));
      }
      if (!IsValidMetadataValue(value)) {
        return absl::InvalidArgumentError(absl::StrCat("header ", name, ": invalid characters"));
      }
      md.entries.emplace_back(std::move(md_key), value);
    }
  }
  if (md.request_id.empty()) md.request_id = new_id();
  md.entries.emplace_back("x-request-id", md.request_id);
  size_t bytes = 0;
  for (const auto& [k, v] : md.entries) bytes += k.size() + v.size() + 32;
  if (bytes > kMaxForwardedMetadataBytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the headers forwarded to the scheduler (Authorization, traceparent, tracestate, "
        "X-Request-Id, Grpc-Metadata-*) add up to ",
        bytes, " bytes, over the limit of ", kMaxForwardedMetadataBytes));
  }
  return md;
}

HttpResponseShape ShapeFromResponseMetadata(
    const std::multimap<std::string, std::string>& initial,
    const std::multimap<std::string, std::string>& trailing) {
  HttpResponseShape shape;
  AppendShaped(initial, &shape);
  AppendShaped(trailing, &shape);
  return shape;
}

}  // namespace aijobs::gateway
