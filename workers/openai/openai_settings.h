// A deployment's OpenAI settings: the `openai` Deployment of providers.proto validated, with
// defaults applied and the API key read from the environment or a file.
//
//   absl::StatusOr<OpenAiSettings> s = ResolveSettings(deployment);
//   if (!s.ok()) return s.status();  // INVALID_ARGUMENT naming the bad field
//   HttpRequest r; r.connect_timeout = s->connect_timeout;
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "aijobs/v1/providers.pb.h"

namespace aijobs::openai {

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

}  // namespace aijobs::openai
