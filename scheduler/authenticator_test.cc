#include "scheduler/authenticator.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/auth/jwt.h"

namespace aijobs::scheduler {
namespace {

std::string TempFile(const std::string& name) {
  return absl::StrCat(::testing::TempDir(), "/", name, "-", getpid());
}

void Write(const std::string& path, const std::string& text) {
  std::ofstream(path + ".tmp") << text;
  ASSERT_EQ(std::rename((path + ".tmp").c_str(), path.c_str()), 0);
}

std::string Token(const std::string& secret, const std::string& kid, absl::Duration ttl,
                  const std::string& roles = "") {
  google::protobuf::Struct c;
  (*c.mutable_fields())["sub"].set_string_value("alice");
  (*c.mutable_fields())["tenant"].set_string_value("t1");
  if (!roles.empty()) (*c.mutable_fields())["roles"].set_string_value(roles);
  (*c.mutable_fields())["exp"].set_number_value(
      static_cast<double>(absl::ToUnixSeconds(absl::Now() + ttl)));
  return *auth::SignJwt(c, auth::JwtAlg::kHS256, secret, kid);
}

TEST(AuthenticatorTest, VerifiedTokensAreCachedUntilTheKeysChange) {
  const std::string keys = TempFile("jwks");
  const std::string secret(32, 'a');
  Write(keys, auth::HmacJwks("k1", secret));
  AuthOptions o;
  o.jwt_keys_file = keys;
  o.reload_interval = absl::Hours(1);  // reloads only when asked
  auto a = Authenticator::Create(o, nullptr);
  ASSERT_TRUE(a.ok()) << a.status();
  const std::string header = "Bearer " + Token(secret, "k1", absl::Minutes(5), "admin worker");
  for (int i = 0; i < 3; ++i) {
    auto id = (*a)->AuthenticateHeader(header);
    ASSERT_TRUE(id.ok()) << id.status();
    EXPECT_EQ(id->subject, "alice");
    EXPECT_EQ(id->tenant_id, "t1");
    EXPECT_TRUE(id->HasRole("admin") && id->HasRole("worker"));
    EXPECT_LT(id->expires_at, absl::Now() + absl::Minutes(6));
  }
  // The key is rotated out: the cached verification must not outlive it.
  Write(keys, auth::HmacJwks("k2", std::string(32, 'b')));
  ASSERT_TRUE((*a)->ReloadKeysIfChanged());
  auto refused = (*a)->AuthenticateHeader(header);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(refused.status().message(), "unknown kid \"k1\"");
}

TEST(AuthenticatorTest, HeaderShapesAndAnonymousCallers) {
  AuthOptions o;
  o.public_job_types = {"faq"};
  auto a = Authenticator::Create(o, nullptr);
  ASSERT_TRUE(a.ok());
  auto anon = (*a)->AuthenticateHeader("");
  ASSERT_TRUE(anon.ok());
  EXPECT_TRUE(anon->anonymous());
  EXPECT_EQ(anon->subject, "");
  EXPECT_FALSE(anon->admin());
  EXPECT_TRUE((*a)->IsPublic("faq"));
  EXPECT_FALSE((*a)->IsPublic("chat"));
  EXPECT_EQ((*a)->AuthenticateHeader("Basic abc").status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ((*a)->AuthenticateHeader("Bearer x.y.z").status().message(),
            "this scheduler accepts no JWTs (no --jwt_keys); use an API key");
  EXPECT_EQ((*a)->AuthenticateHeader("Bearer aij_0123456789abcdef_" + std::string(43, 'A'))
                .status()
                .code(),
            absl::StatusCode::kUnavailable)
      << "without a readable key list API keys are not trusted";
  AuthOptions off;
  off.enabled = false;
  auto b = Authenticator::Create(off, nullptr);
  auto who = (*b)->AuthenticateHeader("Bearer anything");
  ASSERT_TRUE(who.ok());
  EXPECT_TRUE(who->admin());
  EXPECT_FALSE(who->worker());
}

}  // namespace
}  // namespace aijobs::scheduler
