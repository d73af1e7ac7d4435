// The worker's side of WorkerService.Connect: one bidirectional stream to a scheduler that
// says hello, receives assignments and cancels, runs them through the HandlerRegistry and
// streams outputs, completions and failures back, coalescing everything queued while a write
// is in flight into the next single WorkerMessage. Reconnects with capped, jittered
// exponential backoff, moving on to the next scheduler address each time a stream ends.
// Two kinds of drain: the worker's own (RequestDrain, e.g. SIGTERM) finishes running jobs
// and makes Run() return; a scheduler's drain (it is shutting down) finishes running jobs
// on that stream and then reconnects, to the next address if there are several. Attempts
// cut off by a broken stream are reported as abandoned on the next stream, so they are
// requeued at once instead of when their lease expires.
//
//   WorkerConnection conn(options, &registry);
//   std::thread t([&] { status = conn.Run(); });  // returns after RequestDrain or Shutdown
//   conn.RequestDrain();  t.join();
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "aijobs/v1/worker_service.grpc.pb.h"
#include "workers/job_handler.h"
#include "workers/timer_queue.h"

namespace aijobs::worker {

inline constexpr char kWorkerVersion[] = "aijobs-worker/0.1.0";

struct WorkerConnectionOptions {
  // Scheduler replicas (gRPC targets, e.g. HOST:PORT); at least one. The worker is connected
  // to one at a time and moves on to the next whenever a stream ends.
  std::vector<std::string> schedulers;
  std::string worker_id;
  std::vector<std::string> job_types;  // Advertised in hello; each needs a registered handler.
  int slots = 64;
  std::string version = kWorkerVersion;
  // How long a drain waits for running jobs before cancelling them (they are requeued).
  absl::Duration drain_timeout = absl::Seconds(30);
  absl::Duration reconnect_initial = absl::Milliseconds(100);
  absl::Duration reconnect_max = absl::Seconds(5);
  // Used until the scheduler's welcome says otherwise.
  absl::Duration heartbeat_interval = absl::Seconds(10);
  // After a drain half-closes the stream, how long to wait for the scheduler to end it.
  absl::Duration close_grace = absl::Seconds(5);
  // Response-cache opt-ins sent in hello (see CacheAdverts in workers/routing/).
  std::vector<aijobs::v1::CacheAdvert> cache_adverts;
  // The worker credential (a JWT with the worker role, or a worker API key) sent on every
  // stream as "authorization: Bearer <token>"; empty: none (a scheduler with --auth=off).
  std::string bearer_token;
  // Channel credentials (TLS); null: plaintext.
  std::shared_ptr<grpc::ChannelCredentials> credentials;
};

class WorkerConnection {
 public:
  // `registry` must outlive the connection.
  WorkerConnection(WorkerConnectionOptions options, const HandlerRegistry* registry);
  // Run() must have returned.
  ~WorkerConnection();
  WorkerConnection(const WorkerConnection&) = delete;
  WorkerConnection& operator=(const WorkerConnection&) = delete;

  // Connects and serves until RequestDrain() completes or Shutdown(); reconnects whenever
  // the stream breaks or a scheduler drains. Returns OK after a drain or shutdown.
  absl::Status Run();

  // Starts a graceful drain: announce draining, let running jobs finish (at most
  // drain_timeout), close the stream, make Run() return. Thread-safe; not signal-safe.
  void RequestDrain();

  // Stops at once: cancels the stream (the scheduler requeues running jobs) and makes Run()
  // return. Thread-safe.
  void Shutdown();

  // Jobs currently running (for tests and logs).
  int running_jobs() const;

 private:
  class RunningJob;
  using JobKey = std::pair<std::string, int>;  // job id, attempt
  struct Entry {
    uint64_t serial = 0;  // tells this run of the job from a later one with the same key
    std::shared_ptr<JobHandler> handler;
    TimerQueue::TimerId deadline_timer = 0;
  };
  struct Session;

  struct SessionEnd {
    bool welcomed = false;  // the scheduler answered hello: the session counted as up
    bool drained = false;   // the scheduler asked this worker to go elsewhere
    std::string reason;     // why the stream ended, for the log
  };
  SessionEnd RunSession(const std::string& scheduler);
  void WriterLoop(Session* session);
  void HandleSchedulerMessage(Session* session, aijobs::v1::SchedulerMessage* message);
  void StartJob(aijobs::v1::Assignment* assignment);

  // Called through RunningJob (any thread).
  void QueueOutput(const JobKey& key, uint64_t serial, const std::string& text);
  void FinishJob(const JobKey& key, uint64_t serial, aijobs::v1::JobComplete* complete,
                 aijobs::v1::JobFailure* failure);
  // Removes the job, reports `code` unless report is false, then runs its cancellation hook.
  // serial 0 matches any run of the key.
  void AbortJob(const JobKey& key, uint64_t serial, const std::string& code,
                const std::string& message, bool retryable, bool report);
  // Cancels every running job without reporting on this stream; they, and the attempts whose
  // outcome was queued but not written, are reported as abandoned on the next stream.
  // Returns how many jobs were running.
  int AbandonAllJobs();
  // Puts up to kMaxAbandoned attempts in abandoned_ (older ones are left to lease expiry).
  void RememberAbandonedLocked(const JobKey& key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AddFailureLocked(const JobKey& key, const std::string& code, const std::string& message,
                        bool retryable, absl::Duration retry_after)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const WorkerConnectionOptions options_;
  const HandlerRegistry* const registry_;
  std::atomic<uint64_t> next_serial_{1};

  mutable absl::Mutex mu_;
  absl::CondVar cv_;  // any state change below; waited on by the writer and the backoff
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  Session* session_ ABSL_GUARDED_BY(mu_) = nullptr;
  absl::Duration heartbeat_interval_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<JobKey, Entry> running_ ABSL_GUARDED_BY(mu_);
  // Attempts cut off by a broken stream, reported on the next one once it is welcomed.
  std::vector<JobKey> abandoned_ ABSL_GUARDED_BY(mu_);
  // The outbox: everything queued since the last write, sent as one message.
  aijobs::v1::WorkerMessage pending_ ABSL_GUARDED_BY(mu_);
  bool has_pending_ ABSL_GUARDED_BY(mu_) = false;
  // Index into pending_.outputs by job, so a job's deltas merge into one JobOutput.
  absl::flat_hash_map<JobKey, int> pending_output_index_ ABSL_GUARDED_BY(mu_);

  // Last member: its thread (deadline timers) stops before the state above is destroyed.
  TimerQueue timers_;
};

}  // namespace aijobs::worker
