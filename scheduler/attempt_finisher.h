// AttemptFinisher: ends attempts in batches — completions and failures reported by workers,
// attempts lost with their worker or past their deadline. One statement (one commit) writes
// a batch's last output and transitions; then watchers get the transition events.
//
//   finisher.Submit(outcome, std::move(tail.unflushed));
#pragma once

#include <functional>
#include <vector>

#include "common/batch_queue.h"
#include "scheduler/event_hub.h"
#include "scheduler/job_store.h"

namespace aijobs::scheduler {

class AttemptFinisher {
 public:
  // `on_requeued(job)` is told of every job put back in the queue (to wake the dispatcher
  // when its run_after comes).
  AttemptFinisher(JobStore* store, EventHub* hub, std::function<void(const v1::Job&)> on_requeued,
                  int threads = 2, int max_batch = 512);

  // Queues the end of an attempt. `unflushed` are its deltas not yet persisted.
  void Submit(AttemptOutcome outcome, v1::internal::DeltaBatch unflushed);

  // Blocks until everything submitted so far is written (or failed for good).
  void Flush() { queue_.Flush(); }
  // Finishes queued work and stops the threads.
  void Stop() { queue_.Stop(); }

 private:
  void Process(std::vector<AttemptOutcome>& outcomes);

  JobStore* store_;
  EventHub* hub_;
  std::function<void(const v1::Job&)> on_requeued_;
  BatchQueue<AttemptOutcome> queue_;  // last: its threads use the members above
};

}  // namespace aijobs::scheduler
