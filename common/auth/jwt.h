// JSON Web Tokens: key sets (JWKS or PEM), verification and signing, on libjwt (signatures)
// and OpenSSL (JWK to PEM). The scheduler verifies callers' bearer tokens with it; aijobsctl
// and the tests sign tokens with it.
//
//   absl::StatusOr<JwtKeySet> keys = ParseJwtKeys(file_contents);
//   absl::StatusOr<google::protobuf::Struct> claims = VerifyJwt(token, *keys, check, absl::Now());
//   absl::StatusOr<std::string> token = SignJwt(claims, JwtAlg::kHS256, secret, "kid-1");
#pragma once

#include <google/protobuf/struct.pb.h>

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace aijobs::auth {

// The algorithms accepted. A key is configured for exactly one: a token whose header names
// another (`none`, or HS256 signed with an RSA public key used as the HMAC secret) is refused.
enum class JwtAlg { kHS256, kRS256, kES256 };

const char* JwtAlgName(JwtAlg alg);

struct JwtKey {
  std::string kid;  // empty: the key matches tokens whose kid no other key has
  JwtAlg alg = JwtAlg::kHS256;
  // HS256: the secret bytes. RS256/ES256: the public key as PEM (SubjectPublicKeyInfo).
  std::string material;
};

struct JwtKeySet {
  std::vector<JwtKey> keys;
  // Keys of the file that were left out (another algorithm, an encryption key), with why.
  std::vector<std::string> skipped;
};

// Parses the contents of a --jwt_keys file: a JWKS (`{"keys": [...]}`, kty oct / RSA / EC
// P-256, alg HS256 / RS256 / ES256 or none given), or one or more PEM public keys (RSA ->
// RS256, EC P-256 -> ES256). INVALID_ARGUMENT, saying what is wrong, when the file is
// neither or holds no usable key.
absl::StatusOr<JwtKeySet> ParseJwtKeys(std::string_view text);

struct JwtCheck {
  std::string issuer;    // required `iss` when not empty
  std::string audience;  // required in `aud` (a string or an array) when not empty
  absl::Duration leeway = absl::Seconds(30);  // clock skew allowed on exp and nbf
};

// Verifies `token` (compact JWS) against `keys`: the key is chosen by the header's kid (a key
// without kid when no key has it), the header's alg must be the key's, the signature must
// hold, `exp` must be present and not passed, `nbf` (if any) reached, `sub` a non-empty
// string, and iss/aud as `check` asks. Returns the claims; UNAUTHENTICATED with a short
// reason a caller may be told ("token expired", "unknown kid \"k9\"", "bad signature", ...)
// otherwise. Never includes the token in the message.
absl::StatusOr<google::protobuf::Struct> VerifyJwt(std::string_view token, const JwtKeySet& keys,
                                                   const JwtCheck& check, absl::Time now);

// Signs `claims` as a compact JWS with `alg` and `key` (HS256: the secret; RS256/ES256: the
// private key as PEM), with `kid` in the header when not empty.
absl::StatusOr<std::string> SignJwt(const google::protobuf::Struct& claims, JwtAlg alg,
                                    std::string_view key, std::string_view kid);

struct SigningKey {
  JwtAlg alg = JwtAlg::kHS256;
  std::string material;  // HS256: the secret; RS256/ES256: the private key as PEM
  std::string kid;
};

// The key to sign with from a key file: a JWKS holding HS256 (kty oct) keys, the one with
// `kid` (empty: the first), or a PEM private key (RSA -> RS256, EC P-256 -> ES256; kid as
// given). INVALID_ARGUMENT saying why otherwise.
absl::StatusOr<SigningKey> SigningKeyFromFile(std::string_view text, std::string_view kid);

// A JWKS document with one HS256 (kty oct) key: what ./dev up writes for its dev tokens.
std::string HmacJwks(std::string_view kid, std::string_view secret);

}  // namespace aijobs::auth
