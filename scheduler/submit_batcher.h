// SubmitBatcher: group commit for SubmitJob. Concurrent submits queue here; a few writer
// threads each take everything queued and insert it in one statement (one commit, one
// fsync for many jobs), then answer every caller. While one batch commits the next one
// gathers, so batches grow with load and latency stays one commit.
//
//   batcher.Submit(std::move(new_job), [reactor, resp](absl::StatusOr<SubmitOutcome> r) { ... });
#pragma once

#include <cstddef>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/batch_queue.h"
#include "scheduler/job_store.h"
#include "scheduler/submit_quota.h"

namespace aijobs::scheduler {

class SubmitBatcher {
 public:
  using Callback = std::function<void(absl::StatusOr<SubmitOutcome>)>;

  // `on_inserted` runs after every committed batch (wakes the local dispatcher and, debounced,
  // other replicas).
  // A statement carries at most `max_batch` jobs and about `max_batch_bytes` of their data
  // (one larger job goes alone).
  SubmitBatcher(JobStore* store, std::function<void()> on_inserted, int writers = 4,
                int max_batch = 1024, size_t max_batch_bytes = size_t{8} << 20);

  // Queues the job; `done` runs on a writer thread once the job is durable (or failed), or at
  // once with UNAVAILABLE when the batcher is stopping. A transient database error
  // (UNAVAILABLE, ABORTED, DEADLINE_EXCEEDED) reaches every caller of the batch, who may
  // retry; any other error splits the batch, so only the job the database refuses fails.
  //
  // A job whose `deadline` (the caller's) has passed when its batch is about to be written is
  // not stored: `done` gets DEADLINE_EXCEEDED saying so. The caller has stopped waiting, and
  // an answer of DEADLINE_EXCEEDED must not leave a job behind that nobody knows about.
  void Submit(NewJob job, Callback done, absl::Time deadline = absl::InfiniteFuture());
  // Answers everything queued, then stops the writers.
  void Stop() { queue_.Stop(); }
  // Checks every batch against `quota` before writing it (jobs over a limit are answered
  // RESOURCE_EXHAUSTED and not stored). Set before the first Submit.
  void set_quota(SubmitQuota* quota) { quota_ = quota; }

 private:
  struct Pending {
    NewJob job;
    Callback done;
    absl::Time deadline;
  };
  void Insert(std::vector<Pending>& batch);
  // Inserts batch[begin, end) in one statement, splitting it on a non-transient error.
  void InsertRange(std::vector<Pending>& batch, size_t begin, size_t end);

  JobStore* store_;
  SubmitQuota* quota_ = nullptr;
  std::function<void()> on_inserted_;
  const size_t max_batch_bytes_;
  BatchQueue<Pending> queue_;  // last: its threads use the members above
};

}  // namespace aijobs::scheduler
