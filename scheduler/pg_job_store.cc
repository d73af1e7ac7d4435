#include "scheduler/pg_job_store.h"

#include <algorithm>
#include <map>
#include <unordered_map>
#include <unordered_set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/pg/array.h"
#include "common/text.h"
#include "common/time_util.h"
#include "common/uuid.h"

namespace aijobs::scheduler {
namespace {

using pg::ArrayBuilder;
using pg::Params;
using pg::Result;

// The columns every statement returning jobs selects, and their names in a CTE.
#define JOB_COLUMNS                                                                        \
  "id, tenant_id, owner, type, spec, state, priority, attempt, max_attempts, "             \
  "idempotency_key, timeout_ms, result, error, aijobs_us(run_after) AS run_after_us, "     \
  "aijobs_us(created_at) AS created_us, aijobs_us(updated_at) AS updated_us, "             \
  "aijobs_us(started_at) AS started_us, aijobs_us(finished_at) AS finished_us, last_seq, " \
  "cached, queue_timeout_ms"
#define JOB_NAMES                                                                      \
  "id, tenant_id, owner, type, spec, state, priority, attempt, max_attempts, "         \
  "idempotency_key, timeout_ms, result, error, run_after_us, created_us, updated_us, " \
  "started_us, finished_us, last_seq, cached, queue_timeout_ms"
constexpr int kJobColumnCount = 21;  // RowToJob reads columns 0-20

// Writes the event of a transition for every row of the CTE `upd`: a final_job event for
// terminal states, a state change otherwise.
#define TRANSITION_EVENTS                                                              \
  "ev AS (INSERT INTO job_events (job_id, seq, kind, state, attempt, error, payload) " \
  "SELECT id, last_seq, CASE WHEN state >= 3 THEN 3 ELSE 1 END, state, attempt, "      \
  "error, CASE WHEN state = 3 THEN result END FROM upd ON CONFLICT DO NOTHING) "

v1::Job RowToJob(const Result& r, int row) {
  v1::Job job;
  job.set_id(r.GetString(row, 0));
  job.set_tenant_id(r.GetString(row, 1));
  job.set_owner(r.GetString(row, 2));
  job.set_type(r.GetString(row, 3));
  v1::internal::JobSpec spec;
  spec.ParseFromString(r.GetBytea(row, 4));
  *job.mutable_input() = std::move(*spec.mutable_input());
  job.mutable_labels()->swap(*spec.mutable_labels());
  job.set_state(static_cast<v1::JobState>(r.GetInt(row, 5)));
  job.set_priority(static_cast<int32_t>(r.GetInt(row, 6)));
  job.set_attempt(static_cast<int32_t>(r.GetInt(row, 7)));
  job.set_max_attempts(static_cast<int32_t>(r.GetInt(row, 8)));
  if (!r.IsNull(row, 9)) job.set_idempotency_key(r.GetString(row, 9));
  int64_t timeout_ms = r.GetInt(row, 10);
  if (timeout_ms > 0) *job.mutable_timeout() = ToProtoDuration(absl::Milliseconds(timeout_ms));
  if (!r.IsNull(row, 11)) job.mutable_result()->ParseFromString(r.GetBytea(row, 11));
  if (!r.IsNull(row, 12)) job.mutable_error()->ParseFromString(r.GetBytea(row, 12));
  *job.mutable_run_after() = MicrosToTimestamp(r.GetInt(row, 13));
  *job.mutable_created_at() = MicrosToTimestamp(r.GetInt(row, 14));
  *job.mutable_updated_at() = MicrosToTimestamp(r.GetInt(row, 15));
  if (!r.IsNull(row, 16)) *job.mutable_started_at() = MicrosToTimestamp(r.GetInt(row, 16));
  if (!r.IsNull(row, 17)) *job.mutable_finished_at() = MicrosToTimestamp(r.GetInt(row, 17));
  job.set_last_seq(r.GetInt(row, 18));
  job.set_cached(r.GetBool(row, 19));
  if (int64_t queue_ms = r.GetInt(row, 20); queue_ms > 0) {
    *job.mutable_queue_timeout() = ToProtoDuration(absl::Milliseconds(queue_ms));
  }
  return job;
}

std::vector<v1::Job> RowsToJobs(const Result& r) {
  std::vector<v1::Job> jobs;
  jobs.reserve(r.rows());
  for (int i = 0; i < r.rows(); ++i) jobs.push_back(RowToJob(r, i));
  return jobs;
}

// Five parallel arrays (job id, last seq, attempt, DeltaBatch bytes, time) for
// `unnest(...) AS t(id, seq, attempt, payload, time_us)`.
class DeltaArrays {
 public:
  void Add(const std::string& job_id, const v1::internal::DeltaBatch& batch) {
    if (batch.pieces_size() == 0) return;
    const auto& last = batch.pieces(batch.pieces_size() - 1);
    ids_.Add(job_id);
    seqs_.Add(last.seq());
    attempts_.Add(int64_t{batch.attempt()});
    batch.SerializeToString(&bytes_);
    payloads_.Add(bytes_);
    times_.Add(last.time_us());
  }
  void AppendTo(Params& p) {
    p.Add(ids_.Finish()).Add(seqs_.Finish()).Add(attempts_.Finish()).AddBinary(payloads_.Finish());
    p.Add(times_.Finish());
  }

 private:
  ArrayBuilder ids_, seqs_, attempts_, times_;
  pg::ByteaArrayBuilder payloads_;
  std::string bytes_;
};

// Inserts the rows of CTE or table `src` (columns d_id, d_seq, d_attempt, d_payload, d_time)
// for attempts still RUNNING; a repeated row (same job and seq) is skipped.
// "state + 0 = 2" rather than "state = 2" in the statements that find rows by id: it keeps
// the planner off the partial index jobs_running_lease (WHERE state = 2), which with the
// statistics of a young table it prefers to the primary key, and which then walks every
// entry of a running job not yet vacuumed away.
#define INSERT_DELTAS(src)                                                                     \
  "INSERT INTO job_events (job_id, seq, kind, attempt, payload, time) SELECT d_id, d_seq, 2, " \
  "d_attempt, d_payload, 'epoch'::timestamptz + d_time * interval '1 microsecond' FROM " src   \
  " JOIN jobs j ON j.id = d_id AND j.attempt = d_attempt AND j.state + 0 = 2 "                 \
  "ON CONFLICT DO NOTHING"

// The next seq for a transition made without the running replica's counter: past every
// stored event, so it never collides with flushed output. When the job is RUNNING, also past
// every seq the running replica may have streamed to its watchers without storing it yet
// (kTakeoverSeqGap): such a watcher resumes elsewhere after its last seq and must not skip
// this transition (e.g. the discard_output of the next attempt) as already seen.
#define NEXT_SEQ_FROM_EVENTS(extra)                      \
  "GREATEST(last_seq, " extra                            \
  ", (SELECT coalesce(max(e.seq), 0) FROM job_events e " \
  "WHERE e.job_id = jobs.id)) + CASE WHEN state = 2 THEN 1073741824 ELSE 1 END"
static_assert(kTakeoverSeqGap == 1073741824, "NEXT_SEQ_FROM_EVENTS spells the gap out");

std::string MicrosLiteral(absl::Duration d) { return absl::StrCat(absl::ToInt64Milliseconds(d)); }

std::string JobNotFound(const std::string& id) { return absl::StrCat("job ", id, " not found"); }

// The owner condition of a statement: NULL (any owner) for callers that see every owner's
// jobs, else the caller's subject.
void AddOwnerFilter(const Caller& caller, Params* p) {
  if (caller.any_owner) {
    p->AddNull();
  } else {
    p->Add(caller.subject);
  }
}

// A positive ttl is kept at least 1 ms (the column's unit), so opting in never means "off".
int64_t CacheTtlMillis(absl::Duration ttl) {
  return std::max<int64_t>(1, absl::ToInt64Milliseconds(ttl));
}

}  // namespace

absl::StatusOr<std::vector<SubmitOutcome>> PgJobStore::InsertJobs(const std::vector<NewJob>& jobs) {
  static constexpr char kSql[] =
      "WITH input AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], "
      "$5::bytea[], $6::int[], $7::int[], $8::text[], $9::int8[], $10::bytea[], $11::int8[], "
      "$12::int8[]) AS t(i_id, i_tenant, i_owner, i_type, i_spec, i_priority, i_max_attempts, "
      "i_key, i_timeout, i_cache_key, i_cache_ttl, i_queue_timeout)), "
      "ins AS (INSERT INTO jobs (id, tenant_id, owner, type, spec, state, priority, attempt, "
      "max_attempts, attempt_budget, idempotency_key, timeout_ms, last_seq, cache_key, "
      "cache_ttl_ms, queue_timeout_ms) "
      "SELECT i_id, i_tenant, i_owner, i_type, i_spec, 1, i_priority, 0, i_max_attempts, "
      "i_max_attempts, i_key, i_timeout, 1, i_cache_key, i_cache_ttl, i_queue_timeout "
      "FROM input "
      "ON CONFLICT (tenant_id, owner, idempotency_key) WHERE idempotency_key IS NOT NULL "
      "DO NOTHING "
      "RETURNING id, created_at) "
      // The QUEUED event (seq 1) is not stored: ReadEvents derives it from the job row,
      // which saves a row and an index entry on every submit.
      "SELECT id, aijobs_us(created_at) FROM ins";
  // bytea arrays go in binary form: raw bytes, half the size of hex text.
  ArrayBuilder ids, tenants, owners, types, priorities, max_attempts, keys, timeouts, cache_ttls,
      queue_timeouts;
  pg::ByteaArrayBuilder specs, cache_keys;
  std::vector<std::string> spec_bytes(jobs.size());
  for (size_t i = 0; i < jobs.size(); ++i) {
    const NewJob& j = jobs[i];
    ids.Add(j.id);
    tenants.Add(j.caller.tenant_id);
    owners.Add(j.caller.subject);
    types.Add(j.type);
    j.spec.SerializeToString(&spec_bytes[i]);
    specs.Add(spec_bytes[i]);
    priorities.Add(int64_t{j.priority});
    max_attempts.Add(int64_t{j.max_attempts});
    if (j.idempotency_key) {
      keys.Add(*j.idempotency_key);
    } else {
      keys.AddNull();
    }
    timeouts.Add(j.timeout_ms);
    queue_timeouts.Add(j.queue_timeout_ms);
    if (j.cache_key.empty()) {
      cache_keys.AddNull();
      cache_ttls.Add(int64_t{0});
    } else {
      cache_keys.Add(j.cache_key);
      cache_ttls.Add(CacheTtlMillis(j.cache_ttl));
    }
  }
  Params p;
  p.Add(ids.Finish()).Add(tenants.Finish()).Add(owners.Finish()).Add(types.Finish());
  p.AddBinary(specs.Finish()).Add(priorities.Finish()).Add(max_attempts.Finish());
  p.Add(keys.Finish()).Add(timeouts.Finish()).AddBinary(cache_keys.Finish());
  p.Add(cache_ttls.Finish()).Add(queue_timeouts.Finish());

  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  auto r = (*conn)->ExecPrepared("insert_jobs", kSql, p);
  if (!r.ok()) return r.status();
  std::unordered_map<std::string, int64_t> created;
  for (int i = 0; i < r->rows(); ++i) created.emplace(r->GetString(i, 0), r->GetInt(i, 1));

  std::vector<SubmitOutcome> out(jobs.size());
  // (tenant, owner) -> idempotency keys whose job already existed
  std::map<std::pair<std::string, std::string>, std::vector<std::string>> existing_keys;
  for (size_t i = 0; i < jobs.size(); ++i) {
    const NewJob& j = jobs[i];
    auto it = created.find(j.id);
    if (it == created.end()) {
      existing_keys[{j.caller.tenant_id, j.caller.subject}].push_back(
          j.idempotency_key.value_or(""));
      continue;
    }
    v1::Job& job = out[i].job;
    job.set_id(j.id);
    job.set_type(j.type);
    *job.mutable_input() = j.spec.input();
    *job.mutable_labels() = j.spec.labels();
    job.set_state(v1::QUEUED);
    job.set_max_attempts(j.max_attempts);
    job.set_priority(j.priority);
    if (j.idempotency_key) job.set_idempotency_key(*j.idempotency_key);
    if (j.timeout_ms > 0)
      *job.mutable_timeout() = ToProtoDuration(absl::Milliseconds(j.timeout_ms));
    if (j.queue_timeout_ms > 0) {
      *job.mutable_queue_timeout() = ToProtoDuration(absl::Milliseconds(j.queue_timeout_ms));
    }
    *job.mutable_created_at() = MicrosToTimestamp(it->second);
    *job.mutable_updated_at() = job.created_at();
    *job.mutable_run_after() = job.created_at();
    job.set_tenant_id(j.caller.tenant_id);
    job.set_owner(j.caller.subject);
    job.set_last_seq(1);
  }
  for (auto& [tenant_owner, keys_list] : existing_keys) {
    const auto& [tenant, owner] = tenant_owner;
    ArrayBuilder key_array;
    for (const auto& k : keys_list) key_array.Add(k);
    Params q;
    q.Add(tenant).Add(owner).Add(key_array.Finish());
    auto existing = (*conn)->ExecPrepared(
        "jobs_by_keys",
        "SELECT " JOB_COLUMNS
        " FROM jobs WHERE tenant_id = $1 AND owner = $2 AND idempotency_key = ANY($3::text[])",
        q);
    if (!existing.ok()) return existing.status();
    std::unordered_map<std::string, v1::Job> by_key;
    for (int i = 0; i < existing->rows(); ++i) {
      v1::Job job = RowToJob(*existing, i);
      by_key.emplace(job.idempotency_key(), std::move(job));
    }
    for (size_t i = 0; i < jobs.size(); ++i) {
      if (jobs[i].caller.tenant_id != tenant || jobs[i].caller.subject != owner ||
          created.count(jobs[i].id)) {
        continue;
      }
      auto it = by_key.find(jobs[i].idempotency_key.value_or(""));
      if (it == by_key.end()) {
        return absl::AbortedError("a job with the same idempotency key was deleted concurrently");
      }
      out[i].job = it->second;
      out[i].existing = true;
    }
  }
  return out;
}

namespace {

// The caller's job `id`, found by primary key alone: tenant and owner are compared on the row.
// (With "AND tenant_id = $2" in the statement the cached generic plan may walk jobs_list,
// tenant first, whose cost grows with the tenant's history.) Another tenant's or owner's job
// is NOT_FOUND, exactly like a missing one.
absl::StatusOr<v1::Job> SelectJob(pg::Connection& conn, const Caller& caller,
                                  const std::string& id) {
  Params p;
  p.Add(id);
  auto r = conn.ExecPrepared("get_job", "SELECT " JOB_COLUMNS " FROM jobs WHERE id = $1::uuid", p);
  if (!r.ok()) return r.status();
  if (r->rows() == 0) return absl::NotFoundError(JobNotFound(id));
  v1::Job job = RowToJob(*r, 0);
  if (!caller.Sees(job)) return absl::NotFoundError(JobNotFound(id));
  return job;
}

// The QUEUED event every job starts with (seq 1, never stored).
v1::JobEvent QueuedEvent(const v1::Job& job) {
  v1::JobEvent e;
  e.set_job_id(job.id());
  e.set_seq(1);
  *e.mutable_time() = job.created_at();
  e.mutable_state_change()->set_state(v1::QUEUED);
  return e;
}

}  // namespace

absl::StatusOr<v1::Job> PgJobStore::GetJob(const Caller& caller, const std::string& id) {
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  return SelectJob(**conn, caller, id);
}

// Page tokens carry a creation time in microseconds since 1970; later than year 9999 is
// no token of ours (and PostgreSQL would refuse it as "timestamp out of range").
constexpr int64_t kMaxTokenMicros = int64_t{253402300799} * 1000000;

absl::StatusOr<ListPage> PgJobStore::ListJobs(const ListQuery& query) {
  Params p;
  p.Add(query.caller.tenant_id).Add(int64_t{query.state}).Add(query.type);
  if (query.page_token.empty()) {
    p.AddNull().AddNull();
  } else {
    size_t dot = query.page_token.find('.');
    int64_t created_us = 0;
    std::string id = dot == std::string::npos ? "" : query.page_token.substr(dot + 1);
    if (dot == std::string::npos ||
        !absl::SimpleAtoi(absl::string_view(query.page_token.data(), dot), &created_us) ||
        created_us < 0 || created_us > kMaxTokenMicros || !IsUuid(id)) {
      // Echoed cut short: a long token in grpc-message would overflow the caller's metadata
      // limit and turn this INVALID_ARGUMENT into RESOURCE_EXHAUSTED (HTTP 429).
      return absl::InvalidArgumentError(absl::StrCat("page_token \"",
                                                     Utf8Prefix(query.page_token, 64),
                                                     "\" is not a token returned by ListJobs"));
    }
    p.Add(created_us).Add(id);
  }
  p.Add(int64_t{std::max(query.page_size, 1) + 1});
  AddOwnerFilter(query.caller, &p);
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  // Planned per call: which index fits depends on the filters actually given.
  auto r = (*conn)->ExecParams(
      "SELECT " JOB_COLUMNS
      " FROM jobs WHERE tenant_id = $1 AND ($2::int = 0 OR state = $2::int) "
      "AND ($3::text = '' OR type = $3::text) AND ($4::int8 IS NULL OR (created_at, id) < "
      "('epoch'::timestamptz + $4::int8 * interval '1 microsecond', $5::uuid)) "
      "AND ($7::text IS NULL OR owner = $7::text) "
      "ORDER BY created_at DESC, id DESC LIMIT $6",
      p);
  if (!r.ok()) return r.status();
  ListPage page;
  page.jobs = RowsToJobs(*r);
  size_t keep = std::min(page.jobs.size(), static_cast<size_t>(std::max(query.page_size, 1)));
  int64_t bytes = 0;
  for (size_t i = 0; i < keep; ++i) {
    bytes += static_cast<int64_t>(page.jobs[i].ByteSizeLong());
    if (i > 0 && bytes > query.max_page_bytes) keep = i;
  }
  if (keep < page.jobs.size()) {
    page.jobs.resize(keep);
    const v1::Job& last = page.jobs.back();
    page.next_page_token = absl::StrCat(TimestampToMicros(last.created_at()), ".", last.id());
  }
  return page;
}

// The queue of each type is walked on its own (jobs_queue starts with the type), then the
// best `limit` of them are taken: queued jobs of types this worker does not serve are never
// read, however many there are and whatever their priority. Rows locked for a type but not
// taken are released when the statement commits.
const char PgJobStore::kClaimJobsSql[] =
    "WITH c AS (SELECT q.id AS c_id FROM unnest($1::text[]) AS t(t_type) CROSS JOIN LATERAL "
    "(SELECT id, priority, run_after FROM jobs WHERE state = 1 AND type = t.t_type AND "
    "run_after <= now() ORDER BY priority DESC, run_after LIMIT $2 FOR UPDATE SKIP LOCKED) q "
    "ORDER BY q.priority DESC, q.run_after LIMIT $2), "
    "upd AS (UPDATE jobs SET state = 2, attempt = attempt + 1, error = NULL, lease_owner = $3, "
    "lease_expires_at = now() + $4::int8 * interval '1 millisecond', started_at = now(), "
    "updated_at = now(), last_seq = last_seq + 1 FROM c WHERE id = c_id RETURNING " JOB_COLUMNS
    "), " TRANSITION_EVENTS "SELECT " JOB_NAMES " FROM upd ORDER BY priority DESC, run_after_us";

absl::StatusOr<std::vector<ClaimedJob>> PgJobStore::ClaimJobs(const std::vector<std::string>& types,
                                                              int limit,
                                                              const std::string& lease_owner,
                                                              absl::Duration lease,
                                                              absl::Duration default_timeout) {
  // Each type once: a repeated one would walk its queue twice (our own locks do not skip).
  std::vector<std::string> distinct = types;
  std::sort(distinct.begin(), distinct.end());
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
  ArrayBuilder type_array;
  for (const auto& t : distinct) type_array.Add(t);
  Params p;
  p.Add(type_array.Finish()).Add(int64_t{limit}).Add(lease_owner).Add(MicrosLiteral(lease));
  // Durable: the attempt number is the fencing token, and a claim dispatched before its commit
  // reached the WAL could be forgotten by a database crash and the same attempt handed out
  // again (two runs under one token, their output interleaved).
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  // Planned on every call (not prepared): a queue table swings from empty to huge, and a
  // generic plan made while it was small (a sequential scan) would stick and burn the
  // database's CPU once it is large. Planning costs far less than the claim itself.
  auto r = (*conn)->ExecParams(kClaimJobsSql, p);
  if (!r.ok()) return r.status();
  std::vector<ClaimedJob> out;
  out.reserve(r->rows());
  absl::Time now = absl::Now();
  for (int i = 0; i < r->rows(); ++i) {
    ClaimedJob c;
    c.job = RowToJob(*r, i);
    absl::Duration timeout =
        c.job.has_timeout() ? FromProtoDuration(c.job.timeout()) : default_timeout;
    c.deadline = now + timeout;
    out.push_back(std::move(c));
  }
  return out;
}

absl::Status PgJobStore::ExtendLeases(const std::vector<std::string>& job_ids,
                                      absl::Duration lease) {
  if (job_ids.empty()) return absl::OkStatus();
  ArrayBuilder ids;
  for (const auto& id : job_ids) ids.Add(id);
  Params p;
  p.Add(ids.Finish()).Add(MicrosLiteral(lease));
  auto conn = relaxed_pool_->Acquire();
  if (!conn.ok()) return conn.status();
  // SKIP LOCKED: a row locked right now is being finished or cancelled; waiting for it could
  // deadlock with that batch, and its lease no longer matters.
  return (*conn)
      ->ExecPrepared("extend_leases",
                     "UPDATE jobs SET lease_expires_at = now() + $2::int8 * interval "
                     "'1 millisecond' WHERE id IN (SELECT id FROM jobs WHERE state + 0 = 2 AND "
                     "id = ANY($1::uuid[]) FOR UPDATE SKIP LOCKED)",
                     p)
      .status();
}

absl::Status PgJobStore::AppendDeltas(const std::vector<DeltaRow>& rows) {
  if (rows.empty()) return absl::OkStatus();
  static constexpr char kSql[] = INSERT_DELTAS(
      "unnest($1::uuid[], $2::int8[], $3::int[], $4::bytea[], $5::int8[]) "
      "AS u(d_id, d_seq, d_attempt, d_payload, d_time)");
  DeltaArrays arrays;
  for (const DeltaRow& row : rows) arrays.Add(row.job_id, row.batch);
  Params p;
  arrays.AppendTo(p);
  // Durable: the hub forgets the pieces once this returns, and watchers have already seen
  // them; a commit a database crash could still lose would leave a gap in every replay.
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  return (*conn)->ExecPrepared("append_deltas", kSql, p).status();
}

absl::StatusOr<std::vector<v1::Job>> PgJobStore::FinishAttempts(
    const std::vector<AttemptOutcome>& outcomes) {
  if (outcomes.empty()) return std::vector<v1::Job>{};
    // u_kind: 0 succeeded, 1 retryable failure, 2 fatal failure.
#define NEW_STATE \
  "(CASE WHEN u_kind = 0 THEN 3 WHEN u_kind = 1 AND attempt < max_attempts THEN 1 ELSE 4 END)"
  static constexpr char kSql[] =
      "WITH u AS (SELECT * FROM unnest($1::uuid[], $2::int[], $3::int[], $4::bytea[], "
      "$5::bytea[], $6::int8[], $7::int8[]) AS t(u_id, u_attempt, u_kind, u_result, u_error, "
      "u_delay_ms, u_seq)), "
      "d AS (SELECT * FROM unnest($8::uuid[], $9::int8[], $10::int[], $11::bytea[], $12::int8[]) "
      "AS t(d_id, d_seq, d_attempt, d_payload, d_time)), "
      // Lock the rows in id order so concurrent batches can never deadlock.
      // l carries u's columns, so the update below reads l alone: joining u and l there made
      // a nested loop over both CTEs (unnest is estimated at 10 rows), quadratic in the batch.
      "l AS (SELECT u.* FROM jobs JOIN u ON id = u_id ORDER BY id FOR UPDATE OF jobs), "
      "dins AS (" INSERT_DELTAS("d") "), "
      "upd AS (UPDATE jobs SET state = " NEW_STATE ", "
      "result = CASE WHEN u_kind = 0 THEN u_result END, "
      "error = CASE WHEN u_kind = 0 THEN NULL ELSE u_error END, "
      "run_after = CASE WHEN " NEW_STATE " = 1 THEN now() + u_delay_ms * interval "
      "'1 millisecond' ELSE run_after END, "
      "finished_at = CASE WHEN " NEW_STATE " = 1 THEN NULL ELSE now() END, "
      "lease_owner = NULL, lease_expires_at = NULL, updated_at = now(), "
      "last_seq = GREATEST(last_seq, u_seq) + 1 "
      "FROM l WHERE id = u_id AND attempt = u_attempt AND state + 0 = 2 "
      "RETURNING " JOB_COLUMNS ", cache_key, cache_ttl_ms), "
      TRANSITION_EVENTS ", "
      // Response cache fill, in the same commit as the success. DISTINCT ON: two identical
      // requests succeeding in one batch would otherwise upsert one row twice (an error).
      // A live pre-composed (pinned) answer is not replaced by a job's result.
      "fill AS (INSERT INTO response_cache AS rc (tenant_id, key, type, result, created_at, "
      "expires_at) SELECT DISTINCT ON (tenant_id, cache_key) tenant_id, cache_key, type, "
      "result, now(), now() + cache_ttl_ms * interval '1 millisecond' FROM upd "
      "WHERE state = 3 AND cache_key IS NOT NULL AND result IS NOT NULL "
      "ORDER BY tenant_id, cache_key "
      "ON CONFLICT (tenant_id, key) DO UPDATE SET type = EXCLUDED.type, "
      "result = EXCLUDED.result, created_at = EXCLUDED.created_at, "
      "expires_at = EXCLUDED.expires_at, pinned = false "
      "WHERE NOT rc.pinned OR rc.expires_at <= now()) "
      "SELECT " JOB_NAMES " FROM upd";
#undef NEW_STATE
  ArrayBuilder ids, attempts, kinds, delays, seqs;
  pg::ByteaArrayBuilder results, errors;  // binary: raw bytes, half the size of hex text
  DeltaArrays deltas;
  std::string bytes;
  for (const AttemptOutcome& o : outcomes) {
    deltas.Add(o.job_id, o.unflushed);
    ids.Add(o.job_id);
    attempts.Add(int64_t{o.attempt});
    switch (o.kind) {
      case AttemptOutcome::Kind::kSucceeded:
        kinds.Add(int64_t{0});
        o.result.SerializeToString(&bytes);
        results.Add(bytes);
        errors.AddNull();
        break;
      case AttemptOutcome::Kind::kRetryableFailure:
      case AttemptOutcome::Kind::kFatalFailure:
        kinds.Add(int64_t{o.kind == AttemptOutcome::Kind::kRetryableFailure ? 1 : 2});
        results.AddNull();
        o.error.SerializeToString(&bytes);
        errors.Add(bytes);
        break;
    }
    delays.Add(absl::ToInt64Milliseconds(o.retry_delay));
    seqs.Add(o.last_seq);
  }
  Params p;
  p.Add(ids.Finish()).Add(attempts.Finish()).Add(kinds.Finish()).AddBinary(results.Finish());
  p.AddBinary(errors.Finish()).Add(delays.Finish()).Add(seqs.Finish());
  deltas.AppendTo(p);
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  // Planned on every call, like the claim: a generic plan made while the table was small
  // (hash joins over sequential scans of jobs) would stick and make every finish read the
  // whole table once it is large.
  auto r = (*conn)->ExecParams(kSql, p);
  if (!r.ok()) return r.status();
  return RowsToJobs(*r);
}

absl::StatusOr<std::vector<v1::Job>> PgJobStore::Sweep(const char* sql, int limit,
                                                       const v1::JobError& error) {
  Params p;
  p.Add(int64_t{limit}).AddBinary(error.SerializeAsString());
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  auto r = (*conn)->ExecParams(sql, p);  // planned per call, as ClaimJobs
  if (!r.ok()) return r.status();
  return RowsToJobs(*r);
}

absl::StatusOr<std::vector<v1::Job>> PgJobStore::RequeueExpiredLeases(int limit) {
  static constexpr char kSql[] =
      "WITH x AS (SELECT id AS x_id FROM jobs WHERE state = 2 AND lease_expires_at < now() "
      "LIMIT $1 FOR UPDATE SKIP LOCKED), "
      "upd AS (UPDATE jobs SET state = CASE WHEN attempt < max_attempts THEN 1 ELSE 4 END, "
      "error = $2::bytea, lease_owner = NULL, lease_expires_at = NULL, run_after = now(), "
      "finished_at = CASE WHEN attempt < max_attempts THEN NULL ELSE now() END, "
      "updated_at = now(), last_seq = " NEXT_SEQ_FROM_EVENTS("0") " FROM x WHERE id = x_id "
      "RETURNING " JOB_COLUMNS
      "), " TRANSITION_EVENTS "SELECT " JOB_NAMES " FROM upd";
  v1::JobError error;
  error.set_code("LEASE_EXPIRED");
  error.set_message("the scheduler replica holding this attempt stopped renewing its lease");
  error.set_retryable(true);
  return Sweep(kSql, limit, error);
}

absl::StatusOr<std::vector<v1::Job>> PgJobStore::ExpireQueuedJobs(int limit) {
  // Found through jobs_queue_expiry: only jobs past their expiry are read.
  static constexpr char kSql[] =
      "WITH x AS (SELECT id AS x_id FROM jobs WHERE state = 1 AND queue_timeout_ms > 0 AND "
      "aijobs_us(run_after) + queue_timeout_ms * 1000 < aijobs_us(now()) LIMIT $1 "
      "FOR UPDATE SKIP LOCKED), "
      "upd AS (UPDATE jobs SET state = 4, error = $2::bytea, finished_at = now(), "
      "updated_at = now(), last_seq = " NEXT_SEQ_FROM_EVENTS("0") " FROM x WHERE id = x_id "
      "AND state = 1 RETURNING " JOB_COLUMNS "), " TRANSITION_EVENTS
      "SELECT " JOB_NAMES " FROM upd";
  v1::JobError error;
  error.set_code("EXPIRED");
  error.set_message(
      "no worker took the job within its queue_timeout; submit it again, or retry it, once a "
      "worker serves its type");
  error.set_retryable(false);
  return Sweep(kSql, limit, error);
}

absl::StatusOr<std::vector<v1::Job>> PgJobStore::ReleaseAttempts(
    const std::vector<std::pair<std::string, int32_t>>& attempts, const v1::JobError& error) {
  if (attempts.empty()) return std::vector<v1::Job>{};
  // Locked in id order (as FinishAttempts) so it never deadlocks with a concurrent batch; the
  // lock re-checks state and attempt, so an attempt that ended meanwhile is skipped.
  static constexpr char kSql[] =
      "WITH a AS (SELECT * FROM unnest($1::uuid[], $2::int[]) AS t(a_id, a_attempt)), "
      "x AS (SELECT id AS x_id FROM jobs JOIN a ON id = a_id AND attempt = a_attempt "
      "WHERE state + 0 = 2 ORDER BY id FOR UPDATE OF jobs), "
      "upd AS (UPDATE jobs SET state = CASE WHEN attempt < max_attempts THEN 1 ELSE 4 END, "
      "error = $3::bytea, lease_owner = NULL, lease_expires_at = NULL, run_after = now(), "
      "finished_at = CASE WHEN attempt < max_attempts THEN NULL ELSE now() END, "
      "updated_at = now(), last_seq = " NEXT_SEQ_FROM_EVENTS("0") " FROM x WHERE id = x_id "
      "AND state + 0 = 2 RETURNING " JOB_COLUMNS "), " TRANSITION_EVENTS
      "SELECT " JOB_NAMES " FROM upd";
  ArrayBuilder ids, numbers;
  for (const auto& [id, attempt] : attempts) {
    ids.Add(id);
    numbers.Add(int64_t{attempt});
  }
  Params p;
  p.Add(ids.Finish()).Add(numbers.Finish()).AddBinary(error.SerializeAsString());
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  auto r = (*conn)->ExecParams(kSql, p);  // planned per call, as FinishAttempts
  if (!r.ok()) return r.status();
  return RowsToJobs(*r);
}

absl::StatusOr<v1::Job> PgJobStore::CancelJob(const Caller& caller, const std::string& id,
                                              const std::string& reason, int64_t last_seq) {
  static constexpr char kSql[] =
      "WITH upd AS (UPDATE jobs SET state = 5, error = $3::bytea, lease_owner = NULL, "
      "lease_expires_at = NULL, finished_at = now(), updated_at = now(), "
      "last_seq = " NEXT_SEQ_FROM_EVENTS("$4::int8") " WHERE id = $1::uuid AND tenant_id = $2 "
      "AND ($5::text IS NULL OR owner = $5::text) AND state IN (1, 2) RETURNING " JOB_COLUMNS "), " TRANSITION_EVENTS
      "SELECT " JOB_NAMES " FROM upd";
  v1::JobError error;
  error.set_code("CANCELLED");
  error.set_message(reason.empty() ? "cancelled by request" : reason);
  Params p;
  p.Add(id).Add(caller.tenant_id).AddBinary(error.SerializeAsString()).Add(last_seq);
  AddOwnerFilter(caller, &p);
  absl::StatusOr<Result> r;
  {
    auto conn = pool_->Acquire();
    if (!conn.ok()) return conn.status();
    r = (*conn)->ExecPrepared("cancel_job", kSql, p);
  }
  if (!r.ok()) return r.status();
  if (r->rows() == 1) return RowToJob(*r, 0);
  auto job = GetJob(caller, id);
  if (!job.ok()) return job.status();
  return absl::FailedPreconditionError(absl::StrCat(
      "job ", id, " already ended as ", v1::JobState_Name(job->state()), ": nothing to cancel"));
}

absl::StatusOr<v1::Job> PgJobStore::RetryJob(const Caller& caller, const std::string& id) {
  static constexpr char kSql[] =
      "WITH upd AS (UPDATE jobs SET state = 1, max_attempts = attempt + attempt_budget, "
      "error = NULL, result = NULL, run_after = now(), finished_at = NULL, updated_at = now(), "
      "last_seq = last_seq + 1 WHERE id = $1::uuid AND tenant_id = $2 AND ($3::text IS NULL OR "
      "owner = $3::text) AND state IN (4, 5) "
      "RETURNING " JOB_COLUMNS "), " TRANSITION_EVENTS "SELECT " JOB_NAMES " FROM upd";
  Params p;
  p.Add(id).Add(caller.tenant_id);
  AddOwnerFilter(caller, &p);
  absl::StatusOr<Result> r;
  {
    auto conn = pool_->Acquire();
    if (!conn.ok()) return conn.status();
    r = (*conn)->ExecPrepared("retry_job", kSql, p);
  }
  if (!r.ok()) return r.status();
  if (r->rows() == 1) return RowToJob(*r, 0);
  auto job = GetJob(caller, id);
  if (!job.ok()) return job.status();
  return absl::FailedPreconditionError(
      absl::StrCat("job ", id, " is ", v1::JobState_Name(job->state()),
                   ": only FAILED or CANCELLED jobs can be retried"));
}

namespace {

// A queued job has no stored event after its last_seq (deltas, which do not advance
// last_seq, are written only while it runs): a watch of a job just submitted needs no read
// of job_events.
bool NoStoredEventsAfter(const v1::Job& job, int64_t after_seq) {
  return job.state() == v1::QUEUED && job.last_seq() <= std::max<int64_t>(after_seq, 1);
}

// Appends the events of job_events rows [begin, end) of `r` to page->events, after the
// derived QUEUED event when after_seq < 1. Columns from `c`: seq, kind, state, attempt, error,
// payload, time (us).
void DecodeEvents(const Result& r, int begin, int end, int c, int64_t after_seq, EventPage* page) {
  const v1::Job& job = page->job;
  const std::string& id = job.id();
  std::vector<v1::JobEvent>& events = page->events;
  if (after_seq < 1) events.push_back(QueuedEvent(job));
  // A delta row may repeat pieces of an earlier row (written both by the flusher and with
  // the attempt's end): emit each seq once.
  // (A QUEUED row stored by an older version is skipped as a repeat of the derived one.)
  int64_t last = std::max<int64_t>(after_seq, events.empty() ? 0 : 1);
  for (int i = begin; i < end; ++i) {
    int64_t seq = r.GetInt(i, c);
    int kind = static_cast<int>(r.GetInt(i, c + 1));
    int32_t attempt = static_cast<int32_t>(r.GetInt(i, c + 3));
    int64_t time_us = r.GetInt(i, c + 6);
    if (kind == 2) {
      v1::internal::DeltaBatch batch;
      batch.ParseFromString(r.GetBytea(i, c + 5));
      for (const auto& piece : batch.pieces()) {
        if (piece.seq() <= last) continue;
        last = piece.seq();
        v1::JobEvent& e = events.emplace_back();
        e.set_job_id(id);
        e.set_seq(piece.seq());
        *e.mutable_time() = MicrosToTimestamp(piece.time_us());
        e.mutable_output_delta()->set_attempt(batch.attempt());
        e.mutable_output_delta()->set_text(piece.text());
      }
      continue;
    }
    if (seq <= last) continue;
    last = seq;
    v1::JobEvent& e = events.emplace_back();
    e.set_job_id(id);
    e.set_seq(seq);
    *e.mutable_time() = MicrosToTimestamp(time_us);
    auto state = static_cast<v1::JobState>(r.GetInt(i, c + 2));
    v1::JobError error;
    if (!r.IsNull(i, c + 4)) error.ParseFromString(r.GetBytea(i, c + 4));
    if (kind == 3) {
      v1::Job* final_job = e.mutable_final_job();
      *final_job = job;
      final_job->set_state(state);
      final_job->set_attempt(attempt);
      final_job->clear_result();
      final_job->clear_error();
      if (!r.IsNull(i, c + 5)) final_job->mutable_result()->ParseFromString(r.GetBytea(i, c + 5));
      if (!r.IsNull(i, c + 4)) *final_job->mutable_error() = error;
      *final_job->mutable_finished_at() = e.time();
      final_job->set_last_seq(seq);
    } else {
      v1::StateChange* sc = e.mutable_state_change();
      sc->set_state(state);
      sc->set_attempt(attempt);
      if (!r.IsNull(i, c + 4)) *sc->mutable_error() = error;
      sc->set_discard_output(state == v1::RUNNING && attempt > 1);
    }
  }
}

}  // namespace

absl::StatusOr<EventPage> PgJobStore::ReadEvents(const Caller& caller, const std::string& id,
                                                 int64_t after_seq, int limit) {
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  auto found = SelectJob(**conn, caller, id);
  if (!found.ok()) return found.status();
  EventPage page;
  page.job = *std::move(found);
  if (NoStoredEventsAfter(page.job, after_seq)) {
    if (after_seq < 1) page.events.push_back(QueuedEvent(page.job));
    return page;
  }
  Params p;
  p.Add(id).Add(after_seq).Add(int64_t{limit});
  auto r = (*conn)->ExecPrepared(
      "read_events",
      "SELECT seq, kind, state, attempt, error, payload, aijobs_us(time) FROM job_events "
      "WHERE job_id = $1::uuid AND seq > $2 ORDER BY seq LIMIT $3",
      p);
  if (!r.ok()) return r.status();
  page.more = r->rows() == limit;
  DecodeEvents(*r, 0, r->rows(), 0, after_seq, &page);
  return page;
}

absl::StatusOr<std::vector<absl::StatusOr<EventPage>>> PgJobStore::ReadEventsBatch(
    const std::vector<EventQuery>& queries, int limit) {
  std::vector<absl::StatusOr<EventPage>> out(queries.size(), absl::InternalError("not read"));
  if (queries.empty()) return out;
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  ArrayBuilder ids;
  for (const EventQuery& q : queries) ids.Add(q.job_id);
  Params p;
  p.Add(ids.Finish());
  // Planned on every call (see FinishAttempts): "id = ANY($1)" planned generically on a
  // young table is a sequential scan.
  auto jr = (*conn)->ExecParams("SELECT " JOB_COLUMNS " FROM jobs WHERE id = ANY($1::uuid[])", p);
  if (!jr.ok()) return jr.status();
  std::unordered_map<std::string, int> row_of;
  for (int i = 0; i < jr->rows(); ++i) row_of[jr->GetString(i, 0)] = i;
  // The queries that need job_events, by position: 1-based ordinals in the statement below.
  std::vector<size_t> need;
  ArrayBuilder need_ids, need_after;
  for (size_t i = 0; i < queries.size(); ++i) {
    const EventQuery& q = queries[i];
    auto it = row_of.find(q.job_id);
    v1::Job job;
    if (it != row_of.end()) job = RowToJob(*jr, it->second);
    // Another tenant's or owner's job is NOT_FOUND, exactly like a missing one.
    if (it == row_of.end() || !q.caller.Sees(job)) {
      out[i] = absl::NotFoundError(JobNotFound(q.job_id));
      continue;
    }
    EventPage page;
    page.job = std::move(job);
    if (NoStoredEventsAfter(page.job, q.after_seq)) {
      if (q.after_seq < 1) page.events.push_back(QueuedEvent(page.job));
      out[i] = std::move(page);
      continue;
    }
    out[i] = std::move(page);
    need.push_back(i);
    need_ids.Add(q.job_id);
    need_after.Add(q.after_seq);
  }
  if (need.empty()) return out;
  Params ep;
  ep.Add(need_ids.Finish()).Add(need_after.Finish()).Add(int64_t{limit});
  auto r = (*conn)->ExecParams(
      "SELECT q.n, e.seq, e.kind, e.state, e.attempt, e.error, e.payload, aijobs_us(e.time) "
      "FROM unnest($1::uuid[], $2::int8[]) WITH ORDINALITY AS q(q_id, q_after, n) "
      "CROSS JOIN LATERAL (SELECT * FROM job_events WHERE job_id = q.q_id AND seq > q.q_after "
      "ORDER BY seq LIMIT $3) e ORDER BY q.n, e.seq",
      ep);
  if (!r.ok()) return r.status();
  int row = 0;
  for (size_t k = 0; k < need.size(); ++k) {
    int begin = row;
    while (row < r->rows() && r->GetInt(row, 0) == static_cast<int64_t>(k + 1)) ++row;
    EventPage& page = *out[need[k]];
    page.more = row - begin == limit;
    DecodeEvents(*r, begin, row, 1, queries[need[k]].after_seq, &page);
  }
  return out;
}

absl::StatusOr<std::vector<std::pair<std::string, int64_t>>> PgJobStore::LatestSeqs(
    const std::vector<std::string>& job_ids) {
  std::vector<std::pair<std::string, int64_t>> out;
  if (job_ids.empty()) return out;
  ArrayBuilder ids;
  for (const auto& id : job_ids) ids.Add(id);
  Params p;
  p.Add(ids.Finish());
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  auto r = (*conn)->ExecPrepared(
      "latest_seqs",
      "SELECT j.id, GREATEST(j.last_seq, coalesce((SELECT max(e.seq) FROM job_events e "
      "WHERE e.job_id = j.id), 0)) FROM jobs j WHERE j.id = ANY($1::uuid[])",
      p);
  if (!r.ok()) return r.status();
  out.reserve(r->rows());
  for (int i = 0; i < r->rows(); ++i) out.emplace_back(r->GetString(i, 0), r->GetInt(i, 1));
  return out;
}

absl::StatusOr<int> PgJobStore::DeleteFinishedBefore(absl::Time cutoff, int limit) {
  Params p;
  p.Add(absl::ToUnixMicros(cutoff)).Add(int64_t{limit});
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  auto r = (*conn)->ExecParams(
      "WITH d AS (DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE state >= 3 AND "
      "finished_at < 'epoch'::timestamptz + $1::int8 * interval '1 microsecond' LIMIT $2) "
      "RETURNING id), e AS (DELETE FROM job_events WHERE job_id IN (SELECT id FROM d)) "
      "SELECT count(*) FROM d",
      p);
  if (!r.ok()) return r.status();
  return static_cast<int>(r->GetInt(0, 0));
}

absl::StatusOr<std::optional<SubmitOutcome>> PgJobStore::InsertFromCache(const NewJob& job) {
  if (job.cache_key.empty()) return std::optional<SubmitOutcome>();
  // One statement: count the hit, create the job SUCCEEDED with the cached result and its
  // final event (seq 2; seq 1 = QUEUED is derived from the row, as for every job). Always
  // returns one row: the job's columns (NULL when nothing was inserted) and the hit count.
  static constexpr char kSql[] =
      "WITH hit AS (UPDATE response_cache SET hits = hits + 1 WHERE tenant_id = $2 AND "
      "key = $10::bytea AND expires_at > now() AND (pinned OR created_at > now() - $11::int8 * "
      "interval '1 millisecond') RETURNING result AS h_result), "
      "ins AS (INSERT INTO jobs (id, tenant_id, owner, type, spec, state, priority, attempt, "
      "max_attempts, attempt_budget, idempotency_key, timeout_ms, result, last_seq, finished_at, "
      "cached, cache_key, cache_ttl_ms) "
      "SELECT $1::uuid, $2::text, $3::text, $4::text, $5::bytea, 3, $6::int, 0, $7::int, $7::int, "
      "$8::text, $9::int8, "
      "h_result, 2, now(), true, $10::bytea, $11::int8 FROM hit "
      "ON CONFLICT (tenant_id, owner, idempotency_key) WHERE idempotency_key IS NOT NULL "
      "DO NOTHING "
      "RETURNING " JOB_COLUMNS
      "), "
      "ev AS (INSERT INTO job_events (job_id, seq, kind, state, attempt, payload) "
      "SELECT id, 2, 3, 3, 0, result FROM ins) "
      "SELECT ins.*, (SELECT count(*) FROM hit) FROM (SELECT 1) AS one LEFT JOIN ins ON true";
  Params p;
  p.Add(job.id).Add(job.caller.tenant_id).Add(job.caller.subject).Add(job.type);
  p.AddBinary(job.spec.SerializeAsString());
  p.Add(int64_t{job.priority}).Add(int64_t{job.max_attempts}).AddOptional(job.idempotency_key);
  p.Add(job.timeout_ms).AddBinary(job.cache_key).Add(CacheTtlMillis(job.cache_ttl));
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  auto r = (*conn)->ExecPrepared("insert_from_cache", kSql, p);
  if (!r.ok()) return r.status();
  constexpr int kHitColumn = kJobColumnCount;  // right after the job's columns
  if (r->rows() != 1 || r->GetInt(0, kHitColumn) == 0) return std::optional<SubmitOutcome>();
  SubmitOutcome out;
  if (!r->IsNull(0, 0)) {
    out.job = RowToJob(*r, 0);
    return std::optional<SubmitOutcome>(std::move(out));
  }
  // A hit, but the idempotency key already belongs to a job: that job is the answer.
  Params q;
  q.Add(job.caller.tenant_id).Add(job.caller.subject).Add(*job.idempotency_key);
  auto existing = (*conn)->ExecPrepared(
      "job_by_key",
      "SELECT " JOB_COLUMNS
      " FROM jobs WHERE tenant_id = $1 AND owner = $2 AND idempotency_key = $3",
      q);
  if (!existing.ok()) return existing.status();
  if (existing->rows() == 0) {
    return absl::AbortedError("a job with the same idempotency key was deleted concurrently");
  }
  out.job = RowToJob(*existing, 0);
  out.existing = true;
  return std::optional<SubmitOutcome>(std::move(out));
}

absl::StatusOr<absl::Time> PgJobStore::PutCachedResult(const std::string& tenant_id,
                                                       const std::string& key,
                                                       const std::string& type,
                                                       const google::protobuf::Struct& result,
                                                       absl::Duration ttl) {
  Params p;
  p.Add(tenant_id).AddBinary(key).Add(type).AddBinary(result.SerializeAsString());
  p.Add(CacheTtlMillis(ttl));
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  auto r = (*conn)->ExecPrepared(
      "put_cached_result",
      "INSERT INTO response_cache (tenant_id, key, type, result, pinned, created_at, expires_at) "
      "VALUES ($1, $2::bytea, $3, $4::bytea, true, now(), now() + $5::int8 * interval "
      "'1 millisecond') ON CONFLICT (tenant_id, key) DO UPDATE SET type = EXCLUDED.type, "
      "result = EXCLUDED.result, pinned = true, created_at = EXCLUDED.created_at, "
      "expires_at = EXCLUDED.expires_at RETURNING aijobs_us(expires_at)",
      p);
  if (!r.ok()) return r.status();
  return absl::FromUnixMicros(r->GetInt(0, 0));
}

absl::StatusOr<int> PgJobStore::DeleteExpiredCacheEntries(int limit) {
  Params p;
  p.Add(int64_t{limit});
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  auto r = (*conn)->ExecPrepared(
      "delete_expired_cache",
      "WITH d AS (DELETE FROM response_cache WHERE (tenant_id, key) IN (SELECT tenant_id, key "
      "FROM response_cache WHERE expires_at <= now() LIMIT $1) RETURNING 1) "
      "SELECT count(*) FROM d",
      p);
  if (!r.ok()) return r.status();
  return static_cast<int>(r->GetInt(0, 0));
}

absl::Status PgJobStore::RegisterJobTypes(const std::vector<std::string>& types) {
  if (types.empty()) return absl::OkStatus();
  ArrayBuilder a;
  for (const auto& t : types) a.Add(t);
  Params p;
  p.Add(a.Finish());
  auto conn = relaxed_pool_->Acquire();
  if (!conn.ok()) return conn.status();
  return (*conn)
      ->ExecPrepared("register_types",
                     "INSERT INTO worker_types (type) SELECT DISTINCT unnest($1::text[]) "
                     "ON CONFLICT (type) DO UPDATE SET last_seen = now()",
                     p)
      .status();
}

absl::StatusOr<std::vector<std::string>> PgJobStore::KnownJobTypes(absl::Duration seen_within) {
  Params p;
  p.Add(MicrosLiteral(seen_within));
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  auto r = (*conn)->ExecPrepared(
      "known_types",
      "SELECT type FROM worker_types WHERE last_seen > now() - $1::int8 * interval '1 millisecond'",
      p);
  if (!r.ok()) return r.status();
  std::vector<std::string> out;
  for (int i = 0; i < r->rows(); ++i) out.push_back(r->GetString(i, 0));
  return out;
}

absl::StatusOr<int> PgJobStore::ForgetJobTypes(absl::Duration unseen_for) {
  Params p;
  p.Add(MicrosLiteral(unseen_for));
  auto conn = relaxed_pool_->Acquire();
  if (!conn.ok()) return conn.status();
  auto r = (*conn)->ExecPrepared(
      "forget_types",
      "WITH d AS (DELETE FROM worker_types WHERE last_seen < now() - $1::int8 * "
      "interval '1 millisecond' RETURNING 1) SELECT count(*) FROM d",
      p);
  if (!r.ok()) return r.status();
  return static_cast<int>(r->GetInt(0, 0));
}

absl::Status PgJobStore::NotifyNewJobs() {
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  return (*conn)->Exec("NOTIFY aijobs_jobs").status();
}

absl::Status PgJobStore::NotifyCancelled(const std::string& job_id) {
  Params p;
  p.Add(job_id);
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  return (*conn)->ExecParams("SELECT pg_notify('aijobs_cancel', $1)", p).status();
}

}  // namespace aijobs::scheduler
