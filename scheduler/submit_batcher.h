// SubmitBatcher: group commit for SubmitJob. Concurrent submits queue here; a few writer
// threads each take everything queued and insert it in one statement (one commit, one
// fsync for many jobs), then answer every caller. While one batch commits the next one
// gathers, so batches grow with load and latency stays one commit.
//
//   batcher.Submit(std::move(new_job), [reactor, resp](absl::StatusOr<SubmitOutcome> r) { ... });
#pragma once

#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "scheduler/job_store.h"

namespace aijobs::scheduler {

class SubmitBatcher {
 public:
  using Callback = std::function<void(absl::StatusOr<SubmitOutcome>)>;

  // `on_inserted` runs after every committed batch (wakes the local dispatcher and, debounced,
  // other replicas).
  SubmitBatcher(JobStore* store, std::function<void()> on_inserted, int writers = 4,
                int max_batch = 1024);
  ~SubmitBatcher();

  // Queues the job; `done` runs on a writer thread once the job is durable (or failed).
  void Submit(NewJob job, Callback done);
  // Answers everything queued, then stops the writers.
  void Stop();

 private:
  struct Pending {
    NewJob job;
    Callback done;
  };
  void Loop();

  JobStore* store_;
  std::function<void()> on_inserted_;
  const int max_batch_;
  absl::Mutex mu_;
  std::vector<Pending> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace aijobs::scheduler
