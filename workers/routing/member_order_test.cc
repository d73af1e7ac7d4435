#include "workers/routing/member_order.h"

#include <map>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace aijobs::worker {
namespace {

using ::testing::ElementsAre;
using ::testing::UnorderedElementsAre;

TEST(OrderMembersTest, SameSeedSameOrder) {
  std::vector<MemberWeight> m = {{1, 0}, {2, 0}, {3, 0}, {4, 0}};
  for (uint64_t seed = 0; seed < 50; ++seed) {
    EXPECT_EQ(OrderMembers(m, seed), OrderMembers(m, seed)) << seed;
  }
}

TEST(OrderMembersTest, EveryMemberOnceAndLowerPrioritiesFirst) {
  std::vector<MemberWeight> m = {{1, 2}, {5, 0}, {1, 1}, {9, 0}, {1, 2}};
  for (uint64_t seed = 0; seed < 200; ++seed) {
    std::vector<size_t> order = OrderMembers(m, seed);
    ASSERT_THAT(order, UnorderedElementsAre(0, 1, 2, 3, 4));
    EXPECT_THAT((std::vector<size_t>{order[0], order[1]}), UnorderedElementsAre(1, 3));
    EXPECT_EQ(order[2], 2u);
    EXPECT_THAT((std::vector<size_t>{order[3], order[4]}), UnorderedElementsAre(0, 4));
  }
}

TEST(OrderMembersTest, FirstPickFollowsTheWeights) {
  std::vector<MemberWeight> m = {{1, 0}, {3, 0}, {100, 1}};
  std::map<size_t, int> first;
  constexpr int kDraws = 4000;
  for (uint64_t seed = 1; seed <= kDraws; ++seed) ++first[OrderMembers(m, seed * 7919)[0]];
  // Expected 1000 / 3000; 5 standard deviations is about +-137.
  EXPECT_NEAR(first[0], 1000, 140);
  EXPECT_NEAR(first[1], 3000, 140);
  EXPECT_EQ(first[2], 0);
}

TEST(OrderMembersTest, ZeroWeightCountsAsOne) {
  std::vector<MemberWeight> m = {{0, 0}, {0, 0}};
  int zero_first = 0;
  for (uint64_t seed = 0; seed < 1000; ++seed) zero_first += OrderMembers(m, seed)[0] == 0;
  EXPECT_NEAR(zero_first, 500, 80);
}

TEST(OrderMembersTest, OneMemberAndNone) {
  EXPECT_THAT(OrderMembers({{7, 3}}, 1), ElementsAre(0));
  EXPECT_TRUE(OrderMembers({}, 1).empty());
}

}  // namespace
}  // namespace aijobs::worker
