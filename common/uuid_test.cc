#include "common/uuid.h"

#include <gtest/gtest.h>

#include <set>

namespace aijobs {
namespace {

TEST(UuidTest, NewUuidIsCanonicalVersion4AndUnique) {
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    std::string id = NewUuid();
    ASSERT_TRUE(IsUuid(id)) << id;
    EXPECT_EQ(id[14], '4') << id;
    EXPECT_TRUE(id[19] == '8' || id[19] == '9' || id[19] == 'a' || id[19] == 'b') << id;
    seen.insert(id);
  }
  EXPECT_EQ(seen.size(), 1000u);
}

TEST(UuidTest, RejectsMalformed) {
  EXPECT_FALSE(IsUuid(""));
  EXPECT_FALSE(IsUuid("not-a-uuid"));
  EXPECT_FALSE(IsUuid("0b6c5c3e-1f0a-4c1e-9d5e-6a4f3b2c1d0"));
  EXPECT_FALSE(IsUuid("0b6c5c3e-1f0a-4c1e-9d5e-6a4f3b2c1d0g"));
  EXPECT_FALSE(IsUuid("0b6c5c3e11f0a-4c1e-9d5e-6a4f3b2c1d0e"));
  EXPECT_TRUE(IsUuid("0B6C5C3E-1F0A-4C1E-9D5E-6A4F3B2C1D0E"));
}

}  // namespace
}  // namespace aijobs
