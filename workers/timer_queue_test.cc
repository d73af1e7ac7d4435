#include "workers/timer_queue.h"

#include <vector>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"

namespace aijobs::worker {
namespace {

TEST(TimerQueueTest, RunsInDeadlineOrderAndSkipsCancelled) {
  TimerQueue timers;
  absl::Mutex mu;
  std::vector<int> order;
  int ran = 0;
  absl::Time base = absl::Now() + absl::Milliseconds(30);
  auto record = [&](int v) {
    return [&, v] {
      absl::MutexLock lock(&mu);
      order.push_back(v);
      ++ran;
    };
  };
  timers.Schedule(base + absl::Milliseconds(20), record(3));
  timers.Schedule(base, record(1));
  TimerQueue::TimerId dropped = timers.Schedule(base + absl::Milliseconds(10), record(99));
  timers.Schedule(base + absl::Milliseconds(10), record(2));
  EXPECT_TRUE(timers.Cancel(dropped));
  EXPECT_FALSE(timers.Cancel(dropped));

  absl::MutexLock lock(&mu);
  ASSERT_TRUE(mu.AwaitWithTimeout(absl::Condition(
                                      +[](int* n) { return *n == 3; }, &ran),
                                  absl::Seconds(10)));
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(timers.pending(), 0u);
}

TEST(TimerQueueTest, CallbackMayScheduleMore) {
  TimerQueue timers;
  absl::Mutex mu;
  int count = 0;
  std::function<void()> step = [&] {
    absl::MutexLock lock(&mu);
    if (++count < 5) timers.Schedule(absl::Now(), step);
  };
  timers.Schedule(absl::Now(), step);
  absl::MutexLock lock(&mu);
  EXPECT_TRUE(mu.AwaitWithTimeout(absl::Condition(
                                      +[](int* n) { return *n == 5; }, &count),
                                  absl::Seconds(10)));
}

}  // namespace
}  // namespace aijobs::worker
