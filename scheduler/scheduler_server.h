// SchedulerServer: one scheduler replica, wired — database pool, migrations, store, event
// hub, dispatcher, batchers, housekeeping, and the gRPC server with JobService,
// WorkerService, health and reflection. main.cc and in-process tests both use it.
//
//   SchedulerOptions o; o.listen = "127.0.0.1:0"; o.database_url = url;
//   ASSIGN_OR_RETURN(auto server, SchedulerServer::Start(o));
//   server->Shutdown(absl::Seconds(10));
#pragma once

#include <grpcpp/server.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/tls_credentials.h"
#include "scheduler/audit_log.h"
#include "scheduler/authenticator.h"
#include "scheduler/submit_quota.h"

namespace aijobs::scheduler {

struct SchedulerOptions {
  std::string listen = "127.0.0.1:50051";
  std::string database_url;
  // database_url is a transaction-pooling PgBouncer (see pg::Connection::Open): no session
  // settings, no named prepared statements, migrations in one transaction.
  bool db_transaction_pooler = false;
  // Where to LISTEN for other replicas' inserts and cancels (a direct connection: LISTEN
  // does not work through a transaction pooler). Default: database_url, or none with
  // db_transaction_pooler (replicas then only poll, every poll_interval).
  std::string database_listen_url;
  std::string replica_id;  // default: host-pid
  int db_pool_size = 16;
  int64_t max_input_bytes = 1 << 20;
  absl::Duration lease = absl::Seconds(30);
  absl::Duration heartbeat_interval = absl::Seconds(1);
  absl::Duration poll_interval = absl::Seconds(1);
  absl::Duration retry_base = absl::Seconds(1);
  absl::Duration retry_max = absl::Seconds(60);
  absl::Duration default_timeout = absl::Minutes(10);
  absl::Duration retention = absl::Hours(24 * 7);
  // A queued job no worker took within this (unless it sets its own queue_timeout) ends
  // FAILED with EXPIRED; zero: never.
  absl::Duration default_queue_timeout = absl::Hours(24);
  // A job type no connected worker served for this long is forgotten (submits of it are
  // refused as unknown).
  absl::Duration job_type_ttl = absl::Hours(24);
  absl::Duration event_flush_interval = absl::Milliseconds(100);
  // How often idle watches check for events other replicas wrote (one statement for all).
  absl::Duration watch_poll_interval = absl::Milliseconds(500);
  // Who may call (see Authenticator). Off: every caller is the default tenant and may do
  // everything, and anyone may connect as a worker (local development only).
  AuthOptions auth;
  AuditOptions audit;
  // Submit rate limits per tenant and per user, shared by every replica (with --auth=on).
  QuotaOptions quota;
  // TLS on the gRPC port (cert and key; empty: plaintext), and the CA whose client
  // certificates identify workers (mTLS; empty: none requested).
  TlsFiles tls;
};

class SchedulerServer {
 public:
  // Connects to the database (retrying for up to 30 s while it starts), applies
  // migrations and starts serving.
  static absl::StatusOr<std::unique_ptr<SchedulerServer>> Start(const SchedulerOptions& options);
  ~SchedulerServer();

  // The port actually bound (useful with port 0).
  int port() const;
  // Graceful stop: refuse new work, ask workers to drain and wait up to `grace` for their
  // running attempts, requeue what is left, write everything buffered, close.
  void Shutdown(absl::Duration grace);
  void Wait();

  struct Impl;

 private:
  explicit SchedulerServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace aijobs::scheduler
