// AttemptFinisher: ends attempts in batches — completions and failures reported by workers,
// attempts lost with their worker or past their deadline. One statement (one commit) writes
// a batch's last output and transitions; then watchers get the transition events.
//
//   AttemptFinisher finisher(&store, &hub, [&](const v1::Job& job) { dispatcher.WakeAt(...); });
//   finisher.Submit(outcome, std::move(tail.unflushed));
//   finisher.Stop();
#pragma once

#include <cstddef>
#include <functional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/batch_queue.h"
#include "scheduler/event_hub.h"
#include "scheduler/job_store.h"

namespace aijobs::scheduler {

struct AttemptFinisherOptions {
  int threads = 2;
  // A statement carries at most this many outcomes, and at most about this many bytes of
  // results, errors and output (one larger outcome goes alone).
  size_t max_batch = 512;
  size_t max_batch_bytes = size_t{8} << 20;
  // Backoff between tries after a transient database error, doubling up to the cap.
  absl::Duration initial_backoff = absl::Milliseconds(20);
  absl::Duration max_backoff = absl::Seconds(2);
};

class AttemptFinisher {
 public:
  // `on_requeued(job)` is told of every job put back in the queue (to wake the dispatcher
  // when its run_after comes).
  AttemptFinisher(JobStore* store, EventHub* hub, std::function<void(const v1::Job&)> on_requeued,
                  int threads = 2, int max_batch = 512);
  AttemptFinisher(JobStore* store, EventHub* hub, std::function<void(const v1::Job&)> on_requeued,
                  const AttemptFinisherOptions& options);
  ~AttemptFinisher() { Stop(); }

  // Queues the end of an attempt. `unflushed` are its deltas not yet persisted.
  //
  // A finished result is never given up on while the finisher runs: transient database
  // errors (UNAVAILABLE, ABORTED, DEADLINE_EXCEEDED) are retried with capped backoff until
  // the write succeeds. Any other error splits the batch, so only the outcome the database
  // refuses fails; that job is then FAILED with code RESULT_NOT_STORED and the reason.
  void Submit(AttemptOutcome outcome, v1::internal::DeltaBatch unflushed);

  // Blocks until everything submitted so far is written (or failed for good).
  void Flush() { queue_.Flush(); }
  // Finishes queued work and stops the threads. Writes still failing transiently get one
  // more try each; what then remains unwritten is left to the lease reaper (which requeues
  // those attempts once their lease expires).
  void Stop();

 private:
  void Process(std::vector<AttemptOutcome>& outcomes);
  // Writes `outcomes` (one statement when it can), splitting on non-transient errors.
  // `fallback` counts how often the single outcome was already replaced (see .cc).
  void Write(std::vector<AttemptOutcome> outcomes, int fallback = 0);
  // FinishAttempts, retried while the error is transient and the finisher is not stopping.
  absl::StatusOr<std::vector<v1::Job>> FinishWithRetry(const std::vector<AttemptOutcome>& outcomes);
  bool stopping() const;

  JobStore* store_;
  EventHub* hub_;
  std::function<void(const v1::Job&)> on_requeued_;
  const AttemptFinisherOptions options_;
  mutable absl::Mutex stop_mu_;
  bool stopping_ ABSL_GUARDED_BY(stop_mu_) = false;
  BatchQueue<AttemptOutcome> queue_;  // last: its threads use the members above
};

}  // namespace aijobs::scheduler
