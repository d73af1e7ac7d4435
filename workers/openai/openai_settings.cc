#include "workers/openai/openai_settings.h"

#include <cstdlib>
#include <fstream>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/time_util.h"

namespace aijobs::openai {
namespace {

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

}  // namespace aijobs::openai
