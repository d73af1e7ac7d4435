// JobStore: every durable operation of the scheduler, each one a batch where the hot path
// needs it (one statement, one commit, for many jobs). PgJobStore is the real one.
//
//   std::unique_ptr<JobStore> store = NewPgJobStore(&pool);
//   absl::StatusOr<std::vector<SubmitOutcome>> out = store->InsertJobs(batch);
//   absl::StatusOr<std::vector<ClaimedJob>> jobs = store->ClaimJobs({"chat"}, 64, session, lease);
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "aijobs/v1/internal.pb.h"
#include "aijobs/v1/job.pb.h"

namespace aijobs::scheduler {

// How far past the highest stored seq a transition of a RUNNING job goes when a replica other
// than the one streaming its output makes it (lease expiry, a worker's abandoned report, a
// cancel). The streaming replica relays each output piece to its watchers under a new seq
// before it is stored; if it dies, those seqs were seen but never written. The gap is larger
// than the number of pieces one replica can hold unflushed for an attempt (each costs memory;
// 2^30 of them would be tens of GB), so the transition is always after them.
inline constexpr int64_t kTakeoverSeqGap = int64_t{1} << 30;

// Who is calling: every read and write is scoped by tenant and, unless `any_owner`, by
// owner: a job another caller owns answers NOT_FOUND, exactly like one that does not exist.
// (The default is the caller of a scheduler run with --auth=off.)
struct Caller {
  std::string tenant_id = "default";
  std::string subject = "anonymous";  // the owner of the jobs it submits
  bool any_owner = true;              // sees every owner's jobs of its tenant (admins)

  bool Sees(const v1::Job& job) const {
    return job.tenant_id() == tenant_id && (any_owner || job.owner() == subject);
  }
};

struct NewJob {
  std::string id;  // UUID chosen by the scheduler
  Caller caller;
  std::string type;
  v1::internal::JobSpec spec;
  int32_t priority = 0;
  int32_t max_attempts = 3;
  std::optional<std::string> idempotency_key;
  int64_t timeout_ms = 0;
  // How long it may wait runnable in the queue before it ends FAILED EXPIRED; 0: never.
  int64_t queue_timeout_ms = 0;
  // Response cache: set (CacheKey of tenant, type and input) when the job opted in; its
  // successful result is then kept for cache_ttl.
  std::string cache_key;
  absl::Duration cache_ttl = absl::ZeroDuration();
};

struct SubmitOutcome {
  v1::Job job;
  bool existing = false;  // an earlier job with the same idempotency key
};

// A job handed to a worker by ClaimJobs.
struct ClaimedJob {
  v1::Job job;  // state RUNNING, attempt incremented, last_seq = seq of the RUNNING event
  absl::Time deadline;
};

// How an attempt ended, as reported by a worker (or decided by the scheduler).
struct AttemptOutcome {
  enum class Kind { kSucceeded, kRetryableFailure, kFatalFailure };
  std::string job_id;
  int32_t attempt = 0;
  Kind kind = Kind::kSucceeded;
  google::protobuf::Struct result;     // kSucceeded
  v1::JobError error;                  // failures
  absl::Duration retry_delay;          // kRetryableFailure: not before now + delay
  int64_t last_seq = 0;                // highest seq the scheduler already used for the job
  v1::internal::DeltaBatch unflushed;  // the attempt's output not yet stored (may be empty)
};

// Output deltas of one attempt, coalesced into one stored row.
struct DeltaRow {
  std::string job_id;
  v1::internal::DeltaBatch batch;  // pieces in seq order, non-empty
};

struct EventPage {
  v1::Job job;  // the job as it is now
  std::vector<v1::JobEvent> events;
  bool more = false;  // the page was full: read again after the last seq
};

struct EventQuery {
  Caller caller;
  std::string job_id;
  int64_t after_seq = 0;
};

struct ListQuery {
  Caller caller;
  v1::JobState state = v1::JOB_STATE_UNSPECIFIED;
  std::string type;
  int32_t page_size = 50;
  std::string page_token;
  // A page stops before the job that would take its serialized jobs past this many bytes
  // (it always holds at least one), so a page of large jobs still fits a client's receive
  // limit (gRPC's default is 4 MiB; one job is at most about 2 MiB).
  int64_t max_page_bytes = int64_t{2} << 20;
};

struct ListPage {
  std::vector<v1::Job> jobs;
  std::string next_page_token;
};

class JobStore {
 public:
  virtual ~JobStore() = default;

  // Creates the jobs in one transaction (QUEUED, seq 1 = the QUEUED event). A job whose
  // idempotency key already exists for the tenant is not created: its outcome is the existing
  // job with existing = true. Outcomes are in the order of `jobs`.
  virtual absl::StatusOr<std::vector<SubmitOutcome>> InsertJobs(
      const std::vector<NewJob>& jobs) = 0;

  // NOT_FOUND when the job does not exist for the caller's tenant.
  virtual absl::StatusOr<v1::Job> GetJob(const Caller& caller, const std::string& id) = 0;

  virtual absl::StatusOr<ListPage> ListJobs(const ListQuery& query) = 0;

  // Claims up to `limit` runnable QUEUED jobs of `types`, highest priority then oldest first,
  // skipping rows other replicas hold (FOR UPDATE SKIP LOCKED); marks them RUNNING under
  // `lease_owner` until now + lease, increments attempt (the fencing token) and writes the
  // RUNNING event.
  virtual absl::StatusOr<std::vector<ClaimedJob>> ClaimJobs(const std::vector<std::string>& types,
                                                            int limit,
                                                            const std::string& lease_owner,
                                                            absl::Duration lease,
                                                            absl::Duration default_timeout) = 0;

  // Extends the leases of the RUNNING jobs `job_ids` (the attempts this replica's workers
  // are known to run). A job this replica lost track of is not extended, so its lease
  // expires and the reaper requeues it: nothing stays RUNNING forever.
  virtual absl::Status ExtendLeases(const std::vector<std::string>& job_ids,
                                    absl::Duration lease) = 0;

  // Appends coalesced output rows of RUNNING attempts (rows of a superseded or ended attempt
  // are dropped). Does not touch the jobs rows, so it never contends with transitions.
  virtual absl::Status AppendDeltas(const std::vector<DeltaRow>& rows) = 0;

  // Ends attempts in one statement (one commit), writing their unflushed output with them.
  // Each is fenced: applied only when the job is still RUNNING with that attempt. A
  // retryable failure requeues the job with its delay, or FAILS it when attempts are used
  // up. Returns the jobs that changed, as they are now.
  virtual absl::StatusOr<std::vector<v1::Job>> FinishAttempts(
      const std::vector<AttemptOutcome>& outcomes) = 0;

  // Requeues (or fails, when attempts are used up) every RUNNING job whose lease expired.
  virtual absl::StatusOr<std::vector<v1::Job>> RequeueExpiredLeases(int limit) = 0;

  // Ends FAILED (error EXPIRED) up to `limit` QUEUED jobs that have been runnable for longer
  // than their queue timeout: no worker took them. Returns the jobs that changed.
  virtual absl::StatusOr<std::vector<v1::Job>> ExpireQueuedJobs(int limit) = 0;

  // Requeues (or fails, when attempts are used up) the listed (job id, attempt) pairs that
  // are still RUNNING with that attempt, recording `error`: a worker gave them up (its
  // stream broke) and reported it on a new stream, possibly to another replica. Pairs that
  // no longer run (ended, superseded) are skipped. Returns the jobs that changed.
  virtual absl::StatusOr<std::vector<v1::Job>> ReleaseAttempts(
      const std::vector<std::pair<std::string, int32_t>>& attempts, const v1::JobError& error) = 0;

  // Cancels a QUEUED or RUNNING job. `last_seq` is the highest seq the caller's replica
  // used for the job (0 if none). FAILED_PRECONDITION when the job already ended.
  virtual absl::StatusOr<v1::Job> CancelJob(const Caller& caller, const std::string& id,
                                            const std::string& reason, int64_t last_seq) = 0;

  // Queues a FAILED or CANCELLED job again with a fresh attempt budget (attempt numbers keep
  // growing so fencing stays sound). FAILED_PRECONDITION otherwise.
  virtual absl::StatusOr<v1::Job> RetryJob(const Caller& caller, const std::string& id) = 0;

  // The job and its events with seq > after_seq, in order, from at most `limit` stored rows
  // (deltas expanded to one event per piece). The final_job event carries the job as it
  // ended. NOT_FOUND when the job does not exist for the caller's tenant.
  virtual absl::StatusOr<EventPage> ReadEvents(const Caller& caller, const std::string& id,
                                               int64_t after_seq, int limit) = 0;

  // ReadEvents for many jobs at once (the replays of a burst of new watches): one result per
  // query, in order, each as ReadEvents would answer it; the outer status is a failure of the
  // whole read. This default asks ReadEvents one query at a time.
  virtual absl::StatusOr<std::vector<absl::StatusOr<EventPage>>> ReadEventsBatch(
      const std::vector<EventQuery>& queries, int limit) {
    std::vector<absl::StatusOr<EventPage>> out;
    out.reserve(queries.size());
    for (const EventQuery& q : queries) {
      out.push_back(ReadEvents(q.caller, q.job_id, q.after_seq, limit));
    }
    return out;
  }

  // For each existing job of `job_ids`, the highest seq stored for it (transitions and
  // output). One cheap statement for many jobs: how watchers learn, without reading events,
  // whether another replica wrote something for them.
  virtual absl::StatusOr<std::vector<std::pair<std::string, int64_t>>> LatestSeqs(
      const std::vector<std::string>& job_ids) = 0;

  // Deletes up to `limit` jobs (and their events) that finished before `cutoff`.
  virtual absl::StatusOr<int> DeleteFinishedBefore(absl::Time cutoff, int limit) = 0;

  // Response cache (entries per tenant and cache key; FinishAttempts fills it from the
  // successful results of jobs with a cache_key).
  //
  // Answers `job` (which has a cache_key) from the cache when an entry is live: not expired,
  // and either pinned (pre-composed) or stored less than job.cache_ttl ago. On a hit the job
  // is created already SUCCEEDED with the cached result, cached = true, attempt 0, and its
  // final event (seq 2) — no worker ever sees it; with an idempotency key that already
  // exists the existing job is returned instead (existing = true). nullopt on a miss: nothing
  // was written, submit it normally.
  virtual absl::StatusOr<std::optional<SubmitOutcome>> InsertFromCache(const NewJob& job) = 0;

  // Stores a pre-composed answer (pinned) for ttl, replacing any entry of that key. Returns
  // when it expires.
  virtual absl::StatusOr<absl::Time> PutCachedResult(const std::string& tenant_id,
                                                     const std::string& key,
                                                     const std::string& type,
                                                     const google::protobuf::Struct& result,
                                                     absl::Duration ttl) = 0;

  // Deletes up to `limit` expired cache entries; returns how many.
  virtual absl::StatusOr<int> DeleteExpiredCacheEntries(int limit) = 0;

  // Records job types offered by connected workers (now is their last sighting), reads the
  // types seen within a period, and forgets those unseen for longer than one.
  virtual absl::Status RegisterJobTypes(const std::vector<std::string>& types) = 0;
  virtual absl::StatusOr<std::vector<std::string>> KnownJobTypes(absl::Duration seen_within) = 0;
  virtual absl::StatusOr<int> ForgetJobTypes(absl::Duration unseen_for) = 0;

  // Wakes other replicas' dispatchers (one NOTIFY).
  virtual absl::Status NotifyNewJobs() = 0;
  // Tells the replica running `job_id` (whichever it is) that the job was cancelled, so it
  // aborts the attempt on its worker.
  virtual absl::Status NotifyCancelled(const std::string& job_id) = 0;
};

}  // namespace aijobs::scheduler
