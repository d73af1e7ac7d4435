// Executor: queued work runs; a bounded queue refuses work with RESOURCE_EXHAUSTED when full
// (issue 9: the queue used to grow without limit) and accepts again once it drains.
#include "common/executor.h"

#include <gtest/gtest.h>

#include <atomic>
#include <memory>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"

namespace aijobs {
namespace {

bool WaitFor(const std::function<bool()>& done) {
  absl::Time until = absl::Now() + absl::Seconds(10);
  while (!done()) {
    if (absl::Now() > until) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return true;
}

TEST(ExecutorTest, RunsEverythingQueuedBeforeTheDestructorReturns) {
  std::atomic<int> ran{0};
  {
    Executor executor("test", 3);
    for (int i = 0; i < 100; ++i) executor.Run([&] { ran.fetch_add(1); });
  }
  EXPECT_EQ(ran.load(), 100);
}

TEST(ExecutorTest, TryRunRefusesWorkWhenTheQueueIsFull) {
  absl::Notification started, release;
  std::atomic<int> ran{0};
  auto executor = std::make_unique<Executor>("db", 1, /*max_queue=*/2);
  ASSERT_TRUE(executor
                  ->TryRun([&] {
                    started.Notify();
                    release.WaitForNotification();
                  })
                  .ok());
  ASSERT_TRUE(started.WaitForNotificationWithTimeout(absl::Seconds(10)));
  // The one thread is busy: two closures may wait, the third is refused and never runs.
  EXPECT_TRUE(executor->TryRun([&] { ran.fetch_add(1); }).ok());
  EXPECT_TRUE(executor->TryRun([&] { ran.fetch_add(1); }).ok());
  EXPECT_EQ(executor->QueueLength(), 2u);
  bool refused_ran = false;
  absl::Status full = executor->TryRun([&] { refused_ran = true; });
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted) << full;
  EXPECT_NE(full.message().find("\"db\""), absl::string_view::npos) << full;

  release.Notify();
  ASSERT_TRUE(WaitFor([&] { return ran.load() == 2; }));
  // Drained: accepted again.
  EXPECT_TRUE(executor->TryRun([&] { ran.fetch_add(1); }).ok());
  executor.reset();
  EXPECT_EQ(ran.load(), 3);
  EXPECT_FALSE(refused_ran);
}

TEST(ExecutorTest, RunQueuesPastTheBound) {
  absl::Notification started, release;
  std::atomic<int> ran{0};
  auto executor = std::make_unique<Executor>("db", 1, /*max_queue=*/1);
  executor->Run([&] {
    started.Notify();
    release.WaitForNotification();
  });
  ASSERT_TRUE(started.WaitForNotificationWithTimeout(absl::Seconds(10)));
  executor->Run([&] { ran.fetch_add(1); });
  executor->Run([&] { ran.fetch_add(1); });  // past the bound: Run never drops work...
  EXPECT_EQ(executor->TryRun([&] { ran.fetch_add(1); }).code(),
            absl::StatusCode::kResourceExhausted);  // ...but it counts toward it
  release.Notify();
  executor.reset();
  EXPECT_EQ(ran.load(), 2);
}

}  // namespace
}  // namespace aijobs
