#include "common/auth/jwt.h"

#include <google/protobuf/util/json_util.h>
#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>

#include <cmath>
#include <cstdlib>
#include <memory>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace aijobs::auth {
namespace {

using google::protobuf::Struct;
using google::protobuf::Value;

// The largest token accepted: far above any real one (a few KB), small enough that a
// forged one costs little to refuse.
constexpr size_t kMaxTokenBytes = 16 * 1024;

struct JwtDeleter {
  void operator()(jwt_t* j) const { jwt_free(j); }
};
using JwtPtr = std::unique_ptr<jwt_t, JwtDeleter>;
struct BioDeleter {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct PkeyDeleter {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyDeleter>;
struct FreeDeleter {
  void operator()(char* p) const { std::free(p); }
};

absl::Status Unauthenticated(std::string_view why) {
  return absl::UnauthenticatedError(std::string(why));
}

jwt_alg_t LibAlg(JwtAlg alg) {
  switch (alg) {
    case JwtAlg::kHS256:
      return JWT_ALG_HS256;
    case JwtAlg::kRS256:
      return JWT_ALG_RS256;
    case JwtAlg::kES256:
      return JWT_ALG_ES256;
  }
  return JWT_ALG_INVAL;
}

bool AlgFromName(std::string_view name, JwtAlg* alg) {
  if (name == "HS256") {
    *alg = JwtAlg::kHS256;
  } else if (name == "RS256") {
    *alg = JwtAlg::kRS256;
  } else if (name == "ES256") {
    *alg = JwtAlg::kES256;
  } else {
    return false;
  }
  return true;
}

absl::StatusOr<Struct> ParseJsonObject(std::string_view json, std::string_view what) {
  Struct out;
  auto s = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece(json.data(), json.size()), &out);
  if (!s.ok())
    return absl::InvalidArgumentError(absl::StrCat(std::string(what), " is not a JSON object"));
  return out;
}

std::string StringField(const Struct& s, const std::string& name) {
  auto it = s.fields().find(name);
  if (it == s.fields().end() || it->second.kind_case() != Value::kStringValue) return "";
  return it->second.string_value();
}

bool Base64UrlField(const Struct& s, const std::string& name, std::string* out) {
  std::string v = StringField(s, name);
  return !v.empty() && absl::WebSafeBase64Unescape(v, out) && !out->empty();
}

absl::StatusOr<std::string> PemOf(EVP_PKEY* key) {
  std::unique_ptr<BIO, BioDeleter> bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PUBKEY(bio.get(), key) != 1) {
    return absl::InternalError("cannot encode a public key as PEM");
  }
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

// An RSA or EC public key from its JWK parameters, as PEM.
absl::StatusOr<std::string> PemFromJwk(const Struct& jwk, const std::string& kty) {
  std::unique_ptr<OSSL_PARAM_BLD, decltype(&OSSL_PARAM_BLD_free)> bld(OSSL_PARAM_BLD_new(),
                                                                      &OSSL_PARAM_BLD_free);
  std::unique_ptr<BIGNUM, decltype(&BN_free)> n(nullptr, &BN_free), e(nullptr, &BN_free);
  std::string pub;
  const char* type = nullptr;
  if (kty == "RSA") {
    std::string nb, eb;
    if (!Base64UrlField(jwk, "n", &nb) || !Base64UrlField(jwk, "e", &eb)) {
      return absl::InvalidArgumentError("an RSA key needs base64url n and e");
    }
    if (nb.size() < 256) return absl::InvalidArgumentError("an RSA key must have >= 2048 bits");
    n.reset(BN_bin2bn(reinterpret_cast<const unsigned char*>(nb.data()),
                      static_cast<int>(nb.size()), nullptr));
    e.reset(BN_bin2bn(reinterpret_cast<const unsigned char*>(eb.data()),
                      static_cast<int>(eb.size()), nullptr));
    if (!n || !e || !OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, n.get()) ||
        !OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, e.get())) {
      return absl::InternalError("cannot build an RSA key");
    }
    type = "RSA";
  } else {
    if (StringField(jwk, "crv") != "P-256") {
      return absl::InvalidArgumentError("an EC key must be on curve P-256 (ES256)");
    }
    std::string x, y;
    if (!Base64UrlField(jwk, "x", &x) || !Base64UrlField(jwk, "y", &y) || x.size() != 32 ||
        y.size() != 32) {
      return absl::InvalidArgumentError("an EC P-256 key needs 32-byte base64url x and y");
    }
    pub = absl::StrCat("\x04", x, y);
    static char kGroup[] = "prime256v1";
    if (!OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, kGroup, 0) ||
        !OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, pub.data(),
                                          pub.size())) {
      return absl::InternalError("cannot build an EC key");
    }
    type = "EC";
  }
  std::unique_ptr<OSSL_PARAM, decltype(&OSSL_PARAM_free)> params(OSSL_PARAM_BLD_to_param(bld.get()),
                                                                 &OSSL_PARAM_free);
  std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> ctx(
      EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr), &EVP_PKEY_CTX_free);
  EVP_PKEY* raw = nullptr;
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
      EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.get()) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("the ", kty, " key parameters are not a key"));
  }
  PkeyPtr key(raw);
  return PemOf(key.get());
}

// One key of a JWKS; an error says why it is skipped.
absl::StatusOr<JwtKey> KeyFromJwk(const Struct& jwk) {
  JwtKey key;
  key.kid = StringField(jwk, "kid");
  const std::string kty = StringField(jwk, "kty");
  const std::string use = StringField(jwk, "use");
  if (!use.empty() && use != "sig") return absl::InvalidArgumentError("not a signing key");
  const std::string alg = StringField(jwk, "alg");
  JwtAlg want;
  if (kty == "oct") {
    want = JwtAlg::kHS256;
  } else if (kty == "RSA") {
    want = JwtAlg::kRS256;
  } else if (kty == "EC") {
    want = JwtAlg::kES256;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unsupported kty \"", kty, "\""));
  }
  if (!alg.empty()) {
    JwtAlg given;
    if (!AlgFromName(alg, &given) || given != want) {
      return absl::InvalidArgumentError(
          absl::StrCat("alg \"", alg, "\" is not supported for kty ", kty));
    }
  }
  key.alg = want;
  if (kty == "oct") {
    if (!Base64UrlField(jwk, "k", &key.material)) {
      return absl::InvalidArgumentError("an oct key needs base64url k");
    }
    if (key.material.size() < 32) {
      return absl::InvalidArgumentError("an HS256 secret must have at least 32 bytes");
    }
    return key;
  }
  auto pem = PemFromJwk(jwk, kty);
  if (!pem.ok()) return pem.status();
  key.material = *std::move(pem);
  return key;
}

absl::StatusOr<JwtKeySet> ParseJwks(std::string_view text) {
  auto doc = ParseJsonObject(text, "the JWKS");
  if (!doc.ok()) return doc.status();
  auto it = doc->fields().find("keys");
  if (it == doc->fields().end() || it->second.kind_case() != Value::kListValue) {
    return absl::InvalidArgumentError("a JWKS needs a \"keys\" array");
  }
  JwtKeySet set;
  int index = 0;
  for (const Value& v : it->second.list_value().values()) {
    if (v.kind_case() != Value::kStructValue) {
      return absl::InvalidArgumentError(absl::StrCat("JWKS key ", index, " is not an object"));
    }
    auto key = KeyFromJwk(v.struct_value());
    const std::string kid = StringField(v.struct_value(), "kid");
    if (key.ok()) {
      set.keys.push_back(*std::move(key));
    } else {
      set.skipped.push_back(absl::StrCat("key ", index, kid.empty() ? "" : " (kid " + kid + ")",
                                         ": ", key.status().message()));
    }
    ++index;
  }
  return set;
}

absl::StatusOr<JwtKeySet> ParsePem(std::string_view text) {
  JwtKeySet set;
  std::unique_ptr<BIO, BioDeleter> bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
  while (true) {
    PkeyPtr key(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr));
    if (!key) break;
    JwtKey k;
    if (EVP_PKEY_is_a(key.get(), "RSA")) {
      if (EVP_PKEY_get_bits(key.get()) < 2048) {
        return absl::InvalidArgumentError("an RSA key must have >= 2048 bits");
      }
      k.alg = JwtAlg::kRS256;
    } else if (EVP_PKEY_is_a(key.get(), "EC")) {
      char group[64] = {0};
      size_t len = 0;
      if (EVP_PKEY_get_utf8_string_param(key.get(), OSSL_PKEY_PARAM_GROUP_NAME, group,
                                         sizeof(group), &len) != 1 ||
          std::string_view(group) != "prime256v1") {
        return absl::InvalidArgumentError("an EC key must be on curve P-256 (ES256)");
      }
      k.alg = JwtAlg::kES256;
    } else {
      return absl::InvalidArgumentError("a PEM key must be RSA or EC P-256");
    }
    auto pem = PemOf(key.get());
    if (!pem.ok()) return pem.status();
    k.material = *std::move(pem);
    set.keys.push_back(std::move(k));
  }
  if (set.keys.empty()) {
    return absl::InvalidArgumentError("no PEM public key (BEGIN PUBLIC KEY) could be read");
  }
  return set;
}

bool NumberClaim(const Struct& claims, const std::string& name, double* out) {
  auto it = claims.fields().find(name);
  if (it == claims.fields().end() || it->second.kind_case() != Value::kNumberValue) return false;
  *out = it->second.number_value();
  return std::isfinite(*out);
}

bool HasClaim(const Struct& claims, const std::string& name) {
  return claims.fields().contains(name);
}

bool AudienceMatches(const Struct& claims, const std::string& audience) {
  auto it = claims.fields().find("aud");
  if (it == claims.fields().end()) return false;
  if (it->second.kind_case() == Value::kStringValue) return it->second.string_value() == audience;
  if (it->second.kind_case() != Value::kListValue) return false;
  for (const Value& v : it->second.list_value().values()) {
    if (v.kind_case() == Value::kStringValue && v.string_value() == audience) return true;
  }
  return false;
}

}  // namespace

const char* JwtAlgName(JwtAlg alg) {
  switch (alg) {
    case JwtAlg::kHS256:
      return "HS256";
    case JwtAlg::kRS256:
      return "RS256";
    case JwtAlg::kES256:
      return "ES256";
  }
  return "?";
}

absl::StatusOr<JwtKeySet> ParseJwtKeys(std::string_view text) {
  absl::string_view trimmed =
      absl::StripAsciiWhitespace(absl::string_view(text.data(), text.size()));
  absl::StatusOr<JwtKeySet> set = absl::StartsWith(trimmed, "{")
                                      ? ParseJwks(std::string_view(trimmed.data(), trimmed.size()))
                                      : ParsePem(text);
  if (!set.ok()) return set;
  if (set->keys.empty()) {
    std::string why = set->skipped.empty() ? "" : absl::StrCat(" (", set->skipped[0], ")");
    return absl::InvalidArgumentError(absl::StrCat("no usable key", why));
  }
  return set;
}

absl::StatusOr<Struct> VerifyJwt(std::string_view token, const JwtKeySet& keys,
                                 const JwtCheck& check, absl::Time now) {
  if (token.empty()) return Unauthenticated("empty token");
  if (token.size() > kMaxTokenBytes) return Unauthenticated("token too large");
  std::vector<absl::string_view> parts =
      absl::StrSplit(absl::string_view(token.data(), token.size()), '.');
  if (parts.size() != 3 || parts[0].empty() || parts[1].empty()) {
    return Unauthenticated("not a signed JWT (header.payload.signature)");
  }
  if (parts[2].empty()) return Unauthenticated("unsigned token (alg none is not accepted)");
  // The header alone is read first, to pick the key and to refuse an algorithm the key was
  // not configured for before any signature check runs.
  std::string header_json;
  if (!absl::WebSafeBase64Unescape(parts[0], &header_json)) {
    return Unauthenticated("the token header is not base64url");
  }
  auto header = ParseJsonObject(header_json, "the token header");
  if (!header.ok()) return Unauthenticated("the token header is not a JSON object");
  const std::string alg_name = StringField(*header, "alg");
  JwtAlg alg;
  if (!AlgFromName(alg_name, &alg)) {
    return Unauthenticated(absl::StrCat("algorithm \"", alg_name.substr(0, 16),
                                        "\" is not accepted (HS256, RS256, ES256)"));
  }
  // The key named by kid; without one (or with a kid no key has), the keys without a kid
  // for that algorithm, and for a token without kid every key of that algorithm.
  const std::string kid = StringField(*header, "kid");
  std::vector<const JwtKey*> candidates;
  bool kid_known = false;
  for (const JwtKey& k : keys.keys) {
    if (!kid.empty() && k.kid == kid) {
      kid_known = true;
      if (k.alg == alg) candidates.push_back(&k);
    }
  }
  if (kid_known && candidates.empty()) {
    return Unauthenticated(absl::StrCat("key \"", kid.substr(0, 64), "\" is not for ", alg_name));
  }
  if (!kid_known) {
    for (const JwtKey& k : keys.keys) {
      if (k.alg == alg && (k.kid.empty() || kid.empty())) candidates.push_back(&k);
    }
  }
  if (candidates.empty()) {
    return Unauthenticated(kid.empty() ? absl::StrCat("no ", alg_name, " key is configured")
                                       : absl::StrCat("unknown kid \"", kid.substr(0, 64), "\""));
  }
  constexpr size_t kMaxCandidates = 8;
  if (candidates.size() > kMaxCandidates) candidates.resize(kMaxCandidates);
  const std::string token_str(token);
  JwtPtr jwt;
  for (const JwtKey* k : candidates) {
    jwt_t* raw = nullptr;
    int rc = jwt_decode(&raw, token_str.c_str(),
                        reinterpret_cast<const unsigned char*>(k->material.data()),
                        static_cast<int>(k->material.size()));
    JwtPtr decoded(raw);
    if (rc == 0 && decoded && jwt_get_alg(decoded.get()) == LibAlg(k->alg)) {
      jwt = std::move(decoded);
      break;
    }
  }
  if (!jwt) return Unauthenticated("bad signature");
  std::unique_ptr<char, FreeDeleter> grants(jwt_get_grants_json(jwt.get(), nullptr));
  if (!grants) return Unauthenticated("the token claims are not a JSON object");
  auto claims = ParseJsonObject(grants.get(), "the token claims");
  if (!claims.ok()) return Unauthenticated("the token claims are not a JSON object");
  const double now_s = absl::ToDoubleSeconds(now - absl::UnixEpoch());
  const double leeway_s = absl::ToDoubleSeconds(check.leeway);
  double exp = 0, nbf = 0;
  if (!NumberClaim(*claims, "exp", &exp)) return Unauthenticated("the token has no exp");
  if (now_s > exp + leeway_s) return Unauthenticated("token expired");
  if (HasClaim(*claims, "nbf")) {
    if (!NumberClaim(*claims, "nbf", &nbf)) return Unauthenticated("nbf is not a number");
    if (now_s + leeway_s < nbf) return Unauthenticated("token not yet valid (nbf)");
  }
  if (StringField(*claims, "sub").empty()) return Unauthenticated("the token has no sub");
  if (!check.issuer.empty() && StringField(*claims, "iss") != check.issuer) {
    return Unauthenticated("wrong issuer");
  }
  if (!check.audience.empty() && !AudienceMatches(*claims, check.audience)) {
    return Unauthenticated("wrong audience");
  }
  return claims;
}

absl::StatusOr<std::string> SignJwt(const Struct& claims, JwtAlg alg, std::string_view key,
                                    std::string_view kid) {
  std::string json;
  if (!google::protobuf::util::MessageToJsonString(claims, &json).ok()) {
    return absl::InvalidArgumentError("claims cannot be written as JSON");
  }
  jwt_t* raw = nullptr;
  if (jwt_new(&raw) != 0) return absl::InternalError("jwt_new failed");
  JwtPtr jwt(raw);
  if (jwt_add_grants_json(jwt.get(), json.c_str()) != 0) {
    return absl::InvalidArgumentError("claims were refused by libjwt");
  }
  if (!kid.empty() && jwt_add_header(jwt.get(), "kid", std::string(kid).c_str()) != 0) {
    return absl::InvalidArgumentError("kid was refused by libjwt");
  }
  if (jwt_set_alg(jwt.get(), LibAlg(alg), reinterpret_cast<const unsigned char*>(key.data()),
                  static_cast<int>(key.size())) != 0) {
    return absl::InvalidArgumentError("the signing key was refused");
  }
  std::unique_ptr<char, FreeDeleter> out(jwt_encode_str(jwt.get()));
  if (!out) return absl::InvalidArgumentError(absl::StrCat("cannot sign with ", JwtAlgName(alg)));
  return std::string(out.get());
}

absl::StatusOr<SigningKey> SigningKeyFromFile(std::string_view text, std::string_view kid) {
  absl::string_view trimmed =
      absl::StripAsciiWhitespace(absl::string_view(text.data(), text.size()));
  SigningKey out;
  out.kid = std::string(kid);
  if (absl::StartsWith(trimmed, "{")) {
    auto set = ParseJwks(std::string_view(trimmed.data(), trimmed.size()));
    if (!set.ok()) return set.status();
    for (const JwtKey& k : set->keys) {
      if (k.alg != JwtAlg::kHS256 || (!kid.empty() && k.kid != kid)) continue;
      out.material = k.material;
      out.kid = k.kid;
      return out;
    }
    return absl::InvalidArgumentError(
        kid.empty()
            ? std::string("the JWKS has no HS256 (kty oct) key to sign with")
            : absl::StrCat("the JWKS has no HS256 key with kid \"", std::string(kid), "\""));
  }
  std::unique_ptr<BIO, BioDeleter> bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
  PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!key) {
    return absl::InvalidArgumentError("neither a JWKS nor a PEM private key (BEGIN PRIVATE KEY)");
  }
  if (EVP_PKEY_is_a(key.get(), "RSA")) {
    out.alg = JwtAlg::kRS256;
  } else if (EVP_PKEY_is_a(key.get(), "EC")) {
    out.alg = JwtAlg::kES256;
  } else {
    return absl::InvalidArgumentError("a PEM private key must be RSA or EC P-256");
  }
  out.material = std::string(text);
  return out;
}

std::string HmacJwks(std::string_view kid, std::string_view secret) {
  std::string k;
  absl::WebSafeBase64Escape(absl::string_view(secret.data(), secret.size()), &k);
  return absl::StrCat(R"({"keys":[{"kty":"oct","use":"sig","alg":"HS256","kid":")",
                      std::string(kid), R"(","k":")", k, "\"}]}\n");
}

}  // namespace aijobs::auth
