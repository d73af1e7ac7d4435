#include "scheduler/migrations.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace aijobs::scheduler {
namespace {

constexpr int64_t kMigrationLockKey = 0x61696a6f6273;  // "aijobs"

struct Migration {
  int version;
  const char* sql;
};

// Append only: a released migration never changes.
const std::vector<Migration>& Migrations() {
  static const auto* migrations = new std::vector<Migration>{
      {1, R"sql(
CREATE FUNCTION aijobs_us(timestamptz) RETURNS bigint
  LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT (extract(epoch FROM $1) * 1000000)::bigint $$;

-- state: 1 QUEUED, 2 RUNNING, 3 SUCCEEDED, 4 FAILED, 5 CANCELLED (aijobs.v1.JobState).
CREATE TABLE jobs (
  id               uuid PRIMARY KEY,
  tenant_id        text NOT NULL,
  owner            text NOT NULL,
  type             text NOT NULL,
  spec             bytea NOT NULL,          -- aijobs.v1.internal.JobSpec
  state            smallint NOT NULL,
  priority         int NOT NULL DEFAULT 0,
  attempt          int NOT NULL DEFAULT 0,  -- the fencing token
  max_attempts     int NOT NULL,
  attempt_budget   int NOT NULL,            -- attempts granted per submit or redrive
  idempotency_key  text,
  timeout_ms       bigint NOT NULL DEFAULT 0,
  result           bytea,                   -- google.protobuf.Struct
  error            bytea,                   -- aijobs.v1.JobError
  run_after        timestamptz NOT NULL DEFAULT now(),
  lease_owner      text,
  lease_expires_at timestamptz,
  last_seq         bigint NOT NULL DEFAULT 0,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now(),
  started_at       timestamptz,
  finished_at      timestamptz
) WITH (fillfactor = 70);
CREATE UNIQUE INDEX jobs_idempotency ON jobs (tenant_id, idempotency_key)
  WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_queue ON jobs (priority DESC, run_after) WHERE state = 1;
CREATE INDEX jobs_running_lease ON jobs (lease_expires_at) WHERE state = 2;
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE state >= 3;
CREATE INDEX jobs_list ON jobs (tenant_id, created_at DESC, id DESC);

-- kind: 1 state change, 2 coalesced output deltas (payload DeltaBatch), 3 final job.
CREATE TABLE job_events (
  job_id  uuid NOT NULL,
  seq     bigint NOT NULL,
  kind    smallint NOT NULL,
  state   smallint,
  attempt int NOT NULL DEFAULT 0,
  error   bytea,
  payload bytea,
  time    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (job_id, seq)
);

CREATE TABLE worker_types (
  type      text PRIMARY KEY,
  last_seen timestamptz NOT NULL DEFAULT now()
);
)sql"},
      // Response cache. Adding columns with constant defaults rewrites nothing (PG 11+).
      {2, R"sql(
ALTER TABLE jobs
  ADD COLUMN cached       boolean NOT NULL DEFAULT false,  -- answered from response_cache
  ADD COLUMN cache_key    bytea,                           -- set when the job opted in
  ADD COLUMN cache_ttl_ms bigint NOT NULL DEFAULT 0;       -- how long its result is kept

-- result: google.protobuf.Struct. pinned: a pre-composed answer (PutCachedResult), served
-- whatever the submit's own ttl and not replaced by job results until it expires.
CREATE TABLE response_cache (
  tenant_id  text NOT NULL,
  key        bytea NOT NULL,                 -- SHA-256 of (tenant, type, canonical input)
  type       text NOT NULL,
  result     bytea NOT NULL,
  pinned     boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL,
  hits       bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (tenant_id, key)
);
CREATE INDEX response_cache_expiry ON response_cache (expires_at);
)sql"},
      // Queue clogging: a claim walks only the queue of the types its worker serves (jobs of
      // a type nobody serves, however high their priority, are never read), and a queued job
      // expires queue_timeout_ms after it became runnable (0: never).
      {3, R"sql(
ALTER TABLE jobs ADD COLUMN queue_timeout_ms bigint NOT NULL DEFAULT 0;
DROP INDEX jobs_queue;
CREATE INDEX jobs_queue ON jobs (type, priority DESC, run_after) WHERE state = 1;
CREATE INDEX jobs_queue_expiry ON jobs ((aijobs_us(run_after) + queue_timeout_ms * 1000))
  WHERE state = 1 AND queue_timeout_ms > 0;
CREATE INDEX worker_types_last_seen ON worker_types (last_seen);
)sql"},
      // Queue churn: every job is updated 2-3 times within seconds of its insert, so the
      // default thresholds (20 % of the table) leave the partial queue and lease indexes full
      // of entries for rows that have left that state, and the planner without statistics.
      // Vacuum and analyse after a fixed amount of churn instead, unthrottled.
      {4, R"sql(
ALTER TABLE jobs SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 2000,
  autovacuum_vacuum_insert_scale_factor = 0.01, autovacuum_vacuum_insert_threshold = 2000,
  autovacuum_analyze_scale_factor = 0.02, autovacuum_analyze_threshold = 2000,
  autovacuum_vacuum_cost_delay = 0);
ALTER TABLE job_events SET (autovacuum_vacuum_scale_factor = 0.05,
  autovacuum_vacuum_insert_scale_factor = 0.05, autovacuum_analyze_scale_factor = 0.05,
  autovacuum_vacuum_cost_delay = 0);
)sql"},
      // Identity: an idempotency key belongs to its caller (tenant and owner), a caller lists
      // its own jobs without walking its tenant's, and API keys (only a hash of the secret).
      {5, R"sql(
CREATE UNIQUE INDEX jobs_idempotency_owner ON jobs (tenant_id, owner, idempotency_key)
  WHERE idempotency_key IS NOT NULL;
DROP INDEX jobs_idempotency;
CREATE INDEX jobs_list_owner ON jobs (tenant_id, owner, created_at DESC, id DESC);

CREATE TABLE api_keys (
  id         text PRIMARY KEY,          -- 16 hex digits: the public part of the key
  tenant_id  text NOT NULL,
  name       text NOT NULL,
  hash       text NOT NULL,             -- hex SHA-256 of the secret
  roles      text[] NOT NULL DEFAULT '{}',
  job_types  text[] NOT NULL DEFAULT '{}',  -- worker keys: the types it may serve (none: any)
  created_by text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz,
  revoked_at timestamptz
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, created_at DESC);
)sql"},
      // The audit log: append-only, deleted by age (--audit_retention_days).
      {6, R"sql(
CREATE TABLE audit_log (
  id         bigserial PRIMARY KEY,
  time       timestamptz NOT NULL,
  tenant_id  text NOT NULL,
  subject    text NOT NULL,          -- '' for anonymous callers
  peer       text NOT NULL,
  action     text NOT NULL,          -- submit, cancel, retry, cache_put, apikey_*, auth_refused
  job_id     uuid,
  target     text NOT NULL,          -- an API key id, an RPC method
  code       text NOT NULL,          -- the answer's status code
  message    text NOT NULL,
  request_id text NOT NULL,
  payload    text                    -- with --audit_payloads only
);
CREATE INDEX audit_log_tenant_time ON audit_log (tenant_id, time DESC);
CREATE INDEX audit_log_time ON audit_log (time);
)sql"},
      // Quotas every replica shares: token buckets per tenant and per user (key "t:<tenant>",
      // "u:<tenant>:<subject>"). rate, burst, requested and granted are the last call's, kept
      // on the row so one INSERT ... ON CONFLICT DO UPDATE can refill and take in one step.
      {7, R"sql(
CREATE TABLE quota_buckets (
  key        text PRIMARY KEY,
  tokens     float8 NOT NULL,
  rate       float8 NOT NULL,
  burst      float8 NOT NULL,
  requested  bigint NOT NULL,
  granted    bigint NOT NULL,
  updated_at timestamptz NOT NULL
) WITH (fillfactor = 50);
)sql"},
      // The audit log is written once per submit: keep its writes small. No surrogate key
      // (nothing refers to a row), and time — which only grows — indexed with BRIN, a few
      // pages for millions of rows, for the retention sweep; listing uses (tenant, time).
      {8, R"sql(
ALTER TABLE audit_log DROP COLUMN id;
DROP INDEX audit_log_time;
CREATE INDEX audit_log_time ON audit_log USING brin (time);
)sql"},
  };
  return *migrations;
}

}  // namespace

int LatestSchemaVersion() { return Migrations().back().version; }

// One transaction under a transaction-scoped advisory lock: replicas starting together
// apply each migration once, and it works through a transaction-pooling PgBouncer (a
// session lock and its unlock could land on different server sessions there).
absl::Status ApplyMigrations(pg::Connection& conn) {
  auto fail = [&conn](const absl::Status& s, const std::string& what) {
    (void)conn.Exec("ROLLBACK");
    return absl::Status(s.code(), absl::StrCat(what, ": ", s.message()));
  };
  auto begun =
      conn.Exec(absl::StrCat("BEGIN; SELECT pg_advisory_xact_lock(", kMigrationLockKey, ")"));
  if (!begun.ok()) return fail(begun.status(), "locking the schema");
  auto table = conn.Exec(
      "CREATE TABLE IF NOT EXISTS aijobs_schema_migrations ("
      " version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())");
  if (!table.ok()) return fail(table.status(), "creating aijobs_schema_migrations");
  auto applied = conn.Exec("SELECT coalesce(max(version), 0) FROM aijobs_schema_migrations");
  if (!applied.ok()) return fail(applied.status(), "reading the schema version");
  int current = static_cast<int>(applied->GetInt(0, 0));
  std::vector<int> done;
  for (const Migration& m : Migrations()) {
    if (m.version <= current) continue;
    auto r = conn.Exec(absl::StrCat(
        m.sql, "\nINSERT INTO aijobs_schema_migrations (version) VALUES (", m.version, ");"));
    if (!r.ok()) return fail(r.status(), absl::StrCat("migration ", m.version, " failed"));
    done.push_back(m.version);
  }
  auto committed = conn.Exec("COMMIT");
  if (!committed.ok()) return fail(committed.status(), "committing the migrations");
  for (int v : done) spdlog::info("applied schema migration {}", v);
  return absl::OkStatus();
}

}  // namespace aijobs::scheduler
