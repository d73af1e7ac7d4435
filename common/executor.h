// A fixed pool of threads running queued closures: where gRPC reactors hand blocking work
// (database calls) so that gRPC's own threads never block. The queue may be bounded: work a
// caller can be told to retry is offered with TryRun, which refuses it when the queue is full
// (backpressure); work that must not be dropped uses Run, which always queues.
//
//   aijobs::Executor db_executor("db", 8, /*max_queue=*/1024);
//   absl::Status s = db_executor.TryRun([=] { reactor->Reply(store->GetJob(id)); });
//   if (!s.ok()) reactor->Reply(s);  // RESOURCE_EXHAUSTED: slow down
#pragma once

#include <cstddef>
#include <deque>
#include <functional>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace aijobs {

class Executor {
 public:
  static constexpr size_t kUnbounded = std::numeric_limits<size_t>::max();

  // Starts `threads` threads. TryRun refuses work while `max_queue` closures wait to start
  // (closures already running do not count); `max_queue` must be at least 1.
  Executor(std::string name, int threads, size_t max_queue = kUnbounded);
  // Finishes queued work and joins.
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Queues `fn` to run on one of the pool's threads, whatever the queue length: for work
  // that must not be dropped (it still counts toward the bound TryRun checks).
  void Run(std::function<void()> fn);
  // Queues `fn` unless the queue is full; then returns RESOURCE_EXHAUSTED (naming the
  // executor and the queue length) and drops `fn` without running it.
  absl::Status TryRun(std::function<void()> fn);

  // Closures queued and not yet started.
  size_t QueueLength();
  const std::string& name() const { return name_; }

 private:
  void Loop();

  const std::string name_;
  const size_t max_queue_;
  absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace aijobs
