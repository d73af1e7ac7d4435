#include "workers/call_gate.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "absl/synchronization/notification.h"

namespace aijobs::worker {
namespace {

TEST(CallGateTest, RunCallsWithTheLockReleasedAndReturnsWithItHeld) {
  CallGate gate;
  absl::MutexLock lock(&gate.mu);
  bool ran = false;
  EXPECT_TRUE(gate.Run([&] {
    // Taking the lock here would deadlock if Run held it.
    absl::MutexLock inner(&gate.mu);
    ran = true;
  }));
  EXPECT_TRUE(ran);
  gate.mu.AssertHeld();
  EXPECT_FALSE(gate.closed());
}

TEST(CallGateTest, CloseFromInsideTheCallbackReturnsAtOnceAndStopsDelivery) {
  CallGate gate;
  absl::MutexLock lock(&gate.mu);
  bool in_callback = false;
  EXPECT_FALSE(gate.Run([&] {
    absl::MutexLock inner(&gate.mu);
    in_callback = gate.InCallback();
    EXPECT_TRUE(gate.Close());  // would wait for itself if it did not know its thread
  }));
  EXPECT_TRUE(in_callback);
  EXPECT_FALSE(gate.InCallback());
  bool ran_again = false;
  EXPECT_FALSE(gate.Run([&] { ran_again = true; }));
  EXPECT_FALSE(ran_again);
}

TEST(CallGateTest, RunLastClosesTheGate) {
  CallGate gate;
  absl::MutexLock lock(&gate.mu);
  int runs = 0;
  EXPECT_TRUE(gate.RunLast([&] { ++runs; }));
  EXPECT_TRUE(gate.closed());
  EXPECT_FALSE(gate.Run([&] { ++runs; }));
  EXPECT_FALSE(gate.RunLast([&] { ++runs; }));
  EXPECT_FALSE(gate.Close());  // already closed by the final callback
  EXPECT_EQ(runs, 1);
}

TEST(CallGateTest, CloseFromAnotherThreadWaitsForTheRunningCallback) {
  CallGate gate;
  absl::Notification entered, closing;
  std::atomic<bool> callback_returned{false};
  std::thread deliverer([&] {
    absl::MutexLock lock(&gate.mu);
    gate.Run([&] {
      entered.Notify();
      closing.WaitForNotification();
      // Give Close() every chance to return early (it must not).
      for (int i = 0; i < 1000; ++i) std::this_thread::yield();
      callback_returned = true;
    });
  });
  entered.WaitForNotification();
  {
    absl::MutexLock lock(&gate.mu);
    closing.Notify();
    EXPECT_TRUE(gate.Close());
    EXPECT_TRUE(callback_returned.load());
  }
  deliverer.join();
}

// Many callbacks race one Close() from another thread: none may start after Close() returned.
TEST(CallGateTest, NoCallbackStartsAfterCloseReturns) {
  for (int round = 0; round < 200; ++round) {
    CallGate gate;
    std::atomic<bool> close_returned{false};
    std::atomic<int> late{0};
    std::thread deliverer([&] {
      absl::MutexLock lock(&gate.mu);
      while (gate.Run([&] {
        if (close_returned.load()) ++late;
      })) {
      }
    });
    std::thread closer([&] {
      for (int i = 0; i < round % 7; ++i) std::this_thread::yield();
      absl::MutexLock lock(&gate.mu);
      gate.Close();
      close_returned = true;
    });
    closer.join();
    deliverer.join();
    EXPECT_EQ(late.load(), 0) << "round " << round;
  }
}

}  // namespace
}  // namespace aijobs::worker
