// Authenticator: who is calling, for every RPC of the scheduler. A bearer credential in the
// `authorization` metadata (a JWT checked against --jwt_keys, or an API key checked against
// the keys in memory) becomes an Identity; no credential is the anonymous caller. Nothing
// here waits on the database: the key file and the API keys are reloaded in the background.
//
//   auto auth = Authenticator::Create(options, &api_keys);
//   absl::StatusOr<Identity> who = (*auth)->Authenticate(ctx->client_metadata());
//   if (!who.ok()) ...  // UNAUTHENTICATED, with what was wrong
#pragma once

#include <grpcpp/server_context.h>
#include <grpcpp/support/string_ref.h>

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/auth/jwt.h"
#include "scheduler/api_key_store.h"
#include "scheduler/job_store.h"

namespace aijobs::scheduler {

inline constexpr char kAdminRole[] = "admin";
inline constexpr char kWorkerRole[] = "worker";

struct Identity {
  enum class Kind { kAnonymous, kToken, kApiKey, kCertificate, kAuthOff };
  Kind kind = Kind::kAuthOff;
  std::string tenant_id = "default";
  // The owner of its jobs: the JWT's sub, "apikey:<name>" for an API key, "" for anonymous
  // callers (no authenticated subject is empty, so no credential owns anonymous jobs).
  std::string subject = "anonymous";
  std::vector<std::string> roles;
  std::vector<std::string> job_types;  // workers: the types it may serve (empty: any)
  std::string tier;
  std::string key_id;  // API keys: the key's id (for logs and the audit)
  absl::Time expires_at = absl::InfiniteFuture();  // JWTs: exp

  bool HasRole(std::string_view role) const;
  bool anonymous() const { return kind == Kind::kAnonymous; }
  // With --auth=off every caller may do everything, as one default tenant.
  bool admin() const { return kind == Kind::kAuthOff || HasRole(kAdminRole); }
  bool worker() const { return kind != Kind::kAuthOff && HasRole(kWorkerRole); }
  // Whether this worker credential may serve `type`.
  bool MayServe(std::string_view type) const;
  // How the job store scopes its reads: tenant, and owner unless an admin.
  Caller AsCaller() const;
  // "user u1 of tenant t1", "API key ab12... (name) of tenant t1", "anonymous".
  std::string Describe() const;
};

struct AuthOptions {
  bool enabled = true;
  std::string jwt_keys_file;  // JWKS or PEM; empty: no JWTs are accepted
  auth::JwtCheck jwt_check;
  std::string tenant_claim = "tenant";
  std::string roles_claim = "roles";
  std::string job_types_claim = "job_types";
  std::string tier_claim = "tier";
  std::string default_tenant = "default";
  // Job types anonymous callers may submit and read.
  std::vector<std::string> public_job_types;
  // How often the key file is checked for changes and the API keys are re-read.
  absl::Duration reload_interval = absl::Seconds(1);
  // API keys refreshed longer ago than this are not trusted (UNAVAILABLE): a revocation
  // must not go unseen while the database is unreachable.
  absl::Duration api_keys_max_staleness = absl::Seconds(30);
  // A caller with a TLS client certificate verified against --tls_client_ca (and no bearer
  // credential) is a worker ("cert:<common name>", any job type).
  bool certificate_workers = false;
};

class Authenticator {
 public:
  using Metadata = std::multimap<grpc::string_ref, grpc::string_ref>;

  // Loads the key file (INVALID_ARGUMENT naming the file when it cannot be used) and the
  // API keys (a failure there is logged and retried in the background), and starts the
  // reload thread. `api_keys` may be null (no API keys).
  static absl::StatusOr<std::unique_ptr<Authenticator>> Create(AuthOptions options,
                                                               ApiKeyStore* api_keys);
  ~Authenticator();

  bool enabled() const { return options_.enabled; }
  const AuthOptions& options() const { return options_; }

  // The caller of the call on `ctx`: its bearer credential, else its verified client
  // certificate (certificate_workers), else anonymous.
  absl::StatusOr<Identity> AuthenticateCall(const grpc::ServerContextBase& ctx) const;
  // The caller of a call with `metadata` (bearer credentials only).
  absl::StatusOr<Identity> Authenticate(const Metadata& metadata) const;
  // The caller presenting the `authorization` value `header` ("" = none).
  absl::StatusOr<Identity> AuthenticateHeader(std::string_view header) const;

  bool IsPublic(std::string_view job_type) const;

  // Re-reads the API keys now (after this replica created or revoked one).
  absl::Status RefreshApiKeys();
  // Re-reads the key file if it changed; returns whether it did.
  bool ReloadKeysIfChanged();

 private:
  Authenticator(AuthOptions options, ApiKeyStore* api_keys);
  absl::StatusOr<Identity> FromJwt(std::string_view token) const;
  absl::StatusOr<Identity> VerifyJwtIdentity(std::string_view token, absl::Time now) const;
  void ForgetVerifiedTokens();
  static constexpr size_t kMaxVerifiedTokens = 100000;
  absl::StatusOr<Identity> FromApiKey(std::string_view key) const;
  absl::Status LoadKeyFile();
  void ReloadLoop();

  const AuthOptions options_;
  ApiKeyStore* const api_keys_;
  const absl::flat_hash_set<std::string> public_types_;

  mutable absl::Mutex mu_;
  std::shared_ptr<const auth::JwtKeySet> jwt_keys_ ABSL_GUARDED_BY(mu_);
  std::string key_file_contents_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<const absl::flat_hash_map<std::string, ApiKeyRecord>> keys_by_id_
      ABSL_GUARDED_BY(mu_);
  absl::Time api_keys_loaded_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  // Tokens verified lately (by SHA-256), until their exp or a minute, whichever comes first:
  // clients send the same token with every call, and an RS256/ES256 signature check costs
  // more than the rest of a submit. Emptied when the keys change.
  struct VerifiedToken {
    Identity identity;
    absl::Time valid_until;
  };
  mutable absl::Mutex cache_mu_;
  mutable absl::flat_hash_map<std::string, VerifiedToken> verified_ ABSL_GUARDED_BY(cache_mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread reloader_;
};

}  // namespace aijobs::scheduler
