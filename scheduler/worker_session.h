// WorkerSession: the scheduler's view of one connected worker stream — its job types, its
// slots, the attempts it runs — and the way to send it assignments and cancels. The gRPC
// reactor (worker_service.cc) implements the sending; the Dispatcher only sees this class.
//
//   if (session->FreeSlots() > 0) session->Assign(claimed_jobs);
//   session->Cancel(job_id, attempt, "cancelled by request");
//   for (auto& [job, attempt] : session->Heartbeat(msg.heartbeat())) FailAsLost(job, attempt);
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "aijobs/v1/worker_service.pb.h"
#include "scheduler/job_store.h"

namespace aijobs::scheduler {

class WorkerSession {
 public:
  WorkerSession(std::string id, std::string worker_id, std::vector<std::string> types, int slots)
      : id_(std::move(id)),
        worker_id_(std::move(worker_id)),
        types_(std::move(types)),
        slots_(slots) {}
  virtual ~WorkerSession() = default;

  const std::string& id() const { return id_; }  // also the lease owner of its jobs
  const std::string& worker_id() const { return worker_id_; }
  const std::vector<std::string>& types() const { return types_; }

  // Slots not running an attempt; 0 once the worker drains or the stream closed.
  int FreeSlots();
  // Records the attempts as running here and sends them to the worker.
  void Assign(const std::vector<ClaimedJob>& jobs);
  // Forgets the attempt (the worker reported its end). Returns false if it was not running.
  bool EndAttempt(const std::string& job_id, int32_t attempt);
  // Attempt of `job_id` running here, 0 if none.
  int32_t RunningAttempt(const std::string& job_id);
  // The attempts running here, for requeue when the stream is lost.
  std::vector<std::pair<std::string, int32_t>> RunningAttempts();
  int RunningCount();
  // Attempts whose deadline passed before `cutoff`: the worker did not end them in time.
  std::vector<std::pair<std::string, int32_t>> OverdueAttempts(absl::Time cutoff);

  // A worker silent (no message at all) for longer than `limit` is offered no slots until it
  // is heard from again: it may be hung (SIGSTOP, a stuck event loop). Zero: no limit.
  void SetSilenceLimit(absl::Duration limit);
  // Records that the worker sent something. Returns true when it had been silent past the
  // limit, i.e. its free slots are offered again (wake the dispatcher).
  bool Touch();
  // When the worker last sent anything.
  absl::Time last_seen();

  void SetDraining();
  void MarkClosed();
  bool closed();
  // Records a heartbeat and reconciles the attempts it lists with the ones running here.
  // Returns (and forgets) the attempts running here that `heartbeat` does not list although
  // they were assigned before the previous heartbeat arrived: the worker has had them for a
  // whole heartbeat interval, so it lost them. Later assignments may still be in flight to
  // the worker and are judged by the next heartbeat.
  std::vector<std::pair<std::string, int32_t>> Heartbeat(const v1::Heartbeat& heartbeat)
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::Time last_heartbeat();

  // Sends a cancel for the attempt to the worker.
  virtual void SendCancel(const std::string& job_id, int32_t attempt,
                          const std::string& reason) = 0;
  // Asks the worker to finish its jobs and disconnect.
  virtual void SendDrain() = 0;
  // Closes the stream from the scheduler side (e.g. heartbeats stopped).
  virtual void Abort(const std::string& reason) = 0;

 protected:
  virtual void SendAssignments(std::vector<v1::Assignment> assignments) = 0;

 private:
  const std::string id_;
  const std::string worker_id_;
  const std::vector<std::string> types_;
  const int slots_;
  absl::Mutex mu_;
  struct Running {
    int32_t attempt;
    absl::Time deadline;
    absl::Time assigned_at;
  };
  absl::flat_hash_map<std::string, Running> running_ ABSL_GUARDED_BY(mu_);
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time last_heartbeat_ ABSL_GUARDED_BY(mu_) = absl::Now();
  absl::Time last_seen_ ABSL_GUARDED_BY(mu_) = absl::Now();
  absl::Duration silence_limit_ ABSL_GUARDED_BY(mu_) = absl::ZeroDuration();
};

}  // namespace aijobs::scheduler
