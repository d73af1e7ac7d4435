#include "scheduler/pg_api_key_store.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/pg/array.h"
#include "common/status_macros.h"

namespace aijobs::scheduler {
namespace {

using pg::ArrayBuilder;
using pg::Params;
using pg::Result;

// Columns read by every statement, in this order (see RowToKey).
#define API_KEY_COLUMNS                                                                       \
  "id, tenant_id, name, hash, array_to_string(roles, ','), array_to_string(job_types, ','), " \
  "created_by, aijobs_us(created_at), aijobs_us(expires_at), aijobs_us(revoked_at)"
enum ApiKeyColumn {
  kId,
  kTenant,
  kName,
  kHash,
  kRoles,
  kTypes,
  kCreatedBy,
  kCreated,
  kExpires,
  kRevoked,
  kApiKeyColumnCount
};

std::vector<std::string> SplitList(std::string_view s) {
  if (s.empty()) return {};
  return absl::StrSplit(absl::string_view(s.data(), s.size()), ',');
}

absl::Time FromMicros(int64_t us) { return absl::FromUnixMicros(us); }

absl::StatusOr<ApiKeyRecord> RowToKey(const Result& r, int row) {
  if (r.columns() != kApiKeyColumnCount) {
    return absl::DataLossError("api_keys row has an unexpected shape");
  }
  ApiKeyRecord k;
  k.id = r.GetString(row, kId);
  k.tenant_id = r.GetString(row, kTenant);
  k.name = r.GetString(row, kName);
  k.hash = r.GetString(row, kHash);
  k.roles = SplitList(r.Get(row, kRoles));
  k.job_types = SplitList(r.Get(row, kTypes));
  k.created_by = r.GetString(row, kCreatedBy);
  k.created_at = FromMicros(r.GetInt(row, kCreated));
  if (!r.IsNull(row, kExpires)) k.expires_at = FromMicros(r.GetInt(row, kExpires));
  if (!r.IsNull(row, kRevoked)) k.revoked_at = FromMicros(r.GetInt(row, kRevoked));
  return k;
}

absl::StatusOr<std::vector<ApiKeyRecord>> RowsToKeys(const Result& r) {
  std::vector<ApiKeyRecord> out;
  out.reserve(r.rows());
  for (int i = 0; i < r.rows(); ++i) {
    auto k = RowToKey(r, i);
    if (!k.ok()) return k.status();
    out.push_back(*std::move(k));
  }
  return out;
}

std::string TextArray(const std::vector<std::string>& items) {
  ArrayBuilder a;
  for (const auto& s : items) a.Add(s);
  return a.Finish();
}

}  // namespace

absl::Status PgApiKeyStore::CreateApiKey(const ApiKeyRecord& key) {
  Params p;
  p.Add(key.id).Add(key.tenant_id).Add(key.name).Add(key.hash).Add(TextArray(key.roles));
  p.Add(TextArray(key.job_types)).Add(key.created_by);
  if (key.expires_at) {
    p.Add(absl::ToUnixMicros(*key.expires_at));
  } else {
    p.AddNull();
  }
  ASSIGN_OR_RETURN(auto conn, pool_->Acquire());
  auto r = conn->ExecParams(
      "INSERT INTO api_keys (id, tenant_id, name, hash, roles, job_types, created_by, "
      "expires_at) VALUES ($1, $2, $3, $4, $5::text[], $6::text[], $7, "
      "'epoch'::timestamptz + $8::int8 * interval '1 microsecond')",
      p);
  return r.status();
}

absl::StatusOr<std::vector<ApiKeyRecord>> PgApiKeyStore::ListApiKeys(const std::string& tenant_id,
                                                                     bool include_revoked) {
  Params p;
  p.Add(tenant_id).Add(int64_t{include_revoked ? 1 : 0});
  ASSIGN_OR_RETURN(auto conn, pool_->Acquire());
  auto r = conn->ExecParams("SELECT " API_KEY_COLUMNS
                            " FROM api_keys WHERE tenant_id = $1 AND ($2::int = 1 OR "
                            "revoked_at IS NULL) ORDER BY created_at DESC, id",
                            p);
  if (!r.ok()) return r.status();
  return RowsToKeys(*r);
}

absl::StatusOr<ApiKeyRecord> PgApiKeyStore::RevokeApiKey(const std::string& tenant_id,
                                                         const std::string& id) {
  Params p;
  p.Add(tenant_id).Add(id);
  ASSIGN_OR_RETURN(auto conn, pool_->Acquire());
  auto r = conn->ExecParams(
      "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) "
      "WHERE tenant_id = $1 AND id = $2 RETURNING " API_KEY_COLUMNS,
      p);
  if (!r.ok()) return r.status();
  if (r->rows() == 0) return absl::NotFoundError(absl::StrCat("API key ", id, " not found"));
  return RowToKey(*r, 0);
}

absl::StatusOr<std::vector<ApiKeyRecord>> PgApiKeyStore::ActiveApiKeys() {
  ASSIGN_OR_RETURN(auto conn, pool_->Acquire());
  auto r = conn->Exec("SELECT " API_KEY_COLUMNS
                      " FROM api_keys WHERE revoked_at IS NULL AND (expires_at IS NULL OR "
                      "expires_at > now())");
  if (!r.ok()) return r.status();
  return RowsToKeys(*r);
}

}  // namespace aijobs::scheduler
