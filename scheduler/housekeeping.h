// Background work of a scheduler replica, each on its own thread:
//  - DeltaFlusher: writes buffered output deltas to job_events every flush interval.
//  - LeaseKeeper: extends the leases of attempts on connected workers, drops workers that
//    went silent, times out attempts a worker did not end by their deadline (plus a
//    grace period), requeues attempts whose lease expired (a dead replica's), and fails
//    queued jobs no worker took within their queue timeout (EXPIRED).
//  - RetentionSweeper: deletes finished jobs older than the retention period, and expired
//    response-cache entries, in batches.
//  - Notifier: sends one NOTIFY aijobs_jobs per burst of inserts, never one per job.
//  - WakeListener: LISTENs for other replicas' inserts (NOTIFY aijobs_jobs) and wakes the
//    dispatcher; reconnects when the database restarts.
//
//   Housekeeping hk(deps, options);   // threads start; the destructor stops them
#pragma once

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "scheduler/attempt_finisher.h"
#include "scheduler/dispatcher.h"
#include "scheduler/event_hub.h"
#include "scheduler/job_store.h"

namespace aijobs::scheduler {

// A worker that sent nothing for this many heartbeat intervals is dropped (its stream is
// aborted and its attempts requeued). After 2 it already gets no new jobs (WorkerSession).
inline constexpr int kSilentIntervalsBeforeDrop = 5;

struct HousekeepingOptions {
  absl::Duration flush_interval = absl::Milliseconds(100);
  absl::Duration lease = absl::Seconds(30);
  absl::Duration heartbeat_interval = absl::Seconds(1);
  absl::Duration retention = absl::Hours(24 * 7);
  absl::Duration retention_interval = absl::Minutes(1);
  // How long past its deadline an attempt may run before the scheduler fails it itself
  // (the worker normally reports TIMEOUT at the deadline).
  absl::Duration deadline_grace = absl::Seconds(5);
  std::string database_url;  // for the LISTEN connection
};

class Housekeeping {
 public:
  Housekeeping(JobStore* store, EventHub* hub, Dispatcher* dispatcher, AttemptFinisher* finisher,
               HousekeepingOptions options);
  ~Housekeeping();

  // Asks for one NOTIFY to other replicas; calls within a few ms share one.
  void RequestNotify();
  // Writes every buffered delta now (shutdown).
  void FlushDeltas();
  void Stop();

 private:
  void FlushLoop();
  void LeaseLoop();
  void TimeOutOverdue(const std::shared_ptr<WorkerSession>& session);
  // Fails the queued jobs past their queue timeout (EXPIRED), in batches.
  void ExpireQueued();
  void RetentionLoop();
  void ListenLoop();
  void CancelLocalAttempt(const std::string& job_id);
  void NotifyLoop();
  // Waits `d` or until stopped; returns false when stopped.
  bool Sleep(absl::Duration d);

  JobStore* store_;
  EventHub* hub_;
  Dispatcher* dispatcher_;
  AttemptFinisher* finisher_;
  const HousekeepingOptions options_;
  absl::Mutex flush_mu_;  // one flush at a time
  absl::Notification stop_;
  absl::Mutex notify_mu_;
  bool notify_pending_ ABSL_GUARDED_BY(notify_mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace aijobs::scheduler
