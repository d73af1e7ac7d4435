#include "scheduler/scheduler_server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/server_builder.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/executor.h"
#include "common/pg/pool.h"
#include "common/time_util.h"
#include "scheduler/admin_service.h"
#include "scheduler/attempt_finisher.h"
#include "scheduler/cache_adverts.h"
#include "scheduler/dispatcher.h"
#include "scheduler/event_hub.h"
#include "scheduler/housekeeping.h"
#include "scheduler/job_service.h"
#include "scheduler/job_type_registry.h"
#include "scheduler/migrations.h"
#include "scheduler/pg_api_key_store.h"
#include "scheduler/pg_audit_store.h"
#include "scheduler/pg_job_store.h"
#include "scheduler/pg_quota_store.h"
#include "scheduler/submit_batcher.h"
#include "scheduler/worker_service.h"
#include "spdlog/spdlog.h"

namespace aijobs::scheduler {

struct SchedulerServer::Impl {
  SchedulerOptions options;
  int port = 0;
  std::unique_ptr<pg::Pool> pool;
  std::unique_ptr<pg::Pool> relaxed_pool;
  std::unique_ptr<PgJobStore> store;
  std::unique_ptr<PgApiKeyStore> api_keys;
  std::unique_ptr<PgAuditStore> audit_store;
  std::unique_ptr<AuditLog> audit;
  std::unique_ptr<PgQuotaStore> quota_store;
  std::unique_ptr<SubmitQuota> quota;
  std::unique_ptr<Authenticator> auth;
  std::unique_ptr<EventHub> hub;
  std::unique_ptr<Executor> executor;
  std::unique_ptr<Executor> watch_executor;
  std::unique_ptr<WatchReadBatcher> watch_reads;
  std::unique_ptr<JobTypeRegistry> types;
  std::unique_ptr<CacheAdvertRegistry> cache_adverts;
  std::unique_ptr<AttemptFinisher> finisher;
  std::unique_ptr<Dispatcher> dispatcher;
  std::unique_ptr<Housekeeping> housekeeping;
  std::unique_ptr<SubmitBatcher> batcher;
  std::unique_ptr<JobServiceImpl> job_service;
  std::unique_ptr<AdminServiceImpl> admin_service;
  std::unique_ptr<WorkerServiceImpl> worker_service;
  std::unique_ptr<grpc::Server> server;
  bool shut_down = false;
  ~Impl();
};

namespace {

// Finishes the executors' queued work and joins their threads. Their closures use the other
// members, so this must run before any of those is destroyed (members are destroyed in
// reverse order of declaration, which would destroy `types` before the executors).
void StopExecutors(SchedulerServer::Impl& i) {
  i.watch_reads.reset();  // its callbacks may queue on the watch lane
  i.watch_executor.reset();
  i.executor.reset();
}

}  // namespace

SchedulerServer::Impl::~Impl() {
  // Start may fail after some members exist, without Shutdown: the server goes first (its
  // handlers queue executor work), then the executors, then the rest.
  server.reset();
  StopExecutors(*this);
}

SchedulerServer::SchedulerServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

SchedulerServer::~SchedulerServer() { Shutdown(absl::Seconds(5)); }

int SchedulerServer::port() const { return impl_->port; }

absl::StatusOr<std::unique_ptr<SchedulerServer>> SchedulerServer::Start(
    const SchedulerOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  if (impl->options.replica_id.empty()) {
    char host[256] = {0};
    gethostname(host, sizeof(host) - 1);
    impl->options.replica_id = absl::StrCat(host, "-", getpid());
  }
  const SchedulerOptions& o = impl->options;
  if (o.database_url.empty()) {
    return absl::InvalidArgumentError("--database_url is required (a libpq conninfo or URL)");
  }

  // The database may still be starting (e.g. under ./dev up): retry for a while.
  absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (true) {
    auto conn = pg::Connection::Open(o.database_url, 0, true, o.db_transaction_pooler);
    if (conn.ok()) {
      absl::Status m = ApplyMigrations(**conn);
      if (!m.ok()) return m;
      break;
    }
    if (absl::Now() > deadline) return conn.status();
    spdlog::warn("waiting for the database: {}", conn.status().ToString());
    absl::SleepFor(absl::Milliseconds(500));
  }

  impl->pool = std::make_unique<pg::Pool>(o.database_url, o.db_pool_size, 30000, true,
                                          o.db_transaction_pooler);
  // Through a transaction pooler this pool's commits are synchronous too (nothing can be
  // set on a shared session): slower, never less durable.
  impl->relaxed_pool =
      std::make_unique<pg::Pool>(o.database_url, std::max(4, o.db_pool_size / 2), 30000,
                                 /*synchronous_commit=*/false, o.db_transaction_pooler);
  if (o.db_transaction_pooler) {
    spdlog::info(
        "database behind a transaction pooler: no session settings or prepared "
        "statements; {}",
        o.database_listen_url.empty() ? "no LISTEN, replicas poll"
                                      : "LISTEN on --database_listen_url");
  }
  impl->store = std::make_unique<PgJobStore>(impl->pool.get(), impl->relaxed_pool.get());
  impl->api_keys = std::make_unique<PgApiKeyStore>(impl->pool.get());
  auto auth = Authenticator::Create(o.auth, impl->api_keys.get());
  if (!auth.ok()) return auth.status();
  impl->auth = *std::move(auth);
  if (!o.auth.enabled) {
    spdlog::warn(
        "--auth=off: every caller is tenant \"default\" and may do everything, and "
        "anyone may connect as a worker; for local development only");
  } else if (o.auth.jwt_keys_file.empty()) {
    spdlog::warn(
        "no --jwt_keys: only API keys are accepted, and they are created by an admin "
        "(a token signed by a --jwt_keys key with the admin role)");
  }
  // Audit entries are written apart from the calls they record, without waiting for the WAL
  // flush: a database crash may lose the last moments of the log, never a job.
  // With --auth=off there is nobody to record (every caller is the same anonymous one).
  impl->audit_store = std::make_unique<PgAuditStore>(impl->relaxed_pool.get());
  if (o.auth.enabled) impl->audit = std::make_unique<AuditLog>(impl->audit_store.get(), o.audit);
  impl->hub = std::make_unique<EventHub>();
  // Unary calls and watch replays run in separate bounded lanes: a full lane answers
  // RESOURCE_EXHAUSTED rather than queueing without limit, and watches cannot delay submits.
  constexpr size_t kUnaryQueueLimit = 1024;
  constexpr size_t kWatchQueueLimit = 512;
  impl->executor =
      std::make_unique<Executor>("db", std::max(4, o.db_pool_size / 2), kUnaryQueueLimit);
  impl->watch_executor =
      std::make_unique<Executor>("watch", std::max(2, o.db_pool_size / 4), kWatchQueueLimit);
  impl->watch_reads = std::make_unique<WatchReadBatcher>(impl->store.get());
  JobTypeRegistryOptions topts;
  topts.type_ttl = o.job_type_ttl;
  impl->types = std::make_unique<JobTypeRegistry>(impl->store.get(), topts);
  // A first list before serving, so the first submits are judged on it (the background
  // thread keeps it fresh from here on).
  if (absl::Status s = impl->types->Refresh(); !s.ok()) {
    spdlog::warn("reading known job types failed: {}", s.ToString());
  }
  impl->cache_adverts = std::make_unique<CacheAdvertRegistry>();
  Impl* raw = impl.get();
  impl->finisher = std::make_unique<AttemptFinisher>(
      impl->store.get(), impl->hub.get(),
      [raw](const v1::Job& job) { raw->dispatcher->WakeAt(FromProtoTimestamp(job.run_after())); });
  DispatcherOptions dopts;
  dopts.lease = o.lease;
  dopts.poll_interval = o.poll_interval;
  dopts.default_timeout = o.default_timeout;
  impl->dispatcher =
      std::make_unique<Dispatcher>(impl->store.get(), impl->hub.get(), impl->finisher.get(), dopts);
  HousekeepingOptions hopts;
  hopts.flush_interval = o.event_flush_interval;
  hopts.lease = o.lease;
  hopts.heartbeat_interval = o.heartbeat_interval;
  hopts.retention = o.retention;
  hopts.database_url = !o.database_listen_url.empty() ? o.database_listen_url
                       : o.db_transaction_pooler      ? ""
                                                      : o.database_url;
  impl->housekeeping = std::make_unique<Housekeeping>(
      impl->store.get(), impl->hub.get(), impl->dispatcher.get(), impl->finisher.get(), hopts);
  impl->batcher = std::make_unique<SubmitBatcher>(impl->store.get(), [raw] {
    raw->dispatcher->Wake();
    raw->housekeeping->RequestNotify();
  });
  // Quotas are per tenant and user: with --auth=off there is one of each, and none apply.
  if (o.auth.enabled) {
    // Bucket updates need no WAL flush: a crash may forget some spending, never a job.
    impl->quota_store = std::make_unique<PgQuotaStore>(impl->relaxed_pool.get());
    impl->quota = std::make_unique<SubmitQuota>(impl->quota_store.get(), o.quota);
    impl->batcher->set_quota(impl->quota.get());
  }

  JobServiceDeps jdeps;
  jdeps.store = impl->store.get();
  jdeps.hub = impl->hub.get();
  jdeps.dispatcher = impl->dispatcher.get();
  jdeps.batcher = impl->batcher.get();
  jdeps.executor = impl->executor.get();
  jdeps.watch_executor = impl->watch_executor.get();
  jdeps.watch_reads = impl->watch_reads.get();
  jdeps.types = impl->types.get();
  jdeps.auth = impl->auth.get();
  jdeps.audit = impl->audit.get();
  jdeps.cache_adverts = impl->cache_adverts.get();
  jdeps.limits.max_input_bytes = o.max_input_bytes;
  jdeps.default_queue_timeout = o.default_queue_timeout;
  jdeps.watch_poll_interval = o.watch_poll_interval;
  impl->job_service = std::make_unique<JobServiceImpl>(jdeps);

  WorkerServiceDeps wdeps;
  wdeps.store = impl->store.get();
  wdeps.hub = impl->hub.get();
  wdeps.dispatcher = impl->dispatcher.get();
  wdeps.finisher = impl->finisher.get();
  wdeps.executor = impl->executor.get();
  wdeps.types = impl->types.get();
  wdeps.auth = impl->auth.get();
  wdeps.audit = impl->audit.get();
  wdeps.cache_adverts = impl->cache_adverts.get();
  wdeps.replica_id = o.replica_id;
  wdeps.retry = RetryPolicy{o.retry_base, o.retry_max};
  wdeps.heartbeat_interval = o.heartbeat_interval;
  impl->worker_service = std::make_unique<WorkerServiceImpl>(wdeps);
  impl->admin_service = std::make_unique<AdminServiceImpl>(
      AdminServiceDeps{impl->api_keys.get(), impl->auth.get(), impl->executor.get(),
                       impl->audit_store.get(), impl->audit.get()});

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  auto server_creds = ServerTlsCredentials(o.tls);
  if (!server_creds.ok()) return server_creds.status();
  builder.AddListeningPort(o.listen, *server_creds, &impl->port);
  builder.RegisterService(impl->job_service.get());
  builder.RegisterService(impl->worker_service.get());
  builder.RegisterService(impl->admin_service.get());
  // Worker messages batch many results (an embed result alone can pass 4 MiB); client input
  // size is checked separately against --max_input_bytes with a clear error.
  builder.SetMaxReceiveMessageSize(
      static_cast<int>(std::max<int64_t>(o.max_input_bytes * 2, 64 << 20)));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 20000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  impl->server = builder.BuildAndStart();
  if (!impl->server || impl->port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", o.listen));
  }
  spdlog::info("scheduler {} serving on port {} (schema v{}, {})", o.replica_id, impl->port,
               LatestSchemaVersion(),
               o.tls.cert_file.empty() ? "plaintext"
               : o.tls.ca_file.empty() ? "TLS"
                                       : "TLS, worker client certificates");
  return std::unique_ptr<SchedulerServer>(new SchedulerServer(std::move(impl)));
}

void SchedulerServer::Shutdown(absl::Duration grace) {
  Impl& i = *impl_;
  if (i.shut_down) return;
  i.shut_down = true;
  spdlog::info("shutting down: draining workers (grace {})", absl::FormatDuration(grace));
  i.worker_service->StopAccepting();
  i.server->GetHealthCheckService()->Shutdown();
  // Let workers finish what they run; their completions are written as they arrive.
  for (const auto& s : i.dispatcher->Sessions()) s->SendDrain();
  absl::Time deadline = absl::Now() + grace;
  while (absl::Now() < deadline) {
    int running = 0;
    for (const auto& s : i.dispatcher->Sessions()) running += s->RunningCount();
    if (running == 0) break;
    absl::SleepFor(absl::Milliseconds(20));
  }
  // Stop claiming; attempts still running are requeued (written by the finisher below).
  i.dispatcher->Stop();
  i.server->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
  // No RPC can queue work any more: run what is queued (a late hello's job type Register, a
  // submit's lookup) and join, while the registry, store, batcher and finisher it uses exist.
  StopExecutors(i);
  i.batcher->Stop();
  i.finisher->Flush();
  i.finisher->Stop();
  i.housekeeping->FlushDeltas();
  i.housekeeping->Stop();
  if (i.audit) i.audit->Stop();
  spdlog::info("scheduler stopped");
}

void SchedulerServer::Wait() { impl_->server->Wait(); }

}  // namespace aijobs::scheduler
