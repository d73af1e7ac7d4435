// PgJobStore: the JobStore on PostgreSQL. Every batch operation is one statement (data-
// modifying CTEs), so it costs one round trip and one commit however many jobs it carries.
//
//   pg::Pool pool(url, 16);
//   PgJobStore store(&pool);
//   auto claimed = store.ClaimJobs({"chat"}, 64, "session-1", absl::Seconds(30),
//   absl::Minutes(10));
#pragma once

#include "common/pg/pool.h"
#include "scheduler/job_store.h"

namespace aijobs::scheduler {

class PgJobStore : public JobStore {
 public:
  // `pool` commits durably. `relaxed_pool` (optional; defaults to `pool`) commits without
  // waiting for the WAL flush and is used only for writes whose loss in a database crash
  // breaks no promise: lease extensions (a lost one at worst requeues the job under a new
  // attempt) and job-type registrations. Claims (the attempt is the fencing token) and
  // streamed output (watchers have seen it; replays must equal it) are durable.
  explicit PgJobStore(pg::Pool* pool, pg::Pool* relaxed_pool = nullptr)
      : pool_(pool), relaxed_pool_(relaxed_pool != nullptr ? relaxed_pool : pool) {}

  absl::StatusOr<std::vector<SubmitOutcome>> InsertJobs(const std::vector<NewJob>& jobs) override;
  absl::StatusOr<v1::Job> GetJob(const Caller& caller, const std::string& id) override;
  absl::StatusOr<ListPage> ListJobs(const ListQuery& query) override;
  absl::StatusOr<std::vector<ClaimedJob>> ClaimJobs(const std::vector<std::string>& types,
                                                    int limit, const std::string& lease_owner,
                                                    absl::Duration lease,
                                                    absl::Duration default_timeout) override;
  absl::Status ExtendLeases(const std::vector<std::string>& job_ids, absl::Duration lease) override;
  absl::Status AppendDeltas(const std::vector<DeltaRow>& rows) override;
  absl::StatusOr<std::vector<v1::Job>> FinishAttempts(
      const std::vector<AttemptOutcome>& outcomes) override;
  absl::StatusOr<std::vector<v1::Job>> RequeueExpiredLeases(int limit) override;
  absl::StatusOr<std::vector<v1::Job>> ExpireQueuedJobs(int limit) override;
  absl::StatusOr<std::vector<v1::Job>> ReleaseAttempts(
      const std::vector<std::pair<std::string, int32_t>>& attempts,
      const v1::JobError& error) override;
  absl::StatusOr<v1::Job> CancelJob(const Caller& caller, const std::string& id,
                                    const std::string& reason, int64_t last_seq) override;
  absl::StatusOr<v1::Job> RetryJob(const Caller& caller, const std::string& id) override;
  absl::StatusOr<EventPage> ReadEvents(const Caller& caller, const std::string& id,
                                       int64_t after_seq, int limit) override;
  absl::StatusOr<std::vector<absl::StatusOr<EventPage>>> ReadEventsBatch(
      const std::vector<EventQuery>& queries, int limit) override;
  absl::StatusOr<std::vector<std::pair<std::string, int64_t>>> LatestSeqs(
      const std::vector<std::string>& job_ids) override;
  absl::StatusOr<int> DeleteFinishedBefore(absl::Time cutoff, int limit) override;
  absl::StatusOr<std::optional<SubmitOutcome>> InsertFromCache(const NewJob& job) override;
  absl::StatusOr<absl::Time> PutCachedResult(const std::string& tenant_id, const std::string& key,
                                             const std::string& type,
                                             const google::protobuf::Struct& result,
                                             absl::Duration ttl) override;
  absl::StatusOr<int> DeleteExpiredCacheEntries(int limit) override;
  absl::Status RegisterJobTypes(const std::vector<std::string>& types) override;
  absl::StatusOr<std::vector<std::string>> KnownJobTypes(absl::Duration seen_within) override;
  absl::StatusOr<int> ForgetJobTypes(absl::Duration unseen_for) override;
  absl::Status NotifyNewJobs() override;
  absl::Status NotifyCancelled(const std::string& job_id) override;

  // The claim statement ($1 text[] distinct types, $2 limit, $3 lease owner, $4 lease ms),
  // public so a test can EXPLAIN what it reads.
  static const char kClaimJobsSql[];

 private:
  // Runs a housekeeping sweep `sql` ($1 the row limit, $2 the JobError given to each job it
  // ends) and returns the jobs it changed.
  absl::StatusOr<std::vector<v1::Job>> Sweep(const char* sql, int limit,
                                             const v1::JobError& error);

  pg::Pool* pool_;
  pg::Pool* relaxed_pool_;
};

}  // namespace aijobs::scheduler
