// BatchQueue<T>: items pushed by many threads are handed, in batches, to a few worker
// threads that each take everything queued (up to a maximum) at once. This is the shape of
// group commit: while one batch is being written the next one gathers, so batches grow with
// load and latency stays one write.
//
//   BatchQueue<Row> q(/*threads=*/2, /*max_batch=*/512, [&](std::vector<Row>& rows) { Write(rows);
//   }); q.Push(row);      // false once Stop() began q.Flush();        // returns when everything
//   pushed so far was processed
#pragma once

#include <algorithm>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace aijobs {

template <typename T>
class BatchQueue {
 public:
  using ProcessFn = std::function<void(std::vector<T>& batch)>;

  BatchQueue(int threads, size_t max_batch, ProcessFn process)
      : max_batch_(max_batch), process_(std::move(process)) {
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Loop(); });
  }
  ~BatchQueue() { Stop(); }
  BatchQueue(const BatchQueue&) = delete;
  BatchQueue& operator=(const BatchQueue&) = delete;

  // Queues `item` (moving from it); returns false, leaving `item` untouched, once Stop()
  // has begun.
  bool Push(T&& item) {
    absl::MutexLock lock(&mu_);
    if (stopping_) return false;
    queue_.push_back(std::move(item));
    return true;
  }

  // Blocks until everything pushed so far has been processed.
  void Flush() {
    absl::MutexLock lock(&mu_);
    auto idle = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return queue_.empty() && busy_ == 0; };
    mu_.Await(absl::Condition(&idle));
  }

  // Processes what is queued, then stops the threads. Idempotent.
  void Stop() {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    for (auto& t : threads_) t.join();
    threads_.clear();
  }

 private:
  void Loop() {
    while (true) {
      std::vector<T> batch;
      {
        absl::MutexLock lock(&mu_);
        auto ready = [this]()
                         ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stopping_ || !queue_.empty(); };
        mu_.Await(absl::Condition(&ready));
        if (queue_.empty()) return;  // stopping, and drained
        size_t n = std::min(queue_.size(), max_batch_);
        batch.assign(std::make_move_iterator(queue_.begin()),
                     std::make_move_iterator(queue_.begin() + n));
        queue_.erase(queue_.begin(), queue_.begin() + n);
        ++busy_;
      }
      process_(batch);
      absl::MutexLock lock(&mu_);
      --busy_;
    }
  }

  const size_t max_batch_;
  const ProcessFn process_;
  absl::Mutex mu_;
  std::vector<T> queue_ ABSL_GUARDED_BY(mu_);
  int busy_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace aijobs
