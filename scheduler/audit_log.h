// AuditLog: records who did what (submits, cancels, retries, cache writes, API key changes,
// refused authentication) without making any RPC wait for the database: entries are written
// in batches by a background thread (a bounded buffer; if the database stays away longer than
// it holds, the oldest are dropped and counted in the log), and deleted after the retention.
//
//   AuditLog audit(&audit_store, {.payloads = false});
//   AuditEntry e = NewAuditEntry(*ctx, "submit", caller.tenant_id, caller.subject);
//   e.job_id = job.id(); e.code = "OK";
//   audit.Record(std::move(e));
#pragma once

#include <grpcpp/server_context.h>

#include <atomic>
#include <memory>
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/batch_queue.h"
#include "scheduler/audit_store.h"

namespace aijobs::scheduler {

struct AuditOptions {
  bool payloads = false;  // copy prompts and answers into entries (--audit_payloads)
  absl::Duration retention = absl::Hours(24 * 90);
  absl::Duration retention_interval = absl::Minutes(1);
  size_t max_buffered = 100000;
};

class AuditLog {
 public:
  AuditLog(AuditStore* store, AuditOptions options);
  ~AuditLog();

  // Queues `entry` (its time is set now when unset). Never blocks on the database.
  void Record(AuditEntry entry);
  bool payloads() const { return options_.payloads; }
  // Writes everything recorded so far (tests, shutdown).
  void Flush();
  void Stop();

 private:
  void Write(std::vector<AuditEntry>& batch);
  void RetentionLoop();

  AuditStore* const store_;
  const AuditOptions options_;
  std::atomic<size_t> buffered_{0};
  std::atomic<int64_t> dropped_{0};
  absl::Notification stop_;
  BatchQueue<AuditEntry> queue_;
  std::thread retention_;
};

// Records (when `audit` is not null) that the call on `ctx` to `target` ("JobService.SubmitJob")
// was refused with `refusal`. The caller is not known, so it goes to `tenant_id` (the default).
void RecordRefusal(AuditLog* audit, const grpc::ServerContextBase& ctx,
                   const std::string& tenant_id, const std::string& target,
                   const absl::Status& refusal);

// An entry for a call on `ctx` by the caller `subject` of `tenant_id`, with peer and request
// id filled in.
AuditEntry NewAuditEntry(const grpc::ServerContextBase& ctx, const std::string& action,
                         const std::string& tenant_id, const std::string& subject);

}  // namespace aijobs::scheduler
