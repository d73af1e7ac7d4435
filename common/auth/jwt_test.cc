#include "common/auth/jwt.h"

#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/auth/testing/test_keys.h"

namespace aijobs::auth {
namespace {

using google::protobuf::Struct;

const absl::Time kNow = absl::FromUnixSeconds(1'800'000'000);
const std::string kSecret(40, 's');

Struct Claims(const std::string& json) {
  Struct s;
  EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(json, &s).ok()) << json;
  return s;
}

Struct Valid() {
  return Claims(absl::StrCat(R"({"sub":"u1","tenant":"t1","iss":"https://idp","aud":"aijobs",)",
                             R"("exp":)", absl::ToUnixSeconds(kNow) + 600, "}"));
}

std::string B64(const std::string& s) { return Base64Url(s); }

JwtCheck Check() { return JwtCheck{"https://idp", "aijobs", absl::Seconds(30)}; }

JwtKeySet Keys(const std::string& text) {
  auto k = ParseJwtKeys(text);
  EXPECT_TRUE(k.ok()) << k.status();
  return k.ok() ? *k : JwtKeySet{};
}

std::string Refusal(const std::string& token, const JwtKeySet& keys, JwtCheck check = Check(),
                    absl::Time now = kNow) {
  auto r = VerifyJwt(token, keys, check, now);
  if (r.ok()) return "accepted";
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnauthenticated) << r.status();
  return std::string(r.status().message());
}

TEST(Jwt, Hs256RoundTripAndClaims) {
  JwtKeySet keys = Keys(HmacJwks("k1", kSecret));
  auto token = SignJwt(Valid(), JwtAlg::kHS256, kSecret, "k1");
  ASSERT_TRUE(token.ok()) << token.status();
  auto claims = VerifyJwt(*token, keys, Check(), kNow);
  ASSERT_TRUE(claims.ok()) << claims.status();
  EXPECT_EQ(claims->fields().at("sub").string_value(), "u1");
  EXPECT_EQ(claims->fields().at("tenant").string_value(), "t1");
}

TEST(Jwt, Rs256AndEs256FromPemAndJwks) {
  for (bool rsa : {true, false}) {
    SCOPED_TRACE(rsa ? "RS256" : "ES256");
    TestKeyPair kp = GenerateTestKey(rsa ? TestKeyType::kRsa : TestKeyType::kEc);
    const JwtAlg alg = rsa ? JwtAlg::kRS256 : JwtAlg::kES256;
    auto token = SignJwt(Valid(), alg, kp.private_pem, "kid-a");
    ASSERT_TRUE(token.ok()) << token.status();
    JwtKeySet pem = Keys(kp.public_pem);
    ASSERT_EQ(pem.keys.size(), 1u);
    EXPECT_EQ(pem.keys[0].alg, alg);
    EXPECT_EQ(Refusal(*token, pem), "accepted");  // PEM keys have no kid: they match any
    JwtKeySet jwks = Keys(absl::StrCat(R"({"keys":[)", PublicJwk(kp, "kid-a"), "]}"));
    EXPECT_EQ(Refusal(*token, jwks), "accepted");
    // Another issuer's signature, made with OpenSSL alone.
    EXPECT_EQ(Refusal(SignJwtWithOpenSsl(kp, "kid-a", Valid()), jwks), "accepted");
    // The same claims signed by another key of the same kind.
    TestKeyPair other = GenerateTestKey(kp.type);
    auto forged = SignJwt(Valid(), alg, other.private_pem, "kid-a");
    EXPECT_EQ(Refusal(*forged, jwks), "bad signature");
  }
}

TEST(Jwt, KeyRotationPicksByKid) {
  const std::string old_secret(32, 'o'), new_secret(32, 'n');
  JwtKeySet both =
      Keys(absl::StrCat(R"({"keys":[{"kty":"oct","kid":"old","k":")", B64(old_secret),
                        R"("},{"kty":"oct","kid":"new","k":")", B64(new_secret), R"("}]})"));
  EXPECT_EQ(Refusal(*SignJwt(Valid(), JwtAlg::kHS256, old_secret, "old"), both), "accepted");
  EXPECT_EQ(Refusal(*SignJwt(Valid(), JwtAlg::kHS256, new_secret, "new"), both), "accepted");
  EXPECT_EQ(Refusal(*SignJwt(Valid(), JwtAlg::kHS256, new_secret, "old"), both), "bad signature");
  EXPECT_EQ(Refusal(*SignJwt(Valid(), JwtAlg::kHS256, new_secret, "k9"), both),
            "unknown kid \"k9\"");
  // No kid: every HS256 key is tried.
  EXPECT_EQ(Refusal(*SignJwt(Valid(), JwtAlg::kHS256, new_secret, ""), both), "accepted");
}

TEST(Jwt, RefusesAlgNoneAndAlgorithmConfusion) {
  TestKeyPair kp = GenerateTestKey(TestKeyType::kRsa);
  JwtKeySet rsa = Keys(kp.public_pem);
  const std::string body = B64(R"({"sub":"admin","exp":9999999999})");
  EXPECT_EQ(Refusal(absl::StrCat(B64(R"({"alg":"none"})"), ".", body, "."), rsa),
            "unsigned token (alg none is not accepted)");
  EXPECT_EQ(Refusal(absl::StrCat(B64(R"({"alg":"none"})"), ".", body, ".x"), rsa),
            "algorithm \"none\" is not accepted (HS256, RS256, ES256)");
  // HS256 "signed" with the RSA public key as the secret (the classic confusion attack).
  auto confused = SignJwt(Valid(), JwtAlg::kHS256, kp.public_pem, "");
  ASSERT_TRUE(confused.ok());
  EXPECT_EQ(Refusal(*confused, rsa), "no HS256 key is configured");
  JwtKeySet jwks = Keys(absl::StrCat(R"({"keys":[)", PublicJwk(kp, "r1"), "]}"));
  auto confused_kid = SignJwt(Valid(), JwtAlg::kHS256, jwks.keys[0].material, "r1");
  EXPECT_EQ(Refusal(*confused_kid, jwks), "key \"r1\" is not for HS256");
  EXPECT_EQ(Refusal(absl::StrCat(B64(R"({"alg":"RS512"})"), ".", body, ".c2ln"), rsa),
            "algorithm \"RS512\" is not accepted (HS256, RS256, ES256)");
}

TEST(Jwt, ChecksTimeIssuerAudienceAndSubject) {
  JwtKeySet keys = Keys(HmacJwks("k1", kSecret));
  auto sign = [&](const std::string& json) {
    return *SignJwt(Claims(json), JwtAlg::kHS256, kSecret, "k1");
  };
  const int64_t now = absl::ToUnixSeconds(kNow);
  const std::string ok_tail = R"(,"iss":"https://idp","aud":"aijobs")";
  EXPECT_EQ(Refusal(sign(absl::StrCat(R"({"sub":"u","exp":)", now - 31, ok_tail, "}")), keys),
            "token expired");
  EXPECT_EQ(Refusal(sign(absl::StrCat(R"({"sub":"u","exp":)", now - 29, ok_tail, "}")), keys),
            "accepted");  // within the leeway
  EXPECT_EQ(Refusal(sign(absl::StrCat(R"({"sub":"u")", ok_tail, "}")), keys),
            "the token has no exp");
  EXPECT_EQ(Refusal(sign(absl::StrCat(R"({"sub":"u","exp":"soon")", ok_tail, "}")), keys),
            "the token has no exp");
  EXPECT_EQ(Refusal(sign(absl::StrCat(R"({"sub":"u","exp":)", now + 60, R"(,"nbf":)", now + 60,
                                      ok_tail, "}")),
                    keys),
            "token not yet valid (nbf)");
  EXPECT_EQ(Refusal(sign(absl::StrCat(R"({"exp":)", now + 60, ok_tail, "}")), keys),
            "the token has no sub");
  EXPECT_EQ(Refusal(sign(absl::StrCat(R"({"sub":"u","exp":)", now + 60,
                                      R"(,"iss":"evil","aud":"aijobs"})")),
                    keys),
            "wrong issuer");
  EXPECT_EQ(Refusal(sign(absl::StrCat(R"({"sub":"u","exp":)", now + 60,
                                      R"(,"iss":"https://idp","aud":"other"})")),
                    keys),
            "wrong audience");
  EXPECT_EQ(Refusal(sign(absl::StrCat(R"({"sub":"u","exp":)", now + 60,
                                      R"(,"iss":"https://idp","aud":["x","aijobs"]})")),
                    keys),
            "accepted");
}

TEST(Jwt, RefusesMalformedTokens) {
  JwtKeySet keys = Keys(HmacJwks("k1", kSecret));
  EXPECT_EQ(Refusal("", keys), "empty token");
  EXPECT_EQ(Refusal("abc", keys), "not a signed JWT (header.payload.signature)");
  EXPECT_EQ(Refusal("a.b.c.d", keys), "not a signed JWT (header.payload.signature)");
  EXPECT_EQ(Refusal("!!.e30.c2ln", keys), "the token header is not base64url");
  EXPECT_EQ(Refusal(absl::StrCat(B64("[1]"), ".e30.c2ln"), keys),
            "the token header is not a JSON object");
  EXPECT_EQ(Refusal(std::string(20000, 'a'), keys), "token too large");
  std::string token = *SignJwt(Valid(), JwtAlg::kHS256, kSecret, "k1");
  std::vector<std::string> parts = absl::StrSplit(token, '.');
  parts[1] = B64(R"({"sub":"admin","exp":9999999999,"roles":["admin"]})");  // tampered
  EXPECT_EQ(Refusal(absl::StrJoin(parts, "."), keys), "bad signature");
}

TEST(Jwt, KeyFiles) {
  auto empty = ParseJwtKeys(R"({"keys":[]})");
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  auto weak = ParseJwtKeys(HmacJwks("k", "short"));
  EXPECT_EQ(weak.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(weak.status().message().find("at least 32 bytes"), std::string::npos);
  auto none = ParseJwtKeys("not a key");
  EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument);
  // Keys this build cannot use are skipped and reported; the rest load.
  auto mixed = ParseJwtKeys(absl::StrCat(R"({"keys":[{"kty":"OKP","crv":"Ed25519","x":"AA"},)",
                                         R"({"kty":"RSA","use":"enc","n":"AQAB","e":"AQAB"},)",
                                         R"({"kty":"oct","kid":"h","k":")", B64(kSecret), "\"}]}"));
  ASSERT_TRUE(mixed.ok()) << mixed.status();
  EXPECT_EQ(mixed->keys.size(), 1u);
  EXPECT_EQ(mixed->skipped.size(), 2u);
  auto small_rsa = ParseJwtKeys(R"({"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]})");
  EXPECT_EQ(small_rsa.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace aijobs::auth
