// API keys for internal services: "aij_<id>_<secret>", where id (16 hex digits) names the key
// in the store and only SHA-256 of the secret is kept there.
//
//   NewApiKey key = MintApiKey();        // key.text is shown once, key.id and key.hash stored
//   absl::StatusOr<ApiKeyParts> parts = ParseApiKey(bearer);
//   bool ok = ApiKeyHashMatches(stored_hash, parts->secret);
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace aijobs::auth {

inline constexpr std::string_view kApiKeyPrefix = "aij_";

struct NewApiKey {
  std::string text;  // the whole key, to give to its user once
  std::string id;
  std::string hash;  // hex SHA-256 of the secret
};

struct ApiKeyParts {
  std::string id;
  std::string secret;
};

// A new key: 64 random bits of id and 256 of secret, from OpenSSL's RAND_bytes.
NewApiKey MintApiKey();

// Whether `bearer` looks like an API key rather than a JWT.
bool IsApiKey(std::string_view bearer);

// Splits a key; UNAUTHENTICATED ("malformed API key") when it is not one.
absl::StatusOr<ApiKeyParts> ParseApiKey(std::string_view key);

// Hex SHA-256 of a secret.
std::string HashApiKeySecret(std::string_view secret);

// Compares the stored hash with the secret's in constant time.
bool ApiKeyHashMatches(std::string_view stored_hash, std::string_view secret);

}  // namespace aijobs::auth
