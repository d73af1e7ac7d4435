#include "common/auth/api_key.h"

#include <gtest/gtest.h>

#include "absl/container/flat_hash_set.h"

namespace aijobs::auth {
namespace {

TEST(ApiKey, MintParseAndMatch) {
  NewApiKey k = MintApiKey();
  EXPECT_TRUE(IsApiKey(k.text));
  auto parts = ParseApiKey(k.text);
  ASSERT_TRUE(parts.ok()) << parts.status();
  EXPECT_EQ(parts->id, k.id);
  EXPECT_TRUE(ApiKeyHashMatches(k.hash, parts->secret));
  EXPECT_FALSE(ApiKeyHashMatches(k.hash, parts->secret + "x"));
  EXPECT_EQ(k.text.find(k.hash), std::string::npos);
}

TEST(ApiKey, KeysAreDistinct) {
  absl::flat_hash_set<std::string> seen;
  for (int i = 0; i < 1000; ++i) EXPECT_TRUE(seen.insert(MintApiKey().text).second);
}

TEST(ApiKey, RefusesMalformed) {
  NewApiKey k = MintApiKey();
  for (std::string bad :
       {std::string(""), std::string("aij_"), k.text.substr(0, k.text.size() - 1), k.text + "A",
        "xyz" + k.text.substr(3), k.text.substr(0, 20) + "%" + k.text.substr(21)}) {
    auto p = ParseApiKey(bad);
    EXPECT_EQ(p.status().code(), absl::StatusCode::kUnauthenticated) << bad;
  }
}

}  // namespace
}  // namespace aijobs::auth
