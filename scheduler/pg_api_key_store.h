// PgApiKeyStore: the ApiKeyStore on PostgreSQL (table api_keys, schema migration 5).
//
//   PgApiKeyStore keys(&pool);
//   auto active = keys.ActiveApiKeys();
#pragma once

#include "common/pg/pool.h"
#include "scheduler/api_key_store.h"

namespace aijobs::scheduler {

class PgApiKeyStore : public ApiKeyStore {
 public:
  explicit PgApiKeyStore(pg::Pool* pool) : pool_(pool) {}

  absl::Status CreateApiKey(const ApiKeyRecord& key) override;
  absl::StatusOr<std::vector<ApiKeyRecord>> ListApiKeys(const std::string& tenant_id,
                                                        bool include_revoked) override;
  absl::StatusOr<ApiKeyRecord> RevokeApiKey(const std::string& tenant_id,
                                            const std::string& id) override;
  absl::StatusOr<std::vector<ApiKeyRecord>> ActiveApiKeys() override;

 private:
  pg::Pool* pool_;
};

}  // namespace aijobs::scheduler
