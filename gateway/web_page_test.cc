#include "gateway/gateway.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace aijobs::gateway {
namespace {

using ::testing::HasSubstr;

// Expected hashes from `printf 'alert(1)' | openssl dgst -sha256 -binary | base64`.
TEST(ContentSecurityPolicyTest, AllowsExactlyThePageInlineBlocksByHash) {
  std::string csp = ContentSecurityPolicyFor(
      "<html><style>p{}</style><script>alert(1)</script><script>alert(1)</script></html>");
  EXPECT_THAT(csp, HasSubstr("default-src 'none'"));
  EXPECT_THAT(csp, HasSubstr("script-src 'sha256-bhHHL3z2vDgxUt0W3dWQOrprscmda2Y5pLsLg4GF+pI=' "
                             "'sha256-bhHHL3z2vDgxUt0W3dWQOrprscmda2Y5pLsLg4GF+pI=';"));
  EXPECT_THAT(csp, HasSubstr("style-src 'sha256-gG2yISYereRMiG2lMXrbiUgi0Ubw9p7QCeWcroOvy9Y=';"));
  EXPECT_THAT(csp, HasSubstr("frame-ancestors 'none'"));
  EXPECT_THAT(csp, ::testing::Not(HasSubstr("unsafe-inline")));
}

TEST(ContentSecurityPolicyTest, TheChatPageHasOneScriptAndOneStyle) {
  std::string csp = ContentSecurityPolicyFor(WebIndexHtml());
  EXPECT_THAT(csp, HasSubstr("script-src 'sha256-"));
  EXPECT_THAT(csp, HasSubstr("style-src 'sha256-"));
}

TEST(HostAllowedTest, MatchesNamesWithoutCaseOrPortAndSubdomainsOnlyWhenAsked) {
  const std::vector<std::string> defaults = GatewayOptions{}.allowed_hosts;
  EXPECT_TRUE(HostAllowed("localhost:8080", defaults));
  EXPECT_TRUE(HostAllowed("127.0.0.1", defaults));
  EXPECT_TRUE(HostAllowed("[::1]:8080", defaults));
  EXPECT_TRUE(HostAllowed("LocalHost.:80", defaults));
  EXPECT_TRUE(HostAllowed("", defaults)) << "HTTP/1.0 without Host";
  // DNS rebinding: an attacker's name that resolves to 127.0.0.1.
  EXPECT_FALSE(HostAllowed("rebind.attacker.example:8080", defaults));
  EXPECT_FALSE(HostAllowed("localhost.attacker.example", defaults));
  EXPECT_FALSE(HostAllowed("127.0.0.1.nip.io", defaults));

  const std::vector<std::string> configured = {"api.example.com", "*.apps.example.com",
                                               "admin.example.com:8443"};
  EXPECT_TRUE(HostAllowed("API.example.com:443", configured));
  EXPECT_TRUE(HostAllowed("a.apps.example.com", configured));
  EXPECT_TRUE(HostAllowed("b.a.apps.example.com", configured));
  EXPECT_FALSE(HostAllowed("apps.example.com", configured));
  EXPECT_FALSE(HostAllowed("evilapps.example.com", configured));
  EXPECT_TRUE(HostAllowed("admin.example.com:8443", configured));
  EXPECT_FALSE(HostAllowed("admin.example.com:80", configured));
  EXPECT_FALSE(HostAllowed("example.com", configured));
  EXPECT_TRUE(HostAllowed("anything:1", {"*"}));
}

}  // namespace
}  // namespace aijobs::gateway
