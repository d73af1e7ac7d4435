#include "workers/timer_queue.h"

#include <vector>

namespace aijobs::worker {

TimerQueue::TimerQueue() : thread_([this] { Loop(); }) {}

TimerQueue::~TimerQueue() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    cv_.Signal();
  }
  thread_.join();
  // Destroy the dropped callbacks outside the lock: their captures may own anything.
  std::map<Key, std::function<void()>> dropped;
  {
    absl::MutexLock lock(&mu_);
    dropped.swap(queue_);
    when_by_id_.clear();
  }
}

TimerQueue::TimerId TimerQueue::Schedule(absl::Time when, std::function<void()> fn) {
  absl::MutexLock lock(&mu_);
  TimerId id = next_id_++;
  if (queue_.empty() || when < queue_.begin()->first.first) cv_.Signal();
  queue_.emplace(Key{when, id}, std::move(fn));
  when_by_id_.emplace(id, when);
  return id;
}

bool TimerQueue::Cancel(TimerId id) {
  std::function<void()> dropped;  // destroyed after the lock is released
  absl::MutexLock lock(&mu_);
  auto it = when_by_id_.find(id);
  if (it == when_by_id_.end()) return false;
  auto q = queue_.find(Key{it->second, id});
  dropped = std::move(q->second);
  queue_.erase(q);
  when_by_id_.erase(it);
  return true;
}

size_t TimerQueue::pending() const {
  absl::MutexLock lock(&mu_);
  return queue_.size();
}

void TimerQueue::Loop() {
  std::vector<std::function<void()>> due;
  mu_.Lock();
  while (!stop_) {
    absl::Time now = absl::Now();
    if (queue_.empty() || queue_.begin()->first.first > now) {
      absl::Time wake = queue_.empty() ? absl::InfiniteFuture() : queue_.begin()->first.first;
      // Schedule() signals when it adds a nearer timer; Cancel() needs no wake-up.
      cv_.WaitWithDeadline(&mu_, wake);
      continue;
    }
    // Take every due timer at once so one lock round-trip serves a burst.
    while (!queue_.empty() && queue_.begin()->first.first <= now) {
      auto it = queue_.begin();
      when_by_id_.erase(it->first.second);
      due.push_back(std::move(it->second));
      queue_.erase(it);
    }
    mu_.Unlock();
    for (auto& fn : due) fn();
    due.clear();  // destroy captures outside the lock
    mu_.Lock();
  }
  mu_.Unlock();
}

}  // namespace aijobs::worker
