// One thread that runs callbacks at their deadlines. The sim provider drives all of its calls
// from one TimerQueue (no thread or sleep per call); the worker connection uses one for job
// deadlines.
//
//   TimerQueue timers;
//   TimerQueue::TimerId id = timers.Schedule(absl::Now() + absl::Milliseconds(5), [] { ... });
//   timers.Cancel(id);  // true when it had not started yet
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace aijobs::worker {

class TimerQueue {
 public:
  using TimerId = uint64_t;

  TimerQueue();
  // Stops the thread; callbacks not yet run are dropped (destroyed without running).
  ~TimerQueue();
  TimerQueue(const TimerQueue&) = delete;
  TimerQueue& operator=(const TimerQueue&) = delete;

  // Runs `fn` on the timer thread at or soon after `when` (at once if it is past). Callbacks
  // due at the same time run in the order they were scheduled. Thread-safe, also from inside
  // a callback.
  TimerId Schedule(absl::Time when, std::function<void()> fn);

  // Drops the timer. Returns true if it had not started; false if it ran, is running or was
  // unknown. Does not wait for a running callback.
  bool Cancel(TimerId id);

  // Number of timers waiting (for tests and metrics).
  size_t pending() const;

 private:
  using Key = std::pair<absl::Time, TimerId>;
  void Loop();

  mutable absl::Mutex mu_;
  absl::CondVar cv_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  TimerId next_id_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<Key, std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<TimerId, absl::Time> when_by_id_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace aijobs::worker
