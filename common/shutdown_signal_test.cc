#include "common/shutdown_signal.h"

#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <thread>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace aijobs {
namespace {

// kill(), not raise(): raise() targets the calling thread, where the signal is blocked and
// stays pending for that thread only; a real SIGTERM (from kill, systemd, ./dev) is sent to
// the process and taken by whichever thread waits for it.
void SendToProcess(int sig) { ASSERT_EQ(kill(getpid(), sig), 0); }

TEST(ShutdownSignalTest, SigtermSentToTheProcessNotifies) {
  ShutdownSignal shutdown;
  EXPECT_FALSE(shutdown.Received());
  SendToProcess(SIGTERM);
  ASSERT_TRUE(shutdown.WaitFor(absl::Seconds(10)));
  EXPECT_EQ(shutdown.first_signal(), SIGTERM);
}

TEST(ShutdownSignalTest, SigintNotifiesToo) {
  ShutdownSignal shutdown;
  SendToProcess(SIGINT);
  ASSERT_TRUE(shutdown.WaitFor(absl::Seconds(10)));
  EXPECT_EQ(shutdown.first_signal(), SIGINT);
}

TEST(ShutdownSignalTest, HandlerSeesEverySignalWithItsCount) {
  absl::Mutex mu;
  std::vector<std::pair<int, int>> seen;
  ShutdownSignal shutdown([&](int sig, int count) {
    absl::MutexLock lock(&mu);
    seen.emplace_back(sig, count);
  });
  SendToProcess(SIGINT);
  ASSERT_TRUE(shutdown.WaitFor(absl::Seconds(10)));
  SendToProcess(SIGTERM);
  absl::MutexLock lock(&mu);
  auto two = [&seen]() { return seen.size() >= 2; };
  ASSERT_TRUE(mu.AwaitWithTimeout(absl::Condition(&two), absl::Seconds(10)));
  EXPECT_EQ(seen[0], std::make_pair(SIGINT, 1));
  EXPECT_EQ(seen[1], std::make_pair(SIGTERM, 2));
}

// The old handlers ran absl::Notification::Notify (which takes a mutex) in signal context,
// on whichever thread the signal interrupted: if that thread held the same lock, it
// deadlocked. Here the handler runs on its own thread, so it may take a lock the
// signalled-at-the-time thread holds; it just waits for it.
TEST(ShutdownSignalTest, HandlerMayTakeALockHeldWhenTheSignalArrives) {
  absl::Mutex mu;
  bool handled = false;
  ShutdownSignal shutdown([&](int, int) {
    absl::MutexLock lock(&mu);
    handled = true;
  });
  {
    absl::MutexLock lock(&mu);
    SendToProcess(SIGTERM);
    absl::SleepFor(absl::Milliseconds(50));  // Give the signal time to be taken.
    EXPECT_FALSE(handled);
  }
  ASSERT_TRUE(shutdown.WaitFor(absl::Seconds(10)));
  absl::MutexLock lock(&mu);
  EXPECT_TRUE(handled);
}

TEST(ShutdownSignalTest, ThreadsStartedAfterwardsHaveTheSignalsBlocked) {
  ShutdownSignal shutdown;
  bool term_blocked = false, int_blocked = false;
  std::thread t([&] {
    sigset_t mask;
    pthread_sigmask(SIG_BLOCK, nullptr, &mask);
    term_blocked = sigismember(&mask, SIGTERM) == 1;
    int_blocked = sigismember(&mask, SIGINT) == 1;
  });
  t.join();
  EXPECT_TRUE(term_blocked);
  EXPECT_TRUE(int_blocked);
}

TEST(ShutdownSignalTest, DestroyedWithoutASignalReturnsPromptly) {
  absl::Time start = absl::Now();
  { ShutdownSignal shutdown; }
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  // A later one still works: the wake-up of the first was not left pending.
  ShutdownSignal again;
  EXPECT_FALSE(again.WaitFor(absl::Milliseconds(100)));
  SendToProcess(SIGTERM);
  EXPECT_TRUE(again.WaitFor(absl::Seconds(10)));
}

// The worker blocks the signals first and makes its ShutdownSignal later (the handler needs
// the connection): a signal arriving in between must not be lost.
TEST(ShutdownSignalTest, SignalAfterBlockIsHandledOnceTheWaiterExists) {
  ShutdownSignal::Block();
  SendToProcess(SIGTERM);
  std::thread other([] {});  // Threads started after Block are fine.
  other.join();
  ShutdownSignal shutdown;
  ASSERT_TRUE(shutdown.WaitFor(absl::Seconds(10)));
  EXPECT_EQ(shutdown.first_signal(), SIGTERM);
}

}  // namespace
}  // namespace aijobs
