// AdminServiceImpl: aijobs.v1.AdminService — API keys of the caller's tenant, for callers with
// the admin role. The keys' database work runs on the executor.
//
//   AdminServiceImpl admin({.keys = &api_keys, .auth = auth.get(), .executor = &executor});
//   builder.RegisterService(&admin);
#pragma once

#include "aijobs/v1/admin_service.grpc.pb.h"
#include "common/executor.h"
#include "scheduler/api_key_store.h"
#include "scheduler/audit_log.h"
#include "scheduler/authenticator.h"

namespace aijobs::scheduler {

struct AdminServiceDeps {
  ApiKeyStore* keys;
  Authenticator* auth;
  Executor* executor;
  AuditStore* audit_store = nullptr;  // ListAuditEvents reads it
  AuditLog* audit = nullptr;          // key changes and refusals are recorded here
};

class AdminServiceImpl final : public v1::AdminService::CallbackService {
 public:
  explicit AdminServiceImpl(AdminServiceDeps deps) : deps_(deps) {}

  grpc::ServerUnaryReactor* CreateApiKey(grpc::CallbackServerContext* ctx,
                                         const v1::CreateApiKeyRequest* request,
                                         v1::CreateApiKeyResponse* response) override;
  grpc::ServerUnaryReactor* ListApiKeys(grpc::CallbackServerContext* ctx,
                                        const v1::ListApiKeysRequest* request,
                                        v1::ListApiKeysResponse* response) override;
  grpc::ServerUnaryReactor* RevokeApiKey(grpc::CallbackServerContext* ctx,
                                         const v1::RevokeApiKeyRequest* request,
                                         v1::ApiKey* response) override;
  grpc::ServerUnaryReactor* ListAuditEvents(grpc::CallbackServerContext* ctx,
                                            const v1::ListAuditEventsRequest* request,
                                            v1::ListAuditEventsResponse* response) override;

 private:
  // The admin calling, or the status to answer (UNAUTHENTICATED, PERMISSION_DENIED).
  absl::StatusOr<Identity> Admin(const grpc::CallbackServerContext& ctx, const char* method) const;
  void Audit(const grpc::CallbackServerContext& ctx, const Identity& admin, const char* action,
             const std::string& key_id, const absl::Status& result) const;

  AdminServiceDeps deps_;
};

}  // namespace aijobs::scheduler
