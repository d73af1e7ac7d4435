#include "scheduler/retry_policy.h"

#include <gtest/gtest.h>

namespace aijobs::scheduler {
namespace {

TEST(RetryDelayTest, GrowsExponentiallyWithinJitterBounds) {
  absl::BitGen gen;
  RetryPolicy policy{absl::Milliseconds(100), absl::Seconds(10)};
  for (int attempt = 1; attempt <= 5; ++attempt) {
    absl::Duration full = absl::Milliseconds(100) * (1 << (attempt - 1));
    for (int i = 0; i < 200; ++i) {
      absl::Duration d = RetryDelay(attempt, policy, absl::ZeroDuration(), gen);
      EXPECT_GE(d, full / 2) << "attempt " << attempt;
      EXPECT_LE(d, full) << "attempt " << attempt;
    }
  }
}

TEST(RetryDelayTest, CapsAtMax) {
  absl::BitGen gen;
  RetryPolicy policy{absl::Seconds(1), absl::Seconds(5)};
  for (int i = 0; i < 100; ++i) {
    absl::Duration d = RetryDelay(40, policy, absl::ZeroDuration(), gen);
    EXPECT_LE(d, absl::Seconds(5));
    EXPECT_GE(d, absl::Milliseconds(2500));
  }
}

TEST(RetryDelayTest, JitterSpreadsDelays) {
  absl::BitGen gen;
  RetryPolicy policy{absl::Seconds(1), absl::Seconds(60)};
  absl::Duration first = RetryDelay(3, policy, absl::ZeroDuration(), gen);
  bool differs = false;
  for (int i = 0; i < 20 && !differs; ++i) {
    differs = RetryDelay(3, policy, absl::ZeroDuration(), gen) != first;
  }
  EXPECT_TRUE(differs);
}

TEST(RetryDelayTest, HonoursRetryAfterAsFloor) {
  absl::BitGen gen;
  RetryPolicy policy{absl::Milliseconds(10), absl::Seconds(1)};
  EXPECT_EQ(RetryDelay(1, policy, absl::Seconds(7), gen), absl::Seconds(7));
}

}  // namespace
}  // namespace aijobs::scheduler
