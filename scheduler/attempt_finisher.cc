#include "scheduler/attempt_finisher.h"

#include "absl/time/clock.h"
#include "spdlog/spdlog.h"

namespace aijobs::scheduler {

AttemptFinisher::AttemptFinisher(JobStore* store, EventHub* hub,
                                 std::function<void(const v1::Job&)> on_requeued, int threads,
                                 int max_batch)
    : store_(store), hub_(hub), on_requeued_(std::move(on_requeued)), max_batch_(max_batch) {
  for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Loop(); });
}

AttemptFinisher::~AttemptFinisher() { Stop(); }

void AttemptFinisher::Submit(AttemptOutcome outcome, v1::internal::DeltaBatch unflushed) {
  absl::MutexLock lock(&mu_);
  queue_.push_back({std::move(outcome), std::move(unflushed)});
}

void AttemptFinisher::Flush() {
  absl::MutexLock lock(&mu_);
  auto idle = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return queue_.empty() && busy_ == 0; };
  mu_.Await(absl::Condition(&idle));
}

void AttemptFinisher::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_ && threads_.empty()) return;
    stopping_ = true;
  }
  for (auto& t : threads_) t.join();
  threads_.clear();
}

void AttemptFinisher::Loop() {
  while (true) {
    std::vector<Item> batch;
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
      ++busy_;
    }
    Process(batch);
    absl::MutexLock lock(&mu_);
    --busy_;
  }
}

void AttemptFinisher::Process(std::vector<Item>& batch) {
  std::vector<AttemptOutcome> outcomes;
  outcomes.reserve(batch.size());
  for (Item& item : batch) {
    item.outcome.unflushed = std::move(item.unflushed);
    outcomes.push_back(std::move(item.outcome));
  }
  // Retry transient database errors: these attempts were acknowledged by the worker and
  // must not be lost. Give up only after a long outage (the lease reaper then takes over).
  absl::Duration backoff = absl::Milliseconds(20);
  for (int tries = 0;; ++tries) {
    absl::StatusOr<std::vector<v1::Job>> jobs = store_->FinishAttempts(outcomes);
    if (jobs.ok()) {
      for (const v1::Job& job : *jobs) {
        hub_->Publish(TransitionEvent(job));
        if (job.state() == v1::QUEUED && on_requeued_) on_requeued_(job);
      }
      return;
    }
    if (tries >= 50) {
      spdlog::error("giving up writing {} attempt outcomes: {}", outcomes.size(),
                    jobs.status().ToString());
      return;
    }
    spdlog::warn("writing {} attempt outcomes failed (will retry): {}", outcomes.size(),
                 jobs.status().ToString());
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Seconds(2));
  }
}

}  // namespace aijobs::scheduler
