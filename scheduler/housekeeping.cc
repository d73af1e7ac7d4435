#include "scheduler/housekeeping.h"

#include <poll.h>

#include "absl/time/clock.h"
#include "common/pg/connection.h"
#include "spdlog/spdlog.h"

namespace aijobs::scheduler {

Housekeeping::Housekeeping(JobStore* store, EventHub* hub, Dispatcher* dispatcher,
                           AttemptFinisher* finisher, HousekeepingOptions options)
    : store_(store),
      hub_(hub),
      dispatcher_(dispatcher),
      finisher_(finisher),
      options_(std::move(options)) {
  threads_.emplace_back([this] { FlushLoop(); });
  threads_.emplace_back([this] { LeaseLoop(); });
  threads_.emplace_back([this] { RetentionLoop(); });
  threads_.emplace_back([this] { NotifyLoop(); });
  if (!options_.database_url.empty()) threads_.emplace_back([this] { ListenLoop(); });
}

Housekeeping::~Housekeeping() { Stop(); }

void Housekeeping::RequestNotify() {
  absl::MutexLock lock(&notify_mu_);
  notify_pending_ = true;
}

void Housekeeping::NotifyLoop() {
  while (true) {
    {
      absl::MutexLock lock(&notify_mu_);
      auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(notify_mu_) {
        return notify_pending_ || stop_.HasBeenNotified();
      };
      notify_mu_.AwaitWithTimeout(absl::Condition(&ready), absl::Milliseconds(100));
      if (stop_.HasBeenNotified()) return;
      if (!notify_pending_) continue;
      notify_pending_ = false;
    }
    absl::Status s = store_->NotifyNewJobs();
    if (!s.ok()) spdlog::debug("NOTIFY failed: {}", s.ToString());
    // Debounce: inserts during the next few ms ride on this NOTIFY's wake-up.
    if (!Sleep(absl::Milliseconds(5))) return;
  }
}

void Housekeeping::Stop() {
  if (!stop_.HasBeenNotified()) stop_.Notify();
  for (auto& t : threads_) t.join();
  threads_.clear();
}

bool Housekeeping::Sleep(absl::Duration d) { return !stop_.WaitForNotificationWithTimeout(d); }

void Housekeeping::FlushDeltas() {
  absl::MutexLock lock(&flush_mu_);
  std::vector<DeltaRow> rows = hub_->TakePending();
  if (rows.empty()) return;
  absl::Status s = store_->AppendDeltas(rows);
  if (!s.ok())
    spdlog::warn("writing {} delta rows failed (will retry): {}", rows.size(), s.ToString());
  hub_->ConfirmFlushed(rows, s.ok());
}

void Housekeeping::FlushLoop() {
  while (Sleep(options_.flush_interval)) FlushDeltas();
}

void Housekeeping::TimeOutOverdue(const std::shared_ptr<WorkerSession>& session) {
  for (const auto& [job_id, attempt] :
       session->OverdueAttempts(absl::Now() - options_.deadline_grace)) {
    if (!session->EndAttempt(job_id, attempt)) continue;
    EventHub::AttemptTail tail = hub_->EndAttempt(job_id, attempt);
    session->SendCancel(job_id, attempt, "attempt deadline exceeded");
    if (!tail.found) continue;
    spdlog::warn("attempt {} of job {} on worker {} overran its deadline; failing it", attempt,
                 job_id, session->worker_id());
    AttemptOutcome o;
    o.job_id = job_id;
    o.attempt = attempt;
    o.kind = AttemptOutcome::Kind::kRetryableFailure;
    o.error.set_code("TIMEOUT");
    o.error.set_message("the attempt did not finish before its deadline");
    o.error.set_retryable(true);
    o.last_seq = tail.last_seq;
    finisher_->Submit(std::move(o), std::move(tail.unflushed));
  }
}

void Housekeeping::LeaseLoop() {
  // Silent workers are checked every heartbeat interval; leases are extended (one UPDATE of
  // every running job) every lease/3, at most every 5 s.
  const absl::Duration every = std::min(options_.lease / 3, options_.heartbeat_interval);
  const absl::Duration lease_every = std::min(options_.lease / 3, absl::Seconds(5));
  absl::Time next_lease_work = absl::Now();
  while (Sleep(every)) {
    std::vector<std::string> running;
    const absl::Time now = absl::Now();
    const absl::Time dead_before = now - kSilentIntervalsBeforeDrop * options_.heartbeat_interval;
    for (const auto& s : dispatcher_->Sessions()) {
      if (s->last_seen() < dead_before) {
        spdlog::warn("worker {} sent nothing for {}; dropping its stream", s->worker_id(),
                     absl::FormatDuration(now - s->last_seen()));
        s->Abort("no heartbeat from worker");
        continue;
      }
      TimeOutOverdue(s);
      for (auto& [job_id, attempt] : s->RunningAttempts()) running.push_back(std::move(job_id));
    }
    if (now < next_lease_work) continue;
    next_lease_work = now + lease_every;
    absl::Status st = store_->ExtendLeases(running, options_.lease);
    if (!st.ok()) spdlog::warn("extending leases failed: {}", st.ToString());
    auto requeued = store_->RequeueExpiredLeases(500);
    if (!requeued.ok()) {
      spdlog::warn("requeueing expired leases failed: {}", requeued.status().ToString());
      continue;
    }
    for (const v1::Job& job : *requeued) hub_->Publish(TransitionEvent(job));
    if (!requeued->empty()) {
      spdlog::info("requeued {} jobs whose lease expired", requeued->size());
      dispatcher_->Wake();
    }
    ExpireQueued();
  }
}

void Housekeeping::ExpireQueued() {
  constexpr int kBatch = 500;
  int total = 0;
  while (!stop_.HasBeenNotified()) {
    auto expired = store_->ExpireQueuedJobs(kBatch);
    if (!expired.ok()) {
      spdlog::warn("expiring queued jobs failed: {}", expired.status().ToString());
      break;
    }
    for (const v1::Job& job : *expired) hub_->Publish(TransitionEvent(job));
    total += static_cast<int>(expired->size());
    if (static_cast<int>(expired->size()) < kBatch) break;
  }
  if (total > 0) spdlog::info("{} queued jobs expired: no worker took them in time", total);
}

void Housekeeping::RetentionLoop() {
  while (Sleep(options_.retention_interval)) {
    int total = 0;
    while (!stop_.HasBeenNotified()) {
      auto n = store_->DeleteFinishedBefore(absl::Now() - options_.retention, 1000);
      if (!n.ok()) {
        spdlog::warn("retention sweep failed: {}", n.status().ToString());
        break;
      }
      total += *n;
      if (*n < 1000) break;
    }
    if (total > 0) spdlog::info("retention: deleted {} finished jobs", total);
    // Expired response-cache entries, in the same small batches.
    int expired = 0;
    while (!stop_.HasBeenNotified()) {
      auto n = store_->DeleteExpiredCacheEntries(1000);
      if (!n.ok()) {
        spdlog::warn("deleting expired cache entries failed: {}", n.status().ToString());
        break;
      }
      expired += *n;
      if (*n < 1000) break;
    }
    if (expired > 0) spdlog::info("retention: deleted {} expired cache entries", expired);
  }
}

void Housekeeping::CancelLocalAttempt(const std::string& job_id) {
  std::shared_ptr<WorkerSession> session = dispatcher_->FindRunning(job_id);
  if (!session) return;
  int32_t attempt = session->RunningAttempt(job_id);
  if (attempt == 0) return;
  // The job is already CANCELLED in the database (by another replica): stop the attempt and
  // drop its unwritten output; the worker's CANCELLED report then frees the slot.
  hub_->EndAttempt(job_id, attempt);
  session->SendCancel(job_id, attempt, "cancelled by request");
  spdlog::info("cancelled attempt {} of job {} on worker {} (cancel from another replica)", attempt,
               job_id, session->worker_id());
}

void Housekeeping::ListenLoop() {
  absl::Duration backoff = absl::Milliseconds(200);
  while (!stop_.HasBeenNotified()) {
    auto conn = pg::Connection::Open(options_.database_url, 0);
    if (!conn.ok() || !(*conn)->Exec("LISTEN aijobs_jobs; LISTEN aijobs_cancel").ok()) {
      if (!Sleep(backoff)) return;
      backoff = std::min(backoff * 2, absl::Seconds(5));
      continue;
    }
    backoff = absl::Milliseconds(200);
    // Anything inserted while we were not listening is found by the next claim.
    dispatcher_->Wake();
    while (!stop_.HasBeenNotified()) {
      pollfd pfd{(*conn)->socket(), POLLIN, 0};
      int r = poll(&pfd, 1, 250);
      if (r < 0) break;
      if (r == 0) continue;
      auto notes = (*conn)->ConsumeNotifications();
      if (!notes.ok()) break;
      for (const auto& n : *notes) {
        if (n.channel == "aijobs_cancel") {
          CancelLocalAttempt(n.payload);
        } else {
          dispatcher_->Wake();
        }
      }
    }
  }
}

}  // namespace aijobs::scheduler
