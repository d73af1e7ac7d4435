// AttemptFinisher: ends attempts in batches — completions and failures reported by workers,
// attempts lost with their worker. One statement writes the attempts' last deltas, one the
// transitions; then watchers get the transition events.
//
//   finisher.Submit(outcome, std::move(tail.unflushed));
#pragma once

#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "scheduler/event_hub.h"
#include "scheduler/job_store.h"

namespace aijobs::scheduler {

class AttemptFinisher {
 public:
  // `on_requeued(job)` is told of every job put back in the queue (to wake the dispatcher
  // when its run_after comes).
  AttemptFinisher(JobStore* store, EventHub* hub, std::function<void(const v1::Job&)> on_requeued,
                  int threads = 2, int max_batch = 512);
  ~AttemptFinisher();

  // Queues the end of an attempt. `unflushed` are its deltas not yet persisted.
  void Submit(AttemptOutcome outcome, v1::internal::DeltaBatch unflushed);

  // Blocks until everything submitted so far is written (or failed for good).
  void Flush();
  // Finishes queued work and stops the threads.
  void Stop();

 private:
  struct Item {
    AttemptOutcome outcome;
    v1::internal::DeltaBatch unflushed;
  };
  void Loop();
  void Process(std::vector<Item>& batch);

  JobStore* store_;
  EventHub* hub_;
  std::function<void(const v1::Job&)> on_requeued_;
  const int max_batch_;
  absl::Mutex mu_;
  std::vector<Item> queue_ ABSL_GUARDED_BY(mu_);
  int busy_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace aijobs::scheduler
