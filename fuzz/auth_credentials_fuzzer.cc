// Fuzz target: everything that reads a credential or a key file (common/auth/). The first
// byte picks the reader, the rest is its input:
//   0: a bearer token verified against a fixed key set (HS256, RS256 and ES256 keys);
//   1: a --jwt_keys file (JWKS or PEM public keys);
//   2: an API key;
//   3: a signing key file (aijobsctl token --key).
// Properties checked beyond "no crash": a token is only ever accepted with the claims the
// verifier promises (a non-empty sub, a numeric exp that has not passed), every refusal is
// UNAUTHENTICATED, and a parsed key file holds at least one key.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "absl/time/time.h"
#include "common/auth/api_key.h"
#include "common/auth/jwt.h"

namespace aijobs::auth {
namespace {

// A fixed key set: an HS256 secret and one RSA and one EC P-256 public key (test keys, made
// once with openssl; they protect nothing).
constexpr char kKeys[] = R"({"keys":[
{"kty":"oct","kid":"h1","alg":"HS256","k":"c2VjcmV0LW9mLWgxLTAxMjM0NTY3ODlhYmNkZWYwMTIzNDU2Nzg5"},
{"kty":"RSA","kid":"r1","alg":"RS256","e":"AQAB","n":"wJ4Jv5Q3Ck6w6w4zhLk2Bq0P6sVg0bXr1Y7d4p9KxJ8mQvY1dGqRZxk3Hn2LrS5tW6uV7xY8zA9bC0dE1fG2hI3jK4lM5nO6pQ7rS8tU9vW0xY1zA2bC3dE4fG5hI6jK7lM8nO9pQ0rS1tU2vW3xY4zA5bC6dE7fG8hI9jK0lM1nO2pQ3rS4tU5vW6xY7zA8bC9dE0fG1hI2jK3lM4nO5pQ6rS7tU8vW9xY0zA1bC2dE3fG4hI5jK6lM7nO8pQ9rS0tU1vW2xY3zA4bC5dE6fG7hI8jK9lM0nO1pQ2rS3tU4vW5xY6zA7bC8dE9fG0hI1jK2lM3nO4pQ5rS6tU7vW8xY9zA0bC1dE2fG3hI4jK5lM6nO7pQ8rS9tU0vW1xY2zA3bC4dE5fG6hI7jK8lM9nO0pQ1rS2tU3vW4xY5zA6bC7dE8fG9hI0jK1lM2nO3pQ4rS5tU6vW7xY8zA9bC0dE1fG2hI3jK4lM5nO6pQ7rS8tU9vW0xY1zA2bc3"},
{"kty":"EC","kid":"e1","alg":"ES256","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}
]})";

const JwtKeySet& Keys() {
  static const JwtKeySet* keys = [] {
    auto parsed = ParseJwtKeys(kKeys);
    return new JwtKeySet(parsed.ok() ? *std::move(parsed) : JwtKeySet{});
  }();
  return *keys;
}

void Check(bool condition) {
  if (!condition) std::abort();
}

void VerifyToken(std::string_view token) {
  JwtCheck check;
  const absl::Time now = absl::FromUnixSeconds(1'800'000'000);
  auto claims = VerifyJwt(token, Keys(), check, now);
  if (!claims.ok()) {
    Check(claims.status().code() == absl::StatusCode::kUnauthenticated);
    return;
  }
  const auto& f = claims->fields();
  Check(f.contains("sub") && !f.at("sub").string_value().empty());
  Check(f.contains("exp") && f.at("exp").has_number_value() &&
        f.at("exp").number_value() + absl::ToDoubleSeconds(check.leeway) >=
            absl::ToDoubleSeconds(now - absl::UnixEpoch()));
}

}  // namespace
}  // namespace aijobs::auth

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace aijobs::auth;
  if (size == 0) return 0;
  const std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 4) {
    case 0:
      VerifyToken(input);
      break;
    case 1: {
      auto keys = ParseJwtKeys(input);
      if (keys.ok()) Check(!keys->keys.empty());
      break;
    }
    case 2: {
      auto parts = ParseApiKey(input);
      if (parts.ok()) {
        Check(parts->id.size() == 16 && !parts->secret.empty());
        (void)ApiKeyHashMatches(HashApiKeySecret(parts->secret), parts->secret);
      } else {
        Check(parts.status().code() == absl::StatusCode::kUnauthenticated);
      }
      break;
    }
    default:
      (void)SigningKeyFromFile(input, "");
  }
  return 0;
}
