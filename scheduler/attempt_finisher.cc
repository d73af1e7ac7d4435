#include "scheduler/attempt_finisher.h"

#include <algorithm>
#include <iterator>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status.h"
#include "spdlog/spdlog.h"

namespace aijobs::scheduler {

AttemptFinisher::AttemptFinisher(JobStore* store, EventHub* hub,
                                 std::function<void(const v1::Job&)> on_requeued, int threads,
                                 int max_batch)
    : AttemptFinisher(store, hub, std::move(on_requeued), [&] {
        AttemptFinisherOptions o;
        o.threads = threads;
        o.max_batch = static_cast<size_t>(max_batch);
        return o;
      }()) {}

AttemptFinisher::AttemptFinisher(JobStore* store, EventHub* hub,
                                 std::function<void(const v1::Job&)> on_requeued,
                                 const AttemptFinisherOptions& options)
    : store_(store),
      hub_(hub),
      on_requeued_(std::move(on_requeued)),
      options_(options),
      queue_(options.threads, options.max_batch,
             [this](std::vector<AttemptOutcome>& outcomes) { Process(outcomes); }) {}

void AttemptFinisher::Stop() {
  {
    absl::MutexLock lock(&stop_mu_);
    stopping_ = true;
  }
  queue_.Stop();
}

bool AttemptFinisher::stopping() const {
  absl::MutexLock lock(&stop_mu_);
  return stopping_;
}

void AttemptFinisher::Submit(AttemptOutcome outcome, v1::internal::DeltaBatch unflushed) {
  outcome.unflushed = std::move(unflushed);
  // Refused only after Stop(): the lease reaper requeues such an attempt later.
  (void)queue_.Push(std::move(outcome));
}

namespace {

// What an outcome adds to its statement's parameters (results, errors, output, ids).
size_t OutcomeBytes(const AttemptOutcome& o) {
  return o.result.ByteSizeLong() + o.error.ByteSizeLong() + o.unflushed.ByteSizeLong() + 64;
}

}  // namespace

void AttemptFinisher::Process(std::vector<AttemptOutcome>& outcomes) {
  // Cut the batch into statements within the byte budget (an outcome larger than the budget
  // goes alone).
  size_t begin = 0;
  while (begin < outcomes.size()) {
    size_t end = begin + 1;
    size_t bytes = OutcomeBytes(outcomes[begin]);
    while (end < outcomes.size()) {
      size_t next = OutcomeBytes(outcomes[end]);
      if (bytes + next > options_.max_batch_bytes) break;
      bytes += next;
      ++end;
    }
    Write(std::vector<AttemptOutcome>(std::make_move_iterator(outcomes.begin() + begin),
                                      std::make_move_iterator(outcomes.begin() + end)));
    begin = end;
  }
}

absl::StatusOr<std::vector<v1::Job>> AttemptFinisher::FinishWithRetry(
    const std::vector<AttemptOutcome>& outcomes) {
  // These attempts were acknowledged to their workers (paid LLM work): a transient error is
  // retried for as long as the finisher runs. Other errors would fail the same way again.
  absl::Duration backoff = options_.initial_backoff;
  for (int tries = 1;; ++tries) {
    absl::StatusOr<std::vector<v1::Job>> jobs = store_->FinishAttempts(outcomes);
    if (jobs.ok() || !IsTransient(jobs.status()) || stopping()) return jobs;
    spdlog::warn("writing {} attempt outcomes failed (try {}, will retry in {}): {}",
                 outcomes.size(), tries, absl::FormatDuration(backoff), jobs.status().ToString());
    {
      absl::MutexLock lock(&stop_mu_);
      stop_mu_.AwaitWithTimeout(absl::Condition(&stopping_), backoff);
    }
    backoff = std::min(backoff * 2, options_.max_backoff);
  }
}

void AttemptFinisher::Write(std::vector<AttemptOutcome> outcomes, int fallback) {
  absl::StatusOr<std::vector<v1::Job>> jobs = FinishWithRetry(outcomes);
  if (jobs.ok()) {
    for (const v1::Job& job : *jobs) {
      hub_->Publish(TransitionEvent(job));
      if (job.state() == v1::QUEUED && on_requeued_) on_requeued_(job);
    }
    return;
  }
  if (IsTransient(jobs.status())) {  // only once stopping
    spdlog::error(
        "shutting down with {} attempt outcomes unwritten ({}); their leases will expire and "
        "the lease reaper will requeue them",
        outcomes.size(), jobs.status().ToString());
    return;
  }
  if (outcomes.size() > 1) {
    // Something in this batch is refused: split it, so the other outcomes are written and
    // only the refused one fails.
    size_t half = outcomes.size() / 2;
    std::vector<AttemptOutcome> second(std::make_move_iterator(outcomes.begin() + half),
                                       std::make_move_iterator(outcomes.end()));
    outcomes.resize(half);
    Write(std::move(outcomes));
    Write(std::move(second));
    return;
  }
  AttemptOutcome& o = outcomes[0];
  if (fallback >= 2) {
    spdlog::error(
        "job {} attempt {}: even a FAILED outcome cannot be stored ({}); the lease "
        "reaper will requeue it",
        o.job_id, o.attempt, jobs.status().ToString());
    return;
  }
  // The database refuses this outcome itself (its result, error or output). End the job
  // FAILED with the reason, keeping its output if that was not the problem (first fallback),
  // then without it (second), so the job neither stays RUNNING nor is run again.
  spdlog::error("job {} attempt {}: outcome refused by the database ({}); failing the job",
                o.job_id, o.attempt, jobs.status().ToString());
  if (fallback == 0) {
    std::string reason(jobs.status().message());
    o.kind = AttemptOutcome::Kind::kFatalFailure;
    o.result.Clear();
    o.error.Clear();
    o.error.set_code("RESULT_NOT_STORED");
    o.error.set_message(absl::StrCat("the attempt finished but its outcome could not be stored: ",
                                     reason.substr(0, 1000)));
    o.error.set_retryable(false);
  } else {
    o.unflushed.Clear();
  }
  Write(std::move(outcomes), fallback + 1);
}

}  // namespace aijobs::scheduler
