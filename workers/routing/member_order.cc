#include "workers/routing/member_order.h"

#include <algorithm>
#include <numeric>

namespace aijobs::worker {
namespace {

// splitmix64: a few instructions per draw and fully determined by the seed (unlike
// std::uniform_int_distribution, whose algorithm the standard leaves open).
uint64_t NextRandom(uint64_t* state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// Uniform in [0, n) for n > 0, by rejection of the biased top of the range.
uint64_t Below(uint64_t n, uint64_t* state) {
  uint64_t limit = UINT64_MAX - UINT64_MAX % n;
  uint64_t r;
  do {
    r = NextRandom(state);
  } while (r >= limit);
  return r % n;
}

}  // namespace

std::vector<size_t> OrderMembers(const std::vector<MemberWeight>& members, uint64_t seed) {
  std::vector<size_t> by_priority(members.size());
  std::iota(by_priority.begin(), by_priority.end(), 0);
  std::stable_sort(by_priority.begin(), by_priority.end(),
                   [&](size_t a, size_t b) { return members[a].priority < members[b].priority; });
  uint64_t state = seed;
  std::vector<size_t> order;
  order.reserve(members.size());
  std::vector<size_t> tier;
  for (size_t begin = 0; begin < by_priority.size();) {
    size_t end = begin;
    int priority = members[by_priority[begin]].priority;
    while (end < by_priority.size() && members[by_priority[end]].priority == priority) ++end;
    tier.assign(by_priority.begin() + begin, by_priority.begin() + end);
    while (!tier.empty()) {
      uint64_t total = 0;
      for (size_t i : tier) total += std::max<uint32_t>(1, members[i].weight);
      uint64_t r = Below(total, &state);
      size_t pick = 0;
      while (r >= std::max<uint32_t>(1, members[tier[pick]].weight)) {
        r -= std::max<uint32_t>(1, members[tier[pick++]].weight);
      }
      order.push_back(tier[pick]);
      tier.erase(tier.begin() + pick);
    }
    begin = end;
  }
  return order;
}

}  // namespace aijobs::worker
