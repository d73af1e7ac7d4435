// aijobs-scheduler: flag parsing and wiring only; see scheduler_server.h.
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/synchronization/mutex.h"
#include "common/flags_help.h"
#include "common/logging.h"
#include "common/shutdown_signal.h"
#include "scheduler/scheduler_server.h"
#include "spdlog/spdlog.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:50051", "gRPC listen address host:port");
ABSL_FLAG(std::string, database_url, "", "PostgreSQL conninfo or URL (env AIJOBS_DATABASE_URL)");
ABSL_FLAG(std::string, replica_id, "", "name of this replica (default host-pid)");
ABSL_FLAG(int, db_pool_size, 16, "database connections");
ABSL_FLAG(bool, db_transaction_pooler, false,
          "--database_url is a transaction-pooling PgBouncer: no session settings (commits "
          "are all synchronous; set statement_timeout on the role), no prepared statements");
ABSL_FLAG(std::string, database_listen_url, "",
          "direct PostgreSQL conninfo for LISTEN (wake-ups and cross-replica cancels); "
          "default --database_url, or none with --db_transaction_pooler (poll only)");
ABSL_FLAG(int64_t, max_input_bytes, 1 << 20, "largest accepted job input (serialized)");
ABSL_FLAG(int64_t, lease_ms, 30000, "attempt lease, extended while the worker is connected");
ABSL_FLAG(int64_t, heartbeat_ms, 1000,
          "worker heartbeat interval: a worker silent for 2 intervals gets no new jobs, one "
          "silent for 5 is dropped and its jobs requeued");
ABSL_FLAG(int64_t, poll_interval_ms, 1000, "fallback poll for runnable jobs");
ABSL_FLAG(int64_t, retry_base_ms, 1000, "first retry backoff (doubles per attempt, jittered)");
ABSL_FLAG(int64_t, retry_max_ms, 60000, "largest retry backoff");
ABSL_FLAG(int64_t, default_timeout_ms, 600000, "per-attempt timeout when a job sets none");
ABSL_FLAG(int64_t, retention_hours, 168, "finished jobs are deleted after this many hours");
ABSL_FLAG(int64_t, default_queue_timeout_s, 86400,
          "a queued job no worker took within this many seconds (unless it sets its own "
          "queue_timeout) ends FAILED with EXPIRED; 0 = never");
ABSL_FLAG(int64_t, job_type_ttl_s, 86400,
          "a job type no connected worker served for this many seconds is forgotten, and "
          "submits of it are refused");
ABSL_FLAG(int64_t, event_flush_ms, 100, "how often streamed output is written to job_events");
ABSL_FLAG(int64_t, watch_poll_ms, 500,
          "how often idle WatchJob streams check for events written by other replicas");
ABSL_FLAG(int64_t, shutdown_grace_ms, 10000, "on SIGTERM, how long running attempts may finish");
ABSL_FLAG(std::string, auth, "on",
          "on: every call is authenticated (JWT or API key; workers with a worker credential); "
          "off: no authentication, one default tenant, anyone may act as a worker (local "
          "development only)");
ABSL_FLAG(std::string, jwt_keys, "",
          "file with the keys JWTs are verified with: a JWKS (HS256/RS256/ES256, picked by kid) "
          "or PEM public keys; re-read when it changes (key rotation without a restart)");
ABSL_FLAG(std::string, jwt_issuer, "", "required iss of JWTs (empty: not checked)");
ABSL_FLAG(std::string, jwt_audience, "", "required aud of JWTs (empty: not checked)");
ABSL_FLAG(int64_t, jwt_leeway_s, 30, "clock skew allowed on JWT exp and nbf");
ABSL_FLAG(std::string, jwt_tenant_claim, "tenant",
          "JWT claim naming the caller's tenant (absent: --default_tenant)");
ABSL_FLAG(std::string, jwt_roles_claim, "roles",
          "JWT claim listing the caller's roles (admin, worker, or your own)");
ABSL_FLAG(std::string, jwt_job_types_claim, "job_types",
          "JWT claim listing the job types a worker credential may serve (absent: any)");
ABSL_FLAG(std::string, jwt_tier_claim, "tier", "JWT claim naming the caller's tier");
ABSL_FLAG(std::string, default_tenant, "default",
          "tenant of anonymous callers and of JWTs without the tenant claim");
ABSL_FLAG(std::vector<std::string>, public_job_types, {},
          "job types anonymous callers may submit and read (e.g. a landing-page assistant)");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain for TLS on --listen (empty: plaintext)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA whose client certificates identify workers (mTLS: a worker presenting one "
          "needs no token); needs --tls_cert");
ABSL_FLAG(double, tenant_submit_rate, 1000,
          "jobs per second a tenant may submit, on average over all replicas (0: no limit); "
          "more are refused RESOURCE_EXHAUSTED (429) with a retry hint");
ABSL_FLAG(double, tenant_submit_burst, 10000, "burst a tenant may submit above its rate");
ABSL_FLAG(double, user_submit_rate, 50,
          "jobs per second one user (or all anonymous callers of a tenant together) may submit "
          "(0: no limit)");
ABSL_FLAG(double, user_submit_burst, 500, "burst a user may submit above its rate");
ABSL_FLAG(bool, audit_payloads, false,
          "copy job inputs into the audit log (by default it records who did what to which job, "
          "never prompts or answers)");
ABSL_FLAG(int64_t, audit_retention_days, 90, "audit entries are deleted after this many days");
ABSL_FLAG(int64_t, auth_reload_ms, 1000,
          "how often --jwt_keys is checked for changes and API keys are re-read (a revoked key "
          "stops working on every replica within this)");

int main(int argc, char** argv) {
  // Before any thread starts, so that only its signal thread receives SIGINT/SIGTERM.
  aijobs::ShutdownSignal shutdown;
  aijobs::ShowOwnFlagsInHelp("scheduler/main.cc");
  absl::SetProgramUsageMessage("aijobs scheduler: JobService and WorkerService on PostgreSQL");
  absl::ParseCommandLine(argc, argv);
  aijobs::InitLogging("aijobs-scheduler");
  // Debian's Abseil is built with mutex deadlock detection on, which costs a lock-graph update
  // per acquisition on hot paths; lock use is checked at compile time (clang -Wthread-safety).
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);

  aijobs::scheduler::SchedulerOptions o;
  o.listen = absl::GetFlag(FLAGS_listen);
  o.database_url = absl::GetFlag(FLAGS_database_url);
  if (o.database_url.empty() && std::getenv("AIJOBS_DATABASE_URL") != nullptr) {
    o.database_url = std::getenv("AIJOBS_DATABASE_URL");
  }
  o.replica_id = absl::GetFlag(FLAGS_replica_id);
  o.db_pool_size = absl::GetFlag(FLAGS_db_pool_size);
  o.db_transaction_pooler = absl::GetFlag(FLAGS_db_transaction_pooler);
  o.database_listen_url = absl::GetFlag(FLAGS_database_listen_url);
  o.max_input_bytes = absl::GetFlag(FLAGS_max_input_bytes);
  o.lease = absl::Milliseconds(absl::GetFlag(FLAGS_lease_ms));
  o.heartbeat_interval = absl::Milliseconds(absl::GetFlag(FLAGS_heartbeat_ms));
  o.poll_interval = absl::Milliseconds(absl::GetFlag(FLAGS_poll_interval_ms));
  o.retry_base = absl::Milliseconds(absl::GetFlag(FLAGS_retry_base_ms));
  o.retry_max = absl::Milliseconds(absl::GetFlag(FLAGS_retry_max_ms));
  o.default_timeout = absl::Milliseconds(absl::GetFlag(FLAGS_default_timeout_ms));
  o.retention = absl::Hours(absl::GetFlag(FLAGS_retention_hours));
  o.default_queue_timeout = absl::Seconds(absl::GetFlag(FLAGS_default_queue_timeout_s));
  o.job_type_ttl = absl::Seconds(absl::GetFlag(FLAGS_job_type_ttl_s));
  o.event_flush_interval = absl::Milliseconds(absl::GetFlag(FLAGS_event_flush_ms));
  o.watch_poll_interval = absl::Milliseconds(absl::GetFlag(FLAGS_watch_poll_ms));

  const std::string auth_mode = absl::GetFlag(FLAGS_auth);
  if (auth_mode != "on" && auth_mode != "off") {
    spdlog::critical("--auth must be on or off, not \"{}\"", auth_mode);
    return 2;
  }
  o.auth.enabled = auth_mode == "on";
  o.auth.jwt_keys_file = absl::GetFlag(FLAGS_jwt_keys);
  o.auth.jwt_check.issuer = absl::GetFlag(FLAGS_jwt_issuer);
  o.auth.jwt_check.audience = absl::GetFlag(FLAGS_jwt_audience);
  o.auth.jwt_check.leeway = absl::Seconds(absl::GetFlag(FLAGS_jwt_leeway_s));
  o.auth.tenant_claim = absl::GetFlag(FLAGS_jwt_tenant_claim);
  o.auth.roles_claim = absl::GetFlag(FLAGS_jwt_roles_claim);
  o.auth.job_types_claim = absl::GetFlag(FLAGS_jwt_job_types_claim);
  o.auth.tier_claim = absl::GetFlag(FLAGS_jwt_tier_claim);
  o.auth.default_tenant = absl::GetFlag(FLAGS_default_tenant);
  o.auth.public_job_types = absl::GetFlag(FLAGS_public_job_types);
  o.auth.reload_interval = absl::Milliseconds(absl::GetFlag(FLAGS_auth_reload_ms));
  o.audit.payloads = absl::GetFlag(FLAGS_audit_payloads);
  o.quota.tenant_rate = absl::GetFlag(FLAGS_tenant_submit_rate);
  o.quota.tenant_burst = absl::GetFlag(FLAGS_tenant_submit_burst);
  o.quota.user_rate = absl::GetFlag(FLAGS_user_submit_rate);
  o.quota.user_burst = absl::GetFlag(FLAGS_user_submit_burst);
  o.tls.cert_file = absl::GetFlag(FLAGS_tls_cert);
  o.tls.key_file = absl::GetFlag(FLAGS_tls_key);
  o.tls.ca_file = absl::GetFlag(FLAGS_tls_client_ca);
  o.auth.certificate_workers = !o.tls.ca_file.empty();
  o.audit.retention = absl::Hours(24 * absl::GetFlag(FLAGS_audit_retention_days));

  auto server = aijobs::scheduler::SchedulerServer::Start(o);
  if (!server.ok()) {
    spdlog::critical("cannot start: {}", server.status().ToString());
    return 1;
  }
  shutdown.Wait();
  spdlog::info("signal {}: shutting down", shutdown.first_signal());
  (*server)->Shutdown(absl::Milliseconds(absl::GetFlag(FLAGS_shutdown_grace_ms)));
  return 0;
}
