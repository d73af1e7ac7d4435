// Keys for tests, made at run time with OpenSSL: RSA 2048 and EC P-256 key pairs, their
// public JWKs, and signatures made by OpenSSL alone (as another token issuer would).
//
//   TestKeyPair rsa = GenerateTestKey(TestKeyType::kRsa);
//   std::string jwks = absl::StrCat(R"({"keys":[)", PublicJwk(rsa, "r1"), "]}");
//   std::string token = SignJwtWithOpenSsl(rsa, "r1", claims);
#pragma once

#include <google/protobuf/struct.pb.h>

#include <string>

namespace aijobs::auth {

enum class TestKeyType { kRsa, kEc };

struct TestKeyPair {
  TestKeyType type = TestKeyType::kRsa;
  std::string private_pem;
  std::string public_pem;
};

TestKeyPair GenerateTestKey(TestKeyType type);

// The public key as a JWK object (kty RSA with n/e, or kty EC crv P-256 with x/y).
std::string PublicJwk(const TestKeyPair& key, const std::string& kid);

// A compact JWS signed with OpenSSL's EVP API directly (RS256 PKCS#1 v1.5, or ES256 as the raw
// 64-byte R||S of RFC 7518), not with libjwt.
std::string SignJwtWithOpenSsl(const TestKeyPair& key, const std::string& kid,
                               const google::protobuf::Struct& claims);

std::string Base64Url(const std::string& bytes);

}  // namespace aijobs::auth
