#include "scheduler/pg_audit_store.h"

#include "absl/strings/str_cat.h"
#include "common/pg/array.h"
#include "common/status_macros.h"

namespace aijobs::scheduler {
namespace {

using pg::ArrayBuilder;
using pg::Params;
using pg::Result;

#define AUDIT_COLUMNS                                                                       \
  "aijobs_us(time), tenant_id, subject, peer, action, coalesce(job_id::text, ''), target, " \
  "code, message, request_id, payload"
enum AuditColumn {
  kTime,
  kTenant,
  kSubject,
  kPeer,
  kAction,
  kJob,
  kTarget,
  kCode,
  kMessage,
  kRequestId,
  kPayload,
  kAuditColumnCount
};

}  // namespace

absl::Status PgAuditStore::AppendAudit(const std::vector<AuditEntry>& entries) {
  if (entries.empty()) return absl::OkStatus();
  ArrayBuilder times, tenants, subjects, peers, actions, jobs, targets, codes, messages,
      request_ids, payloads;
  for (const AuditEntry& e : entries) {
    times.Add(absl::ToUnixMicros(e.time));
    tenants.Add(e.tenant_id);
    subjects.Add(e.subject);
    peers.Add(e.peer);
    actions.Add(e.action);
    if (e.job_id.empty()) {
      jobs.AddNull();
    } else {
      jobs.Add(e.job_id);
    }
    targets.Add(e.target);
    codes.Add(e.code);
    messages.Add(e.message);
    request_ids.Add(e.request_id);
    if (e.payload) {
      payloads.Add(*e.payload);
    } else {
      payloads.AddNull();
    }
  }
  Params p;
  p.Add(times.Finish()).Add(tenants.Finish()).Add(subjects.Finish()).Add(peers.Finish());
  p.Add(actions.Finish()).Add(jobs.Finish()).Add(targets.Finish()).Add(codes.Finish());
  p.Add(messages.Finish()).Add(request_ids.Finish()).Add(payloads.Finish());
  ASSIGN_OR_RETURN(auto conn, pool_->Acquire());
  auto r = conn->ExecParams(
      "INSERT INTO audit_log (time, tenant_id, subject, peer, action, job_id, target, code, "
      "message, request_id, payload) SELECT 'epoch'::timestamptz + t * interval '1 microsecond', "
      "te, su, pe, ac, jo, ta, co, me, ri, pa FROM unnest($1::int8[], $2::text[], $3::text[], "
      "$4::text[], $5::text[], $6::uuid[], $7::text[], $8::text[], $9::text[], $10::text[], "
      "$11::text[]) AS x(t, te, su, pe, ac, jo, ta, co, me, ri, pa)",
      p);
  return r.status();
}

absl::StatusOr<std::vector<AuditEntry>> PgAuditStore::ListAudit(const AuditQuery& query) {
  Params p;
  p.Add(query.tenant_id);
  p.Add(query.since == absl::InfinitePast() ? int64_t{0} : absl::ToUnixMicros(query.since));
  p.Add(query.subject).Add(int64_t{query.limit});
  ASSIGN_OR_RETURN(auto conn, pool_->Acquire());
  auto r = conn->ExecParams(
      "SELECT " AUDIT_COLUMNS
      " FROM audit_log WHERE tenant_id = $1 AND time >= 'epoch'::"
      "timestamptz + $2::int8 * interval '1 microsecond' AND ($3::text = '' OR subject = $3) "
      "ORDER BY time DESC LIMIT $4",
      p);
  if (!r.ok()) return r.status();
  if (r->rows() > 0 && r->columns() != kAuditColumnCount) {
    return absl::DataLossError("audit_log row has an unexpected shape");
  }
  std::vector<AuditEntry> out;
  out.reserve(r->rows());
  for (int i = 0; i < r->rows(); ++i) {
    AuditEntry e;
    e.time = absl::FromUnixMicros(r->GetInt(i, kTime));
    e.tenant_id = r->GetString(i, kTenant);
    e.subject = r->GetString(i, kSubject);
    e.peer = r->GetString(i, kPeer);
    e.action = r->GetString(i, kAction);
    e.job_id = r->GetString(i, kJob);
    e.target = r->GetString(i, kTarget);
    e.code = r->GetString(i, kCode);
    e.message = r->GetString(i, kMessage);
    e.request_id = r->GetString(i, kRequestId);
    if (!r->IsNull(i, kPayload)) e.payload = r->GetString(i, kPayload);
    out.push_back(std::move(e));
  }
  return out;
}

absl::StatusOr<int> PgAuditStore::DeleteAuditBefore(absl::Time cutoff, int limit) {
  Params p;
  p.Add(absl::ToUnixMicros(cutoff)).Add(int64_t{limit});
  ASSIGN_OR_RETURN(auto conn, pool_->Acquire());
  auto r = conn->ExecParams(
      "DELETE FROM audit_log WHERE ctid = ANY(ARRAY(SELECT ctid FROM audit_log WHERE time < "
      "'epoch'::timestamptz + $1::int8 * interval '1 microsecond' LIMIT $2))",
      p);
  if (!r.ok()) return r.status();
  return static_cast<int>(r->affected_rows());
}

}  // namespace aijobs::scheduler
