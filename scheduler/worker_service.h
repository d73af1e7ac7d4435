// WorkerServiceImpl: WorkerService.Connect, one bidirectional stream per worker. Reads
// hello, heartbeats, output deltas, completions and failures; writes welcome, batched
// assignments, cancels and drain. Never blocks gRPC's threads: deltas go to the EventHub,
// attempt ends to the AttemptFinisher.
//
//   WorkerServiceImpl workers(&deps);
//   builder.RegisterService(&workers);
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "aijobs/v1/worker_service.grpc.pb.h"
#include "common/executor.h"
#include "scheduler/attempt_finisher.h"
#include "scheduler/audit_log.h"
#include "scheduler/authenticator.h"
#include "scheduler/dispatcher.h"
#include "scheduler/event_hub.h"
#include "scheduler/job_store.h"
#include "scheduler/retry_policy.h"

namespace aijobs::scheduler {

class CacheAdvertRegistry;
class JobTypeRegistry;

struct WorkerServiceDeps {
  JobStore* store;
  EventHub* hub;
  Dispatcher* dispatcher;
  AttemptFinisher* finisher;
  Executor* executor;
  JobTypeRegistry* types;
  // Who is connecting (null: anyone may, as with --auth=off).
  const Authenticator* auth = nullptr;
  // Refused streams are recorded here (may be null).
  AuditLog* audit = nullptr;
  // Receives the response-cache adverts of every hello (may be null).
  CacheAdvertRegistry* cache_adverts = nullptr;
  std::string replica_id;
  RetryPolicy retry;
  absl::Duration heartbeat_interval = absl::Seconds(1);
  const std::atomic<bool>* accepting = nullptr;  // set by the service
};

class WorkerServiceImpl final : public v1::WorkerService::CallbackService {
 public:
  explicit WorkerServiceImpl(WorkerServiceDeps deps) : deps_(std::move(deps)) {
    deps_.accepting = &accepting_;
  }

  grpc::ServerBidiReactor<v1::WorkerMessage, v1::SchedulerMessage>* Connect(
      grpc::CallbackServerContext* context) override;

  // Refuse new streams (shutdown).
  void StopAccepting() { accepting_ = false; }

 private:
  WorkerServiceDeps deps_;
  std::atomic<bool> accepting_{true};
};

}  // namespace aijobs::scheduler
