#include "scheduler/submit_batcher.h"

namespace aijobs::scheduler {

SubmitBatcher::SubmitBatcher(JobStore* store, std::function<void()> on_inserted, int writers,
                             int max_batch)
    : store_(store), on_inserted_(std::move(on_inserted)), max_batch_(max_batch) {
  for (int i = 0; i < writers; ++i) threads_.emplace_back([this] { Loop(); });
}

SubmitBatcher::~SubmitBatcher() { Stop(); }

void SubmitBatcher::Submit(NewJob job, Callback done) {
  {
    absl::MutexLock lock(&mu_);
    if (!stopping_) {
      queue_.push_back({std::move(job), std::move(done)});
      return;
    }
  }
  done(absl::UnavailableError("scheduler is shutting down; retry on another replica"));
}

void SubmitBatcher::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_ && threads_.empty()) return;
    stopping_ = true;
  }
  for (auto& t : threads_) t.join();
  threads_.clear();
}

void SubmitBatcher::Loop() {
  while (true) {
    std::vector<Pending> batch;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
        return stopping_ || !queue_.empty();
      };
      mu_.Await(absl::Condition(&ready));
      if (queue_.empty()) return;
      size_t n = std::min<size_t>(queue_.size(), max_batch_);
      batch.assign(std::make_move_iterator(queue_.begin()),
                   std::make_move_iterator(queue_.begin() + n));
      queue_.erase(queue_.begin(), queue_.begin() + n);
    }
    std::vector<NewJob> jobs;
    jobs.reserve(batch.size());
    for (auto& p : batch) jobs.push_back(std::move(p.job));
    auto outcomes = store_->InsertJobs(jobs);
    if (!outcomes.ok()) {
      for (auto& p : batch) p.done(outcomes.status());
      continue;
    }
    if (on_inserted_) on_inserted_();
    for (size_t i = 0; i < batch.size(); ++i) batch[i].done(std::move((*outcomes)[i]));
  }
}

}  // namespace aijobs::scheduler
