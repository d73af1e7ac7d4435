#include "workers/routing/circuit_breaker.h"

#include "gtest/gtest.h"

namespace aijobs::worker {
namespace {

using Permit = CircuitBreaker::Permit;
using State = CircuitBreaker::State;

struct FakeClock {
  absl::Time now = absl::FromUnixSeconds(1000000);
  Clock fn() {
    return [this] { return now; };
  }
};

CircuitBreakerOptions Options() {
  CircuitBreakerOptions o;
  o.failure_rate = 0.5;
  o.min_requests = 4;
  o.window = absl::Seconds(10);
  o.open_duration = absl::Seconds(5);
  return o;
}

// Runs one call through the breaker; returns the permit it got.
Permit Call(CircuitBreaker* b, bool failed) {
  Permit p = b->Allow();
  if (p != Permit::kRejected) b->Record(p, failed);
  return p;
}

TEST(CircuitBreakerTest, OpensAtTheFailureRateOnceMinRequestsEnded) {
  FakeClock clock;
  CircuitBreaker b(Options(), clock.fn());
  EXPECT_EQ(Call(&b, true), Permit::kNormal);
  EXPECT_EQ(Call(&b, true), Permit::kNormal);
  EXPECT_EQ(Call(&b, true), Permit::kNormal);
  EXPECT_EQ(b.state(), State::kClosed);  // 3 < min_requests
  EXPECT_EQ(Call(&b, false), Permit::kNormal);
  EXPECT_EQ(b.state(), State::kClosed);        // the last outcome was a success
  EXPECT_EQ(Call(&b, true), Permit::kNormal);  // 4 of 5 failed
  EXPECT_EQ(b.state(), State::kOpen);
  EXPECT_EQ(b.Allow(), Permit::kRejected);
  EXPECT_EQ(b.TimeUntilProbe(), absl::Seconds(5));
}

TEST(CircuitBreakerTest, StaysClosedBelowTheRate) {
  FakeClock clock;
  CircuitBreaker b(Options(), clock.fn());
  for (int i = 0; i < 20; ++i) Call(&b, i % 4 == 3);  // one in four fails
  EXPECT_EQ(b.state(), State::kClosed);
}

TEST(CircuitBreakerTest, OldOutcomesLeaveTheWindow) {
  FakeClock clock;
  CircuitBreaker b(Options(), clock.fn());
  for (int i = 0; i < 3; ++i) Call(&b, true);
  clock.now += absl::Seconds(11);
  Call(&b, true);  // only 1 ended in the window
  EXPECT_EQ(b.state(), State::kClosed);
}

TEST(CircuitBreakerTest, HalfOpensWithExactlyOneProbeThatClosesOnSuccess) {
  FakeClock clock;
  CircuitBreaker b(Options(), clock.fn());
  for (int i = 0; i < 4; ++i) Call(&b, true);
  ASSERT_EQ(b.state(), State::kOpen);
  clock.now += absl::Seconds(4.9);
  EXPECT_EQ(b.Allow(), Permit::kRejected);
  clock.now += absl::Seconds(0.1);
  Permit probe = b.Allow();
  EXPECT_EQ(probe, Permit::kProbe);
  EXPECT_EQ(b.state(), State::kHalfOpen);
  EXPECT_EQ(b.Allow(), Permit::kRejected);  // exactly one probe
  EXPECT_EQ(b.Allow(), Permit::kRejected);
  b.Record(probe, false);
  EXPECT_EQ(b.state(), State::kClosed);
  // A fresh window: 3 failures are not enough to reopen.
  for (int i = 0; i < 3; ++i) EXPECT_EQ(Call(&b, true), Permit::kNormal);
  EXPECT_EQ(b.state(), State::kClosed);
}

TEST(CircuitBreakerTest, FailedProbeReopens) {
  FakeClock clock;
  CircuitBreaker b(Options(), clock.fn());
  for (int i = 0; i < 4; ++i) Call(&b, true);
  clock.now += absl::Seconds(5);
  Permit probe = b.Allow();
  ASSERT_EQ(probe, Permit::kProbe);
  b.Record(probe, true);
  EXPECT_EQ(b.state(), State::kOpen);
  EXPECT_EQ(b.TimeUntilProbe(), absl::Seconds(5));
  EXPECT_EQ(b.Allow(), Permit::kRejected);
}

TEST(CircuitBreakerTest, ReleasedProbeLetsTheNextCallerProbe) {
  FakeClock clock;
  CircuitBreaker b(Options(), clock.fn());
  for (int i = 0; i < 4; ++i) Call(&b, true);
  clock.now += absl::Seconds(5);
  Permit probe = b.Allow();
  ASSERT_EQ(probe, Permit::kProbe);
  b.Release(probe);  // e.g. the job was cancelled, or the caller's request was invalid
  EXPECT_EQ(b.Allow(), Permit::kProbe);
}

TEST(CircuitBreakerTest, LateOutcomesOfOrdinaryCallsDoNotCloseAHalfOpenBreaker) {
  FakeClock clock;
  CircuitBreaker b(Options(), clock.fn());
  Permit early = b.Allow();  // started while closed, ends much later
  for (int i = 0; i < 4; ++i) Call(&b, true);
  clock.now += absl::Seconds(5);
  ASSERT_EQ(b.Allow(), Permit::kProbe);
  b.Record(early, false);
  EXPECT_EQ(b.state(), State::kHalfOpen);
}

TEST(CircuitBreakerTest, DisabledNeverOpens) {
  FakeClock clock;
  CircuitBreakerOptions o = Options();
  o.disabled = true;
  CircuitBreaker b(o, clock.fn());
  for (int i = 0; i < 50; ++i) EXPECT_EQ(Call(&b, true), Permit::kNormal);
  EXPECT_EQ(b.state(), State::kClosed);
}

TEST(CircuitBreakerTest, OptionsFromProtoUseDefaultsForZero) {
  aijobs::v1::CircuitBreaker proto;
  proto.set_min_requests(3);
  CircuitBreakerOptions o = BreakerOptionsFrom(proto);
  EXPECT_DOUBLE_EQ(o.failure_rate, 0.5);
  EXPECT_EQ(o.min_requests, 3);
  EXPECT_EQ(o.window, absl::Seconds(30));
  EXPECT_EQ(o.open_duration, absl::Seconds(15));
}

}  // namespace
}  // namespace aijobs::worker
