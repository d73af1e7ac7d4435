#include "scheduler/watch_read_batcher.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace aijobs::scheduler {

WatchReadBatcher::WatchReadBatcher(JobStore* store, int readers, int page_limit, int max_batch,
                                   size_t max_pending)
    : store_(store),
      page_limit_(page_limit),
      max_pending_(max_pending),
      queue_(readers, max_batch, [this](std::vector<Pending>& batch) { ReadBatch(batch); }) {}

absl::Status WatchReadBatcher::Read(EventQuery query, Callback done) {
  if (pending_.fetch_add(1) >= max_pending_) {
    pending_.fetch_sub(1);
    return absl::ResourceExhaustedError(
        absl::StrCat("scheduler overloaded (", max_pending_, " watch reads already wait)"));
  }
  Pending p{std::move(query), std::move(done)};
  if (!queue_.Push(std::move(p))) {
    pending_.fetch_sub(1);
    return absl::UnavailableError("scheduler is shutting down; retry on another replica");
  }
  return absl::OkStatus();
}

void WatchReadBatcher::ReadBatch(std::vector<Pending>& batch) {
  std::vector<EventQuery> queries;
  queries.reserve(batch.size());
  for (const Pending& p : batch) queries.push_back(p.query);
  auto pages = store_->ReadEventsBatch(queries, page_limit_);
  pending_.fetch_sub(batch.size());
  for (size_t i = 0; i < batch.size(); ++i) {
    if (!pages.ok()) {
      batch[i].done(pages.status());
    } else {
      batch[i].done(std::move((*pages)[i]));
    }
  }
}

}  // namespace aijobs::scheduler
