// Dispatcher: hands queued jobs to the workers connected to this replica. It claims in
// batches sized to each worker's free slots (FOR UPDATE SKIP LOCKED, so replicas never
// double-claim), and requeues the attempts of workers whose stream is lost.
//
//   Dispatcher d(store, hub, finisher, options);
//   d.AddSession(session);   // on hello
//   d.Wake();                // jobs were inserted or a slot was freed
#pragma once

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "scheduler/attempt_finisher.h"
#include "scheduler/event_hub.h"
#include "scheduler/job_store.h"
#include "scheduler/worker_session.h"

namespace aijobs::scheduler {

struct DispatcherOptions {
  absl::Duration lease = absl::Seconds(30);
  absl::Duration poll_interval = absl::Seconds(1);
  absl::Duration default_timeout = absl::Minutes(10);
  int max_claim_batch = 256;
};

class Dispatcher {
 public:
  Dispatcher(JobStore* store, EventHub* hub, AttemptFinisher* finisher, DispatcherOptions options);
  ~Dispatcher();

  void AddSession(std::shared_ptr<WorkerSession> session);
  // The session's stream ended: its running attempts are requeued (or failed when their
  // attempts are used up).
  void RemoveSession(const std::shared_ptr<WorkerSession>& session);

  // Claims again as soon as possible.
  void Wake();
  // Claims again no later than `t` (a delayed retry becomes runnable).
  void WakeAt(absl::Time t);

  // The session running `job_id`, or null.
  std::shared_ptr<WorkerSession> FindRunning(const std::string& job_id);
  std::vector<std::shared_ptr<WorkerSession>> Sessions();

  // Stops claiming; requeues the attempts of sessions still connected.
  void Stop();

 private:
  void Loop();
  void RequeueLost(const std::shared_ptr<WorkerSession>& session);
  bool ClaimFor(const std::shared_ptr<WorkerSession>& session);

  JobStore* store_;
  EventHub* hub_;
  AttemptFinisher* finisher_;
  const DispatcherOptions options_;
  absl::Mutex mu_;
  std::vector<std::shared_ptr<WorkerSession>> sessions_ ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<WorkerSession>> lost_ ABSL_GUARDED_BY(mu_);
  bool wake_ ABSL_GUARDED_BY(mu_) = true;
  bool rearm_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time next_wake_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  size_t rotate_ = 0;  // only the loop thread
  std::thread thread_;
};

}  // namespace aijobs::scheduler
