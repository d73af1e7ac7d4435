// AuditStore: the append-only audit log (who did what to which job, and every refused
// authentication). PgAuditStore is the real one; AuditLog batches writes in front of it.
//
//   PgAuditStore audit(&pool);
//   absl::Status s = audit.AppendAudit(entries);
//   auto page = audit.ListAudit({.tenant_id = "t1", .since = absl::Now() - absl::Hours(1)});
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace aijobs::scheduler {

struct AuditEntry {
  absl::Time time = absl::InfinitePast();
  std::string tenant_id;
  std::string subject;  // "" for an anonymous caller
  std::string peer;     // the caller's address as the scheduler saw it
  // submit, cancel, retry, cache_put, apikey_create, apikey_revoke, auth_refused
  std::string action;
  std::string job_id;   // "" when none
  std::string target;   // what else the action named: an API key id, an RPC method
  std::string code;     // the answer: OK, NOT_FOUND, UNAUTHENTICATED, ...
  std::string message;  // why, for refusals (never a credential)
  std::string request_id;
  std::optional<std::string> payload;  // the input or result, with --audit_payloads only
};

struct AuditQuery {
  std::string tenant_id;
  absl::Time since = absl::InfinitePast();
  std::string subject;  // "" = every subject
  int limit = 100;
};

class AuditStore {
 public:
  virtual ~AuditStore() = default;
  virtual absl::Status AppendAudit(const std::vector<AuditEntry>& entries) = 0;
  // The tenant's entries at or after `since`, newest first.
  virtual absl::StatusOr<std::vector<AuditEntry>> ListAudit(const AuditQuery& query) = 0;
  // Deletes up to `limit` entries older than `cutoff`; returns how many.
  virtual absl::StatusOr<int> DeleteAuditBefore(absl::Time cutoff, int limit) = 0;
};

}  // namespace aijobs::scheduler
