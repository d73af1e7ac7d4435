// WatchReadBatcher: the first database read of new watches, grouped. Every WatchJob begins
// with a read of its job and of the events after its resume point; under load (a client that
// watches every job it submits) that is two statements per job. Reads queue here and a few
// reader threads each take everything queued and answer it with JobStore::ReadEventsBatch
// (two statements for the whole batch), so batches grow with load while an idle scheduler
// still answers at once.
//
//   batcher.Read({caller, job_id, after_seq}, [watch](absl::StatusOr<EventPage> page) { ... });
#pragma once

#include <atomic>
#include <cstddef>
#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/batch_queue.h"
#include "scheduler/job_store.h"

namespace aijobs::scheduler {

class WatchReadBatcher {
 public:
  using Callback = std::function<void(absl::StatusOr<EventPage>)>;

  // `page_limit`: stored rows read per job (EventPage::more when reached); at most
  // `max_batch` reads per statement pair and `max_pending` queued before Read refuses.
  WatchReadBatcher(JobStore* store, int readers = 2, int page_limit = 1000,
                   int max_batch = 256, size_t max_pending = 4096);

  // Queues the read; `done` runs on a reader thread with the page (or the read's error).
  // RESOURCE_EXHAUSTED at once, without calling `done`, when max_pending reads already wait;
  // UNAVAILABLE when the batcher is stopping.
  absl::Status Read(EventQuery query, Callback done);
  // Answers everything queued, then stops the readers.
  void Stop() { queue_.Stop(); }

 private:
  struct Pending {
    EventQuery query;
    Callback done;
  };
  void ReadBatch(std::vector<Pending>& batch);

  JobStore* store_;
  const int page_limit_;
  const size_t max_pending_;
  std::atomic<size_t> pending_{0};
  BatchQueue<Pending> queue_;  // last: its threads use the members above
};

}  // namespace aijobs::scheduler
