#include "scheduler/dispatcher.h"

#include <algorithm>

#include "absl/time/clock.h"
#include "spdlog/spdlog.h"

namespace aijobs::scheduler {

Dispatcher::Dispatcher(JobStore* store, EventHub* hub, AttemptFinisher* finisher,
                       DispatcherOptions options)
    : store_(store), hub_(hub), finisher_(finisher), options_(options) {
  thread_ = std::thread([this] { Loop(); });
}

Dispatcher::~Dispatcher() { Stop(); }

void Dispatcher::AddSession(std::shared_ptr<WorkerSession> session) {
  absl::MutexLock lock(&mu_);
  sessions_.push_back(std::move(session));
  wake_ = true;
}

void Dispatcher::RemoveSession(const std::shared_ptr<WorkerSession>& session) {
  session->MarkClosed();
  absl::MutexLock lock(&mu_);
  auto it = std::find(sessions_.begin(), sessions_.end(), session);
  if (it == sessions_.end()) return;
  sessions_.erase(it);
  lost_.push_back(session);
}

void Dispatcher::Wake() {
  absl::MutexLock lock(&mu_);
  wake_ = true;
}

void Dispatcher::WakeAt(absl::Time t) {
  absl::MutexLock lock(&mu_);
  if (t < next_wake_) {
    next_wake_ = t;
    rearm_ = true;  // the loop recomputes its wait deadline
  }
}

std::shared_ptr<WorkerSession> Dispatcher::FindRunning(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  for (const auto& s : sessions_) {
    if (s->RunningAttempt(job_id) != 0) return s;
  }
  return nullptr;
}

std::vector<std::shared_ptr<WorkerSession>> Dispatcher::Sessions() {
  absl::MutexLock lock(&mu_);
  return sessions_;
}

void Dispatcher::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
    for (auto& s : sessions_) {
      s->MarkClosed();
      lost_.push_back(s);
    }
    sessions_.clear();
  }
  thread_.join();
}

void Dispatcher::RequeueLost(const std::shared_ptr<WorkerSession>& session) {
  for (const auto& [job_id, attempt] : session->RunningAttempts()) {
    session->EndAttempt(job_id, attempt);
    EventHub::AttemptTail tail = hub_->EndAttempt(job_id, attempt);
    if (!tail.found) continue;  // already ended here (e.g. cancelled)
    AttemptOutcome o;
    o.job_id = job_id;
    o.attempt = attempt;
    o.kind = AttemptOutcome::Kind::kRetryableFailure;
    o.error.set_code("WORKER_LOST");
    o.error.set_message("the worker running this attempt disconnected (" + session->worker_id() +
                        ")");
    o.error.set_retryable(true);
    o.last_seq = tail.last_seq;
    finisher_->Submit(std::move(o), std::move(tail.unflushed));
  }
}

bool Dispatcher::ClaimFor(const std::shared_ptr<WorkerSession>& session) {
  int free = session->FreeSlots();
  if (free <= 0) return false;
  int n = std::min(free, options_.max_claim_batch);
  auto claimed = store_->ClaimJobs(session->types(), n, session->id(), options_.lease,
                                   options_.default_timeout);
  if (!claimed.ok()) {
    spdlog::warn("claiming jobs for worker {} failed: {}", session->worker_id(),
                 claimed.status().ToString());
    absl::MutexLock lock(&mu_);
    next_wake_ = std::min(next_wake_, absl::Now() + absl::Milliseconds(200));
    return false;
  }
  if (claimed->empty()) return false;
  for (const ClaimedJob& c : *claimed) {
    hub_->StartAttempt(c.job.id(), c.job.attempt(), c.job.last_seq());
    hub_->Publish(TransitionEvent(c.job));
  }
  session->Assign(*claimed);
  return static_cast<int>(claimed->size()) == n;
}

void Dispatcher::Loop() {
  while (true) {
    std::vector<std::shared_ptr<WorkerSession>> sessions, lost;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
        return stopping_ || wake_ || rearm_ || !lost_.empty();
      };
      absl::Time poll_deadline = absl::Now() + options_.poll_interval;
      while (true) {
        rearm_ = false;
        if (mu_.AwaitWithDeadline(absl::Condition(&ready), std::min(next_wake_, poll_deadline)) &&
            rearm_ && !stopping_ && !wake_ && lost_.empty() && absl::Now() < next_wake_) {
          continue;  // an earlier WakeAt: wait again with the new deadline
        }
        break;
      }
      rearm_ = false;
      if (absl::Now() >= next_wake_) next_wake_ = absl::InfiniteFuture();
      lost.swap(lost_);
      wake_ = false;
      if (!stopping_) sessions = sessions_;
    }
    for (const auto& s : lost) RequeueLost(s);
    {
      absl::MutexLock lock(&mu_);
      if (stopping_ && lost_.empty()) return;
    }
    if (sessions.empty()) continue;
    bool more = false;
    // Rotate the starting session so no worker is always served last.
    rotate_ = (rotate_ + 1) % sessions.size();
    for (size_t i = 0; i < sessions.size(); ++i) {
      more |= ClaimFor(sessions[(rotate_ + i) % sessions.size()]);
    }
    if (more) Wake();
  }
}

}  // namespace aijobs::scheduler
