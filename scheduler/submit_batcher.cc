#include "scheduler/submit_batcher.h"

namespace aijobs::scheduler {

SubmitBatcher::SubmitBatcher(JobStore* store, std::function<void()> on_inserted, int writers,
                             int max_batch)
    : store_(store),
      on_inserted_(std::move(on_inserted)),
      queue_(writers, max_batch, [this](std::vector<Pending>& batch) { Insert(batch); }) {}

void SubmitBatcher::Submit(NewJob job, Callback done) {
  Pending p{std::move(job), std::move(done)};
  if (!queue_.Push(std::move(p))) {
    p.done(absl::UnavailableError("scheduler is shutting down; retry on another replica"));
  }
}

void SubmitBatcher::Insert(std::vector<Pending>& batch) {
  std::vector<NewJob> jobs;
  jobs.reserve(batch.size());
  for (auto& p : batch) jobs.push_back(std::move(p.job));
  auto outcomes = store_->InsertJobs(jobs);
  if (!outcomes.ok()) {
    for (auto& p : batch) p.done(outcomes.status());
    return;
  }
  if (on_inserted_) on_inserted_();
  for (size_t i = 0; i < batch.size(); ++i) batch[i].done(std::move((*outcomes)[i]));
}

}  // namespace aijobs::scheduler
