#include "common/bearer_token.h"

#include <cstdlib>

#include "absl/strings/ascii.h"

namespace aijobs {

std::string BearerTokenFrom(const std::string& flag_value, const char* env) {
  std::string token = flag_value;
  if (token.empty()) {
    const char* v = std::getenv(env);
    if (v != nullptr) token = v;
  }
  return std::string(absl::StripAsciiWhitespace(token));
}

}  // namespace aijobs
