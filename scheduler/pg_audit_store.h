// PgAuditStore: the AuditStore on PostgreSQL (table audit_log, schema migration 6).
//
//   PgAuditStore audit(&relaxed_pool);
#pragma once

#include "common/pg/pool.h"
#include "scheduler/audit_store.h"

namespace aijobs::scheduler {

class PgAuditStore : public AuditStore {
 public:
  explicit PgAuditStore(pg::Pool* pool) : pool_(pool) {}

  absl::Status AppendAudit(const std::vector<AuditEntry>& entries) override;
  absl::StatusOr<std::vector<AuditEntry>> ListAudit(const AuditQuery& query) override;
  absl::StatusOr<int> DeleteAuditBefore(absl::Time cutoff, int limit) override;

 private:
  pg::Pool* pool_;
};

}  // namespace aijobs::scheduler
