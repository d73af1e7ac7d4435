#include "scheduler/admin_service.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/auth/api_key.h"
#include "common/time_util.h"
#include "scheduler/unary_call.h"
#include "scheduler/validation.h"
#include "spdlog/spdlog.h"

namespace aijobs::scheduler {
namespace {

void ToProto(const ApiKeyRecord& r, v1::ApiKey* out) {
  out->set_id(r.id);
  out->set_tenant_id(r.tenant_id);
  out->set_name(r.name);
  for (const auto& role : r.roles) out->add_roles(role);
  for (const auto& t : r.job_types) out->add_job_types(t);
  out->set_created_by(r.created_by);
  *out->mutable_created_at() = ToProtoTimestamp(r.created_at);
  if (r.expires_at) *out->mutable_expires_at() = ToProtoTimestamp(*r.expires_at);
  if (r.revoked_at) *out->mutable_revoked_at() = ToProtoTimestamp(*r.revoked_at);
}

bool IsKeyId(const std::string& id) {
  if (id.size() != 16) return false;
  for (char c : id) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<Identity> AdminServiceImpl::Admin(const grpc::CallbackServerContext& ctx,
                                                 const char* method) const {
  absl::StatusOr<Identity> who = deps_.auth->AuthenticateCall(ctx);
  if (who.ok() && who->anonymous()) {
    who = absl::UnauthenticatedError("AdminService needs a credential");
  } else if (who.ok() && (who->worker() || !who->admin())) {
    who = absl::PermissionDeniedError("AdminService needs the admin role");
  }
  if (!who.ok()) {
    RecordRefusal(deps_.audit, ctx, deps_.auth->options().default_tenant,
                  absl::StrCat("AdminService.", method), who.status());
  }
  return who;
}

void AdminServiceImpl::Audit(const grpc::CallbackServerContext& ctx, const Identity& admin,
                             const char* action, const std::string& key_id,
                             const absl::Status& result) const {
  if (deps_.audit == nullptr) return;
  AuditEntry e = NewAuditEntry(ctx, action, admin.tenant_id, admin.subject);
  e.target = key_id;
  e.code = absl::StatusCodeToString(result.code());
  if (!result.ok()) e.message = std::string(result.message());
  deps_.audit->Record(std::move(e));
}

grpc::ServerUnaryReactor* AdminServiceImpl::CreateApiKey(grpc::CallbackServerContext* ctx,
                                                         const v1::CreateApiKeyRequest* request,
                                                         v1::CreateApiKeyResponse* response) {
  auto admin = Admin(*ctx, "CreateApiKey");
  if (!admin.ok()) return FinishNow(ctx, admin.status());
  if (absl::Status s = ValidateCreateApiKey(*request); !s.ok()) return FinishNow(ctx, s);
  if (!request->tenant_id().empty() && request->tenant_id() != admin->tenant_id) {
    return FinishNow(ctx, absl::PermissionDeniedError(absl::StrCat(
                              "an admin manages its own tenant's keys (", admin->tenant_id,
                              "); use an admin credential of the other tenant")));
  }
  ApiKeyRecord rec;
  auth::NewApiKey key = auth::MintApiKey();
  rec.id = key.id;
  rec.hash = key.hash;
  rec.tenant_id = admin->tenant_id;
  rec.name = request->name();
  rec.roles.assign(request->roles().begin(), request->roles().end());
  rec.job_types.assign(request->job_types().begin(), request->job_types().end());
  rec.created_by = admin->subject;
  rec.created_at = absl::Now();
  if (request->has_ttl()) rec.expires_at = absl::Now() + FromProtoDuration(request->ttl());
  return RunOnExecutor(
      ctx, deps_.executor, [this, ctx, who = *admin, rec, response, text = key.text] {
        absl::Status s = deps_.keys->CreateApiKey(rec);
        Audit(*ctx, who, "apikey_create", rec.id, s);
        if (!s.ok()) return s;
        (void)deps_.auth->RefreshApiKeys();  // usable here at once, elsewhere within seconds
        spdlog::info("API key {} ({}) of tenant {} created by {}", rec.id, rec.name, rec.tenant_id,
                     rec.created_by);
        ToProto(rec, response->mutable_api_key());
        response->set_key(text);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* AdminServiceImpl::ListApiKeys(grpc::CallbackServerContext* ctx,
                                                        const v1::ListApiKeysRequest* request,
                                                        v1::ListApiKeysResponse* response) {
  auto admin = Admin(*ctx, "ListApiKeys");
  if (!admin.ok()) return FinishNow(ctx, admin.status());
  return RunOnExecutor(
      ctx, deps_.executor,
      [this, tenant = admin->tenant_id, all = request->include_revoked(), response] {
        auto keys = deps_.keys->ListApiKeys(tenant, all);
        if (!keys.ok()) return keys.status();
        for (const ApiKeyRecord& k : *keys) ToProto(k, response->add_api_keys());
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* AdminServiceImpl::RevokeApiKey(grpc::CallbackServerContext* ctx,
                                                         const v1::RevokeApiKeyRequest* request,
                                                         v1::ApiKey* response) {
  auto admin = Admin(*ctx, "RevokeApiKey");
  if (!admin.ok()) return FinishNow(ctx, admin.status());
  if (!IsKeyId(request->id())) {
    return FinishNow(ctx, absl::InvalidArgumentError(
                              "id must be the 16 hex digits after aij_ (see apikey list)"));
  }
  return RunOnExecutor(ctx, deps_.executor,
                       [this, ctx, who = *admin, tenant = admin->tenant_id, by = admin->subject,
                        id = request->id(), response] {
                         auto key = deps_.keys->RevokeApiKey(tenant, id);
                         Audit(*ctx, who, "apikey_revoke", id, key.status());
                         if (!key.ok()) return key.status();
                         (void)deps_.auth->RefreshApiKeys();
                         spdlog::info("API key {} ({}) of tenant {} revoked by {}", key->id,
                                      key->name, tenant, by);
                         ToProto(*key, response);
                         return absl::OkStatus();
                       });
}

grpc::ServerUnaryReactor* AdminServiceImpl::ListAuditEvents(
    grpc::CallbackServerContext* ctx, const v1::ListAuditEventsRequest* request,
    v1::ListAuditEventsResponse* response) {
  auto admin = Admin(*ctx, "ListAuditEvents");
  if (!admin.ok()) return FinishNow(ctx, admin.status());
  if (request->page_size() < 0 || request->page_size() > 1000) {
    return FinishNow(ctx, absl::InvalidArgumentError("page_size must be between 0 and 1000"));
  }
  if (deps_.audit_store == nullptr) {
    return FinishNow(ctx, absl::UnimplementedError("this scheduler keeps no audit log"));
  }
  AuditQuery q;
  q.tenant_id = admin->tenant_id;
  if (request->has_since()) q.since = FromProtoTimestamp(request->since());
  q.subject = request->subject();
  q.limit = request->page_size() == 0 ? 100 : request->page_size();
  return RunOnExecutor(ctx, deps_.executor, [this, q, response] {
    auto entries = deps_.audit_store->ListAudit(q);
    if (!entries.ok()) return entries.status();
    for (const AuditEntry& e : *entries) {
      v1::AuditEvent* out = response->add_events();
      *out->mutable_time() = ToProtoTimestamp(e.time);
      out->set_tenant_id(e.tenant_id);
      out->set_subject(e.subject);
      out->set_peer(e.peer);
      out->set_action(e.action);
      out->set_job_id(e.job_id);
      out->set_target(e.target);
      out->set_code(e.code);
      out->set_message(e.message);
      out->set_request_id(e.request_id);
      if (e.payload) out->set_payload(*e.payload);
    }
    return absl::OkStatus();
  });
}

}  // namespace aijobs::scheduler
