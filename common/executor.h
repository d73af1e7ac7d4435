// A fixed pool of threads running queued closures: where gRPC reactors hand blocking work
// (database calls) so that gRPC's own threads never block.
//
//   aijobs::Executor db_executor("db", 8);
//   db_executor.Run([=] { auto job = store->GetJob(id); reactor->Reply(job); });
//   // the destructor finishes queued work and joins
#pragma once

#include <deque>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace aijobs {

class Executor {
 public:
  Executor(std::string name, int threads);
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Queues `fn` to run on one of the pool's threads.
  void Run(std::function<void()> fn);

 private:
  void Loop();

  const std::string name_;
  absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace aijobs
