#include "scheduler/attempt_finisher.h"

#include "absl/time/clock.h"
#include "spdlog/spdlog.h"

namespace aijobs::scheduler {

AttemptFinisher::AttemptFinisher(JobStore* store, EventHub* hub,
                                 std::function<void(const v1::Job&)> on_requeued, int threads,
                                 int max_batch)
    : store_(store),
      hub_(hub),
      on_requeued_(std::move(on_requeued)),
      queue_(threads, max_batch,
             [this](std::vector<AttemptOutcome>& outcomes) { Process(outcomes); }) {}

void AttemptFinisher::Submit(AttemptOutcome outcome, v1::internal::DeltaBatch unflushed) {
  outcome.unflushed = std::move(unflushed);
  // Refused only after Stop(): the lease reaper requeues such an attempt later.
  (void)queue_.Push(std::move(outcome));
}

void AttemptFinisher::Process(std::vector<AttemptOutcome>& outcomes) {
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
