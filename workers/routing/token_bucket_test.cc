#include "workers/routing/token_bucket.h"

#include <memory>

#include "gtest/gtest.h"

namespace aijobs::worker {
namespace {

// A clock the test moves by hand.
struct FakeClock {
  absl::Time now = absl::FromUnixSeconds(1000000);
  Clock fn() {
    return [this] { return now; };
  }
};

TEST(TokenBucketTest, StartsFullThenHoldsTheRate) {
  FakeClock clock;
  TokenBucket bucket(60, 0, clock.fn());  // 1 per second, burst 60
  EXPECT_DOUBLE_EQ(bucket.capacity(), 60);
  for (int i = 0; i < 60; ++i) ASSERT_TRUE(bucket.TryTake(1)) << i;
  EXPECT_FALSE(bucket.TryTake(1));
  EXPECT_EQ(bucket.TimeUntil(1), absl::Seconds(1));
  clock.now += absl::Milliseconds(999);
  EXPECT_FALSE(bucket.TryTake(1));
  clock.now += absl::Milliseconds(1);
  EXPECT_TRUE(bucket.TryTake(1));
  EXPECT_FALSE(bucket.TryTake(1));
}

TEST(TokenBucketTest, RateHoldsOverSimulatedTenMinutes) {
  FakeClock clock;
  TokenBucket bucket(600, 10, clock.fn());  // 10/s, burst 10
  int taken = 0;
  // Callers try every 7ms for 600 s: at most burst + rate x time may pass.
  for (int step = 0; step < 600000 / 7; ++step) {
    while (bucket.TryTake(1)) ++taken;
    clock.now += absl::Milliseconds(7);
  }
  double elapsed_s = 600000 / 7 * 0.007;
  EXPECT_LE(taken, 10 + 10 * elapsed_s + 1);
  EXPECT_GE(taken, 10 * elapsed_s - 1);  // and it does not starve either
}

TEST(TokenBucketTest, NeverAboveCapacityAfterIdle) {
  FakeClock clock;
  TokenBucket bucket(600, 5, clock.fn());
  clock.now += absl::Hours(1);
  EXPECT_DOUBLE_EQ(bucket.available(), 5);
}

TEST(TokenBucketTest, ReservationsQueueInOrder) {
  FakeClock clock;
  TokenBucket bucket(60, 1, clock.fn());  // 1/s, burst 1
  EXPECT_EQ(bucket.Reserve(1), absl::ZeroDuration());
  EXPECT_EQ(bucket.Reserve(1), absl::Seconds(1));
  EXPECT_EQ(bucket.Reserve(1), absl::Seconds(2));
  EXPECT_FALSE(bucket.TryTake(1));  // newcomers queue behind the reservations
  EXPECT_EQ(bucket.TimeUntil(1), absl::Seconds(3));
  bucket.Return(1);  // one reservation given back
  EXPECT_EQ(bucket.TimeUntil(1), absl::Seconds(2));
}

TEST(TokenBucketTest, OversizedRequestWaitsForAFullBucketAndLeavesDebt) {
  FakeClock clock;
  TokenBucket bucket(600, 100, clock.fn());  // 10 tokens/s
  ASSERT_TRUE(bucket.TryTake(50));
  EXPECT_EQ(bucket.TimeUntil(250), absl::Seconds(5));  // needs the full 100, not 250
  clock.now += absl::Seconds(5);
  ASSERT_TRUE(bucket.TryTake(250));
  EXPECT_DOUBLE_EQ(bucket.available(), -150);
  EXPECT_EQ(bucket.TimeUntil(1), absl::Seconds(15.1));
}

TEST(TokenBucketTest, ReturnCorrectsAnEstimate) {
  FakeClock clock;
  TokenBucket bucket(6000, 0, clock.fn());
  ASSERT_TRUE(bucket.TryTake(1000));  // estimate
  bucket.Return(1000 - 300);          // actual usage was 300
  EXPECT_DOUBLE_EQ(bucket.available(), 5700);
  bucket.Return(-200);  // a later call used more than estimated
  EXPECT_DOUBLE_EQ(bucket.available(), 5500);
  bucket.Return(1e9);
  EXPECT_DOUBLE_EQ(bucket.available(), 6000);
}

TEST(TokenBucketTest, RemainingZeroWithResetPausesTheBucket) {
  FakeClock clock;
  TokenBucket bucket(600, 0, clock.fn());  // plenty of tokens of our own
  bucket.Observe(600, 0, absl::Seconds(2));
  EXPECT_FALSE(bucket.TryTake(1));
  absl::Duration wait = bucket.TimeUntil(1);
  EXPECT_GE(wait, absl::Seconds(2));
  EXPECT_LE(wait, absl::Seconds(2.2));
  clock.now += absl::Seconds(1.9);
  EXPECT_FALSE(bucket.TryTake(1));
  clock.now += wait - absl::Seconds(1.9);
  EXPECT_TRUE(bucket.TryTake(1));
}

TEST(TokenBucketTest, RemainingCapsButNeverRaises) {
  FakeClock clock;
  TokenBucket bucket(600, 0, clock.fn());
  bucket.Observe(std::nullopt, 5, std::nullopt);
  EXPECT_DOUBLE_EQ(bucket.available(), 5);
  bucket.Observe(std::nullopt, 500, absl::Seconds(1));
  EXPECT_DOUBLE_EQ(bucket.available(), 5);
}

TEST(TokenBucketTest, LowerProviderLimitLowersTheRate) {
  FakeClock clock;
  TokenBucket bucket(600, 0, clock.fn());
  bucket.Observe(60, std::nullopt, std::nullopt);
  EXPECT_DOUBLE_EQ(bucket.per_minute(), 60);
  bucket.Observe(6000, std::nullopt, std::nullopt);
  EXPECT_DOUBLE_EQ(bucket.per_minute(), 600);  // never above the configured rate
}

}  // namespace
}  // namespace aijobs::worker
