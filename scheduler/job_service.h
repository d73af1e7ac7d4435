// JobServiceImpl: the client API (callback API). Unary calls validate on gRPC's thread and
// run their database work on an executor; SubmitJob goes through the SubmitBatcher (a job
// that opted into the response cache is first looked up there: a hit is answered SUCCEEDED
// with Job.cached = true and never reaches the batcher or a worker); WatchJob streams from
// the EventHub after replaying job_events.
//
// Work an executor refuses (its queue is full) is answered RESOURCE_EXHAUSTED "scheduler
// overloaded; retry in 1s", with trailing metadata retry-after: 1 (and
// x-http-header-retry-after, which the gateway sends as Retry-After).
//
// SubmitJob sets initial metadata for the HTTP gateway: x-http-code (202 when the job is
// pending, 200 when it is already finished, e.g. a cache hit) and x-http-header-location
// (/v1/jobs/<id>).
//
//   JobServiceImpl jobs(deps);
//   builder.RegisterService(&jobs);
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "aijobs/v1/job_service.grpc.pb.h"
#include "common/executor.h"
#include "scheduler/audit_log.h"
#include "scheduler/authenticator.h"
#include "scheduler/cache_adverts.h"
#include "scheduler/dispatcher.h"
#include "scheduler/event_hub.h"
#include "scheduler/job_store.h"
#include "scheduler/job_type_registry.h"
#include "scheduler/submit_batcher.h"
#include "scheduler/validation.h"
#include "scheduler/watch_read_batcher.h"

namespace aijobs::scheduler {

// What a JobService call needs of its caller.
enum class JobAccess { kSubmit, kRead, kList, kRetry, kPutCache };

struct JobServiceDeps {
  JobStore* store;
  EventHub* hub;
  Dispatcher* dispatcher;
  SubmitBatcher* batcher;
  // Unary calls' database work (bounded: a full queue answers RESOURCE_EXHAUSTED).
  Executor* executor;
  // WatchJob's replays and re-reads, apart so a burst of watches cannot delay unary calls
  // (may be null: `executor` serves them too).
  Executor* watch_executor = nullptr;
  // Groups the first read of new watches (null: each reads on the watch lane on its own).
  WatchReadBatcher* watch_reads = nullptr;
  JobTypeRegistry* types;
  // Who is calling (null: every caller is the one default tenant, as with --auth=off).
  const Authenticator* auth = nullptr;
  // Where submits, cancels, retries, cache writes and refusals are recorded (may be null).
  AuditLog* audit = nullptr;
  // Response-cache opt-ins advertised by workers (may be null: only per-job policies).
  CacheAdvertRegistry* cache_adverts = nullptr;
  SubmitLimits limits;
  // Applies to a submit that sets no queue_timeout; zero: such jobs never expire.
  absl::Duration default_queue_timeout = absl::Hours(24);
  // How often a watcher with no local events re-reads job_events (events written by other
  // replicas).
  absl::Duration watch_poll_interval = absl::Seconds(1);
};

class WatchRegistry;

class JobServiceImpl final : public v1::JobService::CallbackService {
 public:
  explicit JobServiceImpl(JobServiceDeps deps);
  ~JobServiceImpl() override;

  grpc::ServerUnaryReactor* SubmitJob(grpc::CallbackServerContext* ctx,
                                      const v1::SubmitJobRequest* request, v1::Job* job) override;
  grpc::ServerUnaryReactor* GetJob(grpc::CallbackServerContext* ctx,
                                   const v1::GetJobRequest* request, v1::Job* job) override;
  grpc::ServerWriteReactor<v1::JobEvent>* WatchJob(grpc::CallbackServerContext* ctx,
                                                   const v1::WatchJobRequest* request) override;
  grpc::ServerUnaryReactor* CancelJob(grpc::CallbackServerContext* ctx,
                                      const v1::CancelJobRequest* request, v1::Job* job) override;
  grpc::ServerUnaryReactor* ListJobs(grpc::CallbackServerContext* ctx,
                                     const v1::ListJobsRequest* request,
                                     v1::ListJobsResponse* response) override;
  grpc::ServerUnaryReactor* RetryJob(grpc::CallbackServerContext* ctx,
                                     const v1::RetryJobRequest* request, v1::Job* job) override;
  grpc::ServerUnaryReactor* PutCachedResult(grpc::CallbackServerContext* ctx,
                                            const v1::PutCachedResultRequest* request,
                                            v1::PutCachedResultResponse* response) override;

  // Open WatchJob streams.
  size_t WatchCount();

 private:
  // AuthorizeJobCall, recording a refusal in the audit log.
  absl::StatusOr<Caller> Authorize(const grpc::CallbackServerContext& ctx, const char* method,
                                   JobAccess access, const std::string& type = "");
  void Audit(const grpc::CallbackServerContext& ctx, const char* action, const Caller& caller,
             const std::string& job_id, const absl::Status& result);
  void AuditSubmit(const grpc::CallbackServerContext& ctx, const Caller& caller,
                   const v1::SubmitJobRequest& request, const absl::StatusOr<SubmitOutcome>& out);

  JobServiceDeps deps_;
  std::unique_ptr<WatchRegistry> watches_;
};

// The caller of `ctx` as the store scopes it, when it may make a call needing `access` (for
// kSubmit, of job type `type`): UNAUTHENTICATED for a missing or bad credential and for an
// anonymous caller where one is needed (anything but submitting a public type and reading,
// watching or cancelling its own anonymous jobs); PERMISSION_DENIED for a worker credential
// and, for kPutCache, a caller without the admin role. `auth` null: the --auth=off caller.
absl::StatusOr<Caller> AuthorizeJobCall(const Authenticator* auth,
                                        const grpc::CallbackServerContext& ctx, JobAccess access,
                                        const std::string& type = "");

}  // namespace aijobs::scheduler
