// ApiKeyStore: the API keys internal services authenticate with (only a hash of each secret
// is stored). PgApiKeyStore is the real one; the Authenticator keeps the active keys in memory
// and refreshes them from here, so no request waits on the database to be authenticated.
//
//   std::unique_ptr<ApiKeyStore> keys = std::make_unique<PgApiKeyStore>(&pool);
//   absl::Status s = keys->CreateApiKey(record);
//   absl::StatusOr<std::vector<ApiKeyRecord>> active = keys->ActiveApiKeys();
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace aijobs::scheduler {

struct ApiKeyRecord {
  std::string id;  // the public part of the key ("aij_<id>_<secret>")
  std::string tenant_id;
  std::string name;
  std::string hash;  // hex SHA-256 of the secret
  std::vector<std::string> roles;
  std::vector<std::string> job_types;  // for worker keys: the types it may serve (empty: any)
  std::string created_by;
  absl::Time created_at = absl::InfinitePast();
  std::optional<absl::Time> expires_at;
  std::optional<absl::Time> revoked_at;
};

class ApiKeyStore {
 public:
  virtual ~ApiKeyStore() = default;

  // Stores a new key (created_at is set by the store).
  virtual absl::Status CreateApiKey(const ApiKeyRecord& key) = 0;
  // The tenant's keys, newest first; revoked ones too when asked.
  virtual absl::StatusOr<std::vector<ApiKeyRecord>> ListApiKeys(const std::string& tenant_id,
                                                                bool include_revoked) = 0;
  // Revokes the tenant's key `id` (again is fine: the first revocation time stays). NOT_FOUND
  // when the tenant has no such key.
  virtual absl::StatusOr<ApiKeyRecord> RevokeApiKey(const std::string& tenant_id,
                                                    const std::string& id) = 0;
  // Every key of every tenant that is neither revoked nor expired.
  virtual absl::StatusOr<std::vector<ApiKeyRecord>> ActiveApiKeys() = 0;
};

}  // namespace aijobs::scheduler
