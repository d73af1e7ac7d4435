// The order in which one call tries the members of a model group: by priority, and within a
// priority by weighted random sampling without replacement (the first pick spreads the load
// by weight, the rest give the fallback order). A pure function of the members and a seed.
//
//   std::vector<MemberWeight> members = {{.weight = 1}, {.weight = 3}, {.weight = 1, .priority =
//   1}}; std::vector<size_t> order = OrderMembers(members, seed);  // {1, 0, 2} three times in four
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace aijobs::worker {

struct MemberWeight {
  uint32_t weight = 1;  // 0 counts as 1.
  int priority = 0;     // Lower goes first.
};

// Returns the indexes of `members` in the order to try them: every lower priority before
// any higher one; within a priority, each next member is drawn with probability
// proportional to its weight among those not drawn yet. The same `members` and `seed` always
// give the same order.
std::vector<size_t> OrderMembers(const std::vector<MemberWeight>& members, uint64_t seed);

}  // namespace aijobs::worker
