// ShutdownSignal turns SIGINT and SIGTERM into an ordinary notification that threads can
// wait on. The signals are blocked in every thread and received by one sigwait thread, so
// nothing runs in signal-handler context (where taking a mutex, as absl::Notification and
// logging do, can deadlock).
//
//   aijobs::ShutdownSignal shutdown;  // first thing in main, before any thread starts
//   auto server = StartServer(...);
//   shutdown.Wait();                  // then stop the server
//
// A handler sees every signal with its count (e.g. drain on the first, stop on the second).
#pragma once

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <functional>
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

namespace aijobs {

class ShutdownSignal {
 public:
  // Called on the signal thread for every SIGINT/SIGTERM, with the signal and how many have
  // arrived so far (1 for the first). It may take locks; it should not block for long.
  using Handler = std::function<void(int signal_number, int count)>;

  // Blocks SIGINT and SIGTERM in the calling thread, and so in every thread it creates
  // afterwards. Call it first in main when the ShutdownSignal itself can only be made later
  // (its handler needs objects that start threads); signals arriving meanwhile stay pending
  // and are handled once it exists.
  static void Block();

  // Blocks the signals (see Block) and starts the thread that waits for them. Unless Block
  // ran first, this must run before any other thread exists: a thread started earlier keeps
  // the signals unblocked and their default action (exit without cleanup) would apply there;
  // a warning is printed in that case. The signals stay blocked after destruction.
  explicit ShutdownSignal(Handler on_signal = nullptr);
  // Stops and joins the signal thread (without waiting for a signal).
  ~ShutdownSignal();
  ShutdownSignal(const ShutdownSignal&) = delete;
  ShutdownSignal& operator=(const ShutdownSignal&) = delete;

  // Blocks until the first signal has been handled (its Handler, if any, has returned).
  void Wait() const;
  // Like Wait, for at most `timeout`; returns whether a signal arrived.
  bool WaitFor(absl::Duration timeout) const;
  bool Received() const { return first_.HasBeenNotified(); }
  // The first signal received (SIGINT or SIGTERM), or 0 before one arrived.
  int first_signal() const { return first_signal_.load(); }

 private:
  void Loop();

  sigset_t signals_;
  Handler on_signal_;
  absl::Notification first_;
  std::atomic<int> first_signal_{0};
  std::atomic<bool> exiting_{false};
  std::thread thread_;
};

}  // namespace aijobs
