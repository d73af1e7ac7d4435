#include "gateway/gateway.h"

#include <string>

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

}  // namespace
}  // namespace aijobs::gateway
