#include "common/auth/testing/test_keys.h"

#include <google/protobuf/util/json_util.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include <memory>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace aijobs::auth {
namespace {

struct PkeyDeleter {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyDeleter>;

std::string BioString(BIO* b) {
  char* data = nullptr;
  long n = BIO_get_mem_data(b, &data);
  std::string out(data, static_cast<size_t>(n));
  BIO_free(b);
  return out;
}

PkeyPtr ReadPrivate(const std::string& pem) {
  BIO* b = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  PkeyPtr key(PEM_read_bio_PrivateKey(b, nullptr, nullptr, nullptr));
  BIO_free(b);
  return key;
}

std::string BnParam(EVP_PKEY* key, const char* name) {
  BIGNUM* bn = nullptr;
  EVP_PKEY_get_bn_param(key, name, &bn);
  std::string out(static_cast<size_t>(BN_num_bytes(bn)), '\0');
  BN_bn2bin(bn, reinterpret_cast<unsigned char*>(out.data()));
  BN_free(bn);
  return out;
}

}  // namespace

std::string Base64Url(const std::string& bytes) {
  std::string out;
  absl::WebSafeBase64Escape(bytes, &out);
  return out;
}

TestKeyPair GenerateTestKey(TestKeyType type) {
  TestKeyPair kp;
  kp.type = type;
  PkeyPtr key(type == TestKeyType::kRsa ? EVP_RSA_gen(2048) : EVP_EC_gen("P-256"));
  BIO* b = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(b, key.get(), nullptr, nullptr, 0, nullptr, nullptr);
  kp.private_pem = BioString(b);
  b = BIO_new(BIO_s_mem());
  PEM_write_bio_PUBKEY(b, key.get());
  kp.public_pem = BioString(b);
  return kp;
}

std::string PublicJwk(const TestKeyPair& kp, const std::string& kid) {
  PkeyPtr key = ReadPrivate(kp.private_pem);
  if (kp.type == TestKeyType::kRsa) {
    return absl::StrCat(R"({"kty":"RSA","alg":"RS256","kid":")", kid, R"(","n":")",
                        Base64Url(BnParam(key.get(), OSSL_PKEY_PARAM_RSA_N)), R"(","e":")",
                        Base64Url(BnParam(key.get(), OSSL_PKEY_PARAM_RSA_E)), R"("})");
  }
  unsigned char pub[65];
  size_t len = 0;
  EVP_PKEY_get_octet_string_param(key.get(), OSSL_PKEY_PARAM_PUB_KEY, pub, sizeof(pub), &len);
  const std::string p(reinterpret_cast<char*>(pub), len);
  return absl::StrCat(R"({"kty":"EC","crv":"P-256","alg":"ES256","kid":")", kid, R"(","x":")",
                      Base64Url(p.substr(1, 32)), R"(","y":")", Base64Url(p.substr(33, 32)),
                      R"("})");
}

std::string SignJwtWithOpenSsl(const TestKeyPair& kp, const std::string& kid,
                               const google::protobuf::Struct& claims) {
  const bool ec = kp.type == TestKeyType::kEc;
  std::string payload;
  (void)google::protobuf::util::MessageToJsonString(claims, &payload);
  const std::string input =
      absl::StrCat(Base64Url(absl::StrCat(R"({"alg":")", ec ? "ES256" : "RS256",
                                          R"(","typ":"JWT","kid":")", kid, R"("})")),
                   ".", Base64Url(payload));
  PkeyPtr key = ReadPrivate(kp.private_pem);
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestSignInit(ctx, nullptr, EVP_sha256(), nullptr, key.get());
  size_t len = 0;
  const auto* in = reinterpret_cast<const unsigned char*>(input.data());
  EVP_DigestSign(ctx, nullptr, &len, in, input.size());
  std::string sig(len, '\0');
  EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &len, in, input.size());
  sig.resize(len);
  EVP_MD_CTX_free(ctx);
  if (ec) {
    const auto* p = reinterpret_cast<const unsigned char*>(sig.data());
    ECDSA_SIG* es = d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(sig.size()));
    std::string raw(64, '\0');
    BN_bn2binpad(ECDSA_SIG_get0_r(es), reinterpret_cast<unsigned char*>(raw.data()), 32);
    BN_bn2binpad(ECDSA_SIG_get0_s(es), reinterpret_cast<unsigned char*>(raw.data()) + 32, 32);
    ECDSA_SIG_free(es);
    sig = raw;
  }
  return absl::StrCat(input, ".", Base64Url(sig));
}

}  // namespace aijobs::auth
