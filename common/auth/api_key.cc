#include "common/auth/api_key.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace aijobs::auth {
namespace {

std::string RandomBytes(size_t n) {
  std::string out(n, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1) {
    std::abort();  // no entropy: never hand out a guessable credential
  }
  return out;
}

bool AllHex(std::string_view s) {
  for (char c : s) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c)) || absl::ascii_isupper(c)) {
      return false;
    }
  }
  return true;
}

}  // namespace

NewApiKey MintApiKey() {
  NewApiKey k;
  k.id = absl::BytesToHexString(RandomBytes(8));
  std::string secret;
  absl::WebSafeBase64Escape(RandomBytes(32), &secret);
  k.hash = HashApiKeySecret(secret);
  k.text = absl::StrCat(std::string(kApiKeyPrefix), k.id, "_", secret);
  return k;
}

bool IsApiKey(std::string_view bearer) {
  return absl::StartsWith(absl::string_view(bearer.data(), bearer.size()),
                          absl::string_view(kApiKeyPrefix.data(), kApiKeyPrefix.size()));
}

absl::StatusOr<ApiKeyParts> ParseApiKey(std::string_view key) {
  // aij_ + 16 hex + _ + 43 base64url
  constexpr size_t kIdLen = 16, kSecretLen = 43;
  const size_t p = kApiKeyPrefix.size();
  if (key.size() != p + kIdLen + 1 + kSecretLen || !IsApiKey(key) || key[p + kIdLen] != '_') {
    return absl::UnauthenticatedError("malformed API key");
  }
  ApiKeyParts parts{std::string(key.substr(p, kIdLen)), std::string(key.substr(p + kIdLen + 1))};
  if (!AllHex(parts.id)) return absl::UnauthenticatedError("malformed API key");
  for (char c : parts.secret) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') {
      return absl::UnauthenticatedError("malformed API key");
    }
  }
  return parts;
}

std::string HashApiKeySecret(std::string_view secret) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(secret.data(), secret.size(), md, &len, EVP_sha256(), nullptr);
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(md), len));
}

bool ApiKeyHashMatches(std::string_view stored_hash, std::string_view secret) {
  const std::string h = HashApiKeySecret(secret);
  return stored_hash.size() == h.size() &&
         CRYPTO_memcmp(stored_hash.data(), h.data(), h.size()) == 0;
}

}  // namespace aijobs::auth
