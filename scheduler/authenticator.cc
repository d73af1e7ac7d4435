#include "scheduler/authenticator.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/auth/api_key.h"
#include "spdlog/spdlog.h"

namespace aijobs::scheduler {
namespace {

using google::protobuf::Struct;
using google::protobuf::Value;

constexpr std::string_view kApiKeySubjectPrefix = "apikey:";

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// A claim holding one string or a list of strings ("a b", "a,b" or ["a", "b"]).
absl::StatusOr<std::vector<std::string>> StringList(const Struct& claims, const std::string& name) {
  std::vector<std::string> out;
  auto it = claims.fields().find(name);
  if (it == claims.fields().end()) return out;
  const Value& v = it->second;
  if (v.kind_case() == Value::kStringValue) {
    for (absl::string_view part :
         absl::StrSplit(v.string_value(), absl::ByAnyChar(" ,"), absl::SkipEmpty())) {
      out.emplace_back(part);
    }
    return out;
  }
  if (v.kind_case() != Value::kListValue) {
    return absl::UnauthenticatedError(absl::StrCat("claim ", name, " must be a string or a list"));
  }
  for (const Value& item : v.list_value().values()) {
    if (item.kind_case() != Value::kStringValue) {
      return absl::UnauthenticatedError(absl::StrCat("claim ", name, " must list strings"));
    }
    out.push_back(item.string_value());
  }
  return out;
}

absl::StatusOr<std::string> StringClaim(const Struct& claims, const std::string& name) {
  auto it = claims.fields().find(name);
  if (it == claims.fields().end()) return std::string();
  if (it->second.kind_case() != Value::kStringValue) {
    return absl::UnauthenticatedError(absl::StrCat("claim ", name, " must be a string"));
  }
  return it->second.string_value();
}

}  // namespace

bool Identity::HasRole(std::string_view role) const {
  return std::find(roles.begin(), roles.end(), role) != roles.end();
}

bool Identity::MayServe(std::string_view type) const {
  return job_types.empty() ||
         std::find(job_types.begin(), job_types.end(), type) != job_types.end();
}

Caller Identity::AsCaller() const {
  Caller c;
  c.tenant_id = tenant_id;
  c.subject = subject;
  c.any_owner = admin();
  return c;
}

std::string Identity::Describe() const {
  switch (kind) {
    case Kind::kAnonymous:
      return "anonymous";
    case Kind::kAuthOff:
      return "unauthenticated (--auth=off)";
    case Kind::kApiKey:
      return absl::StrCat("API key ", key_id, " (", subject, ") of tenant ", tenant_id);
    case Kind::kToken:
      return absl::StrCat("user ", subject, " of tenant ", tenant_id);
    case Kind::kCertificate:
      return absl::StrCat("client certificate ", subject);
  }
  return "?";
}

Authenticator::Authenticator(AuthOptions options, ApiKeyStore* api_keys)
    : options_(std::move(options)),
      api_keys_(api_keys),
      public_types_(options_.public_job_types.begin(), options_.public_job_types.end()) {}

absl::StatusOr<std::unique_ptr<Authenticator>> Authenticator::Create(AuthOptions options,
                                                                     ApiKeyStore* api_keys) {
  std::unique_ptr<Authenticator> a(new Authenticator(std::move(options), api_keys));
  if (!a->options_.enabled) return a;
  if (!a->options_.jwt_keys_file.empty()) {
    if (absl::Status s = a->LoadKeyFile(); !s.ok()) return s;
  }
  if (api_keys != nullptr) {
    if (absl::Status s = a->RefreshApiKeys(); !s.ok()) {
      spdlog::warn("reading API keys failed (retrying every {}): {}",
                   absl::FormatDuration(a->options_.reload_interval), s.ToString());
    }
  }
  a->reloader_ = std::thread([raw = a.get()] { raw->ReloadLoop(); });
  return a;
}

Authenticator::~Authenticator() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (reloader_.joinable()) reloader_.join();
}

void Authenticator::ReloadLoop() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(&stop_), options_.reload_interval);
      if (stop_) return;
    }
    ReloadKeysIfChanged();
    if (api_keys_ != nullptr) {
      if (absl::Status s = RefreshApiKeys(); !s.ok()) {
        spdlog::warn("refreshing API keys failed: {}", s.ToString());
      }
    }
  }
}

absl::Status Authenticator::LoadKeyFile() {
  auto text = ReadFile(options_.jwt_keys_file);
  if (!text.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--jwt_keys: ", text.status().message()));
  }
  {
    absl::MutexLock lock(&mu_);
    if (jwt_keys_ != nullptr && *text == key_file_contents_) return absl::OkStatus();
  }
  auto keys = auth::ParseJwtKeys(*text);
  if (!keys.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--jwt_keys ", options_.jwt_keys_file, ": ", keys.status().message()));
  }
  for (const std::string& why : keys->skipped) {
    spdlog::warn("--jwt_keys {}: skipped {}", options_.jwt_keys_file, why);
  }
  std::vector<std::string> kids;
  for (const auth::JwtKey& k : keys->keys) {
    kids.push_back(absl::StrCat(k.kid.empty() ? "(no kid)" : k.kid, "/", auth::JwtAlgName(k.alg)));
  }
  spdlog::info("JWT keys from {}: {}", options_.jwt_keys_file, absl::StrJoin(kids, ", "));
  {
    absl::MutexLock lock(&mu_);
    jwt_keys_ = std::make_shared<const auth::JwtKeySet>(*std::move(keys));
    key_file_contents_ = *std::move(text);
  }
  ForgetVerifiedTokens();  // a key that left the file must stop working at once
  return absl::OkStatus();
}

void Authenticator::ForgetVerifiedTokens() {
  absl::MutexLock lock(&cache_mu_);
  verified_.clear();
}

bool Authenticator::ReloadKeysIfChanged() {
  if (options_.jwt_keys_file.empty()) return false;
  auto text = ReadFile(options_.jwt_keys_file);
  {
    absl::MutexLock lock(&mu_);
    if (text.ok() && *text == key_file_contents_) return false;
  }
  // A half-written or broken file keeps the keys in use: rotation never fails requests.
  if (absl::Status s = LoadKeyFile(); !s.ok()) {
    spdlog::error("keeping the current JWT keys: {}", s.ToString());
    return false;
  }
  return true;
}

absl::Status Authenticator::RefreshApiKeys() {
  if (api_keys_ == nullptr) return absl::OkStatus();
  auto active = api_keys_->ActiveApiKeys();
  if (!active.ok()) return active.status();
  auto map = std::make_shared<absl::flat_hash_map<std::string, ApiKeyRecord>>();
  for (ApiKeyRecord& k : *active) map->emplace(k.id, std::move(k));
  absl::MutexLock lock(&mu_);
  keys_by_id_ = std::move(map);
  api_keys_loaded_at_ = absl::Now();
  return absl::OkStatus();
}

bool Authenticator::IsPublic(std::string_view job_type) const {
  return public_types_.contains(absl::string_view(job_type.data(), job_type.size()));
}

absl::StatusOr<Identity> Authenticator::AuthenticateCall(const grpc::ServerContextBase& ctx) const {
  const Metadata& metadata = ctx.client_metadata();
  if (options_.enabled && options_.certificate_workers &&
      metadata.find("authorization") == metadata.end()) {
    std::shared_ptr<const grpc::AuthContext> auth = ctx.auth_context();
    if (auth != nullptr && auth->IsPeerAuthenticated()) {
      Identity id;
      id.kind = Identity::Kind::kCertificate;
      id.tenant_id = options_.default_tenant;
      std::vector<grpc::string_ref> cn = auth->FindPropertyValues("x509_common_name");
      id.subject = absl::StrCat(
          "cert:", cn.empty() ? std::string("?") : std::string(cn[0].data(), cn[0].size()));
      id.roles = {kWorkerRole};
      return id;
    }
  }
  return Authenticate(metadata);
}

absl::StatusOr<Identity> Authenticator::Authenticate(const Metadata& metadata) const {
  auto it = metadata.find("authorization");
  if (it == metadata.end()) return AuthenticateHeader("");
  if (metadata.count("authorization") > 1) {
    return absl::UnauthenticatedError("more than one authorization header");
  }
  return AuthenticateHeader(std::string_view(it->second.data(), it->second.size()));
}

absl::StatusOr<Identity> Authenticator::AuthenticateHeader(std::string_view header) const {
  Identity id;
  if (!options_.enabled) return id;  // kAuthOff
  if (header.empty()) {
    id.kind = Identity::Kind::kAnonymous;
    id.tenant_id = options_.default_tenant;
    id.subject = "";
    return id;
  }
  absl::string_view h(header.data(), header.size());
  if (!absl::StartsWithIgnoreCase(h, "bearer ")) {
    return absl::UnauthenticatedError("the authorization header must be \"Bearer <token>\"");
  }
  absl::string_view credential = absl::StripAsciiWhitespace(h.substr(7));
  std::string_view cred(credential.data(), credential.size());
  if (auth::IsApiKey(cred)) return FromApiKey(cred);
  return FromJwt(cred);
}

absl::StatusOr<Identity> Authenticator::FromJwt(std::string_view token) const {
  const std::string digest = auth::HashApiKeySecret(token);  // SHA-256, hex
  const absl::Time now = absl::Now();
  {
    absl::MutexLock lock(&cache_mu_);
    auto it = verified_.find(digest);
    if (it != verified_.end()) {
      if (now < it->second.valid_until) return it->second.identity;
      verified_.erase(it);
    }
  }
  absl::StatusOr<Identity> id = VerifyJwtIdentity(token, now);
  if (!id.ok()) return id;
  absl::MutexLock lock(&cache_mu_);
  if (verified_.size() >= kMaxVerifiedTokens) verified_.clear();  // bounded; refilled on use
  verified_[digest] = {*id, std::min(now + absl::Minutes(1), id->expires_at)};
  return id;
}

absl::StatusOr<Identity> Authenticator::VerifyJwtIdentity(std::string_view token,
                                                          absl::Time now) const {
  std::shared_ptr<const auth::JwtKeySet> keys;
  {
    absl::MutexLock lock(&mu_);
    keys = jwt_keys_;
  }
  if (keys == nullptr) {
    return absl::UnauthenticatedError(
        "this scheduler accepts no JWTs (no --jwt_keys); use an API key");
  }
  auto claims = auth::VerifyJwt(token, *keys, options_.jwt_check, now);
  if (!claims.ok()) return claims.status();
  Identity id;
  id.kind = Identity::Kind::kToken;
  id.subject = claims->fields().at("sub").string_value();
  // exp passed VerifyJwt: finite and not in the past; past year 9999 is as good as never.
  const double exp = claims->fields().at("exp").number_value();
  id.expires_at = exp >= 253402300799.0 ? absl::InfiniteFuture()
                                        : absl::FromUnixSeconds(static_cast<int64_t>(exp));
  if (absl::StartsWith(id.subject, absl::string_view(kApiKeySubjectPrefix.data(),
                                                     kApiKeySubjectPrefix.size()))) {
    return absl::UnauthenticatedError("sub must not start with \"apikey:\"");
  }
  auto tenant = StringClaim(*claims, options_.tenant_claim);
  if (!tenant.ok()) return tenant.status();
  id.tenant_id = tenant->empty() ? options_.default_tenant : *tenant;
  auto roles = StringList(*claims, options_.roles_claim);
  if (!roles.ok()) return roles.status();
  id.roles = *std::move(roles);
  auto types = StringList(*claims, options_.job_types_claim);
  if (!types.ok()) return types.status();
  id.job_types = *std::move(types);
  auto tier = StringClaim(*claims, options_.tier_claim);
  if (!tier.ok()) return tier.status();
  id.tier = *std::move(tier);
  return id;
}

absl::StatusOr<Identity> Authenticator::FromApiKey(std::string_view key) const {
  auto parts = auth::ParseApiKey(key);
  if (!parts.ok()) return parts.status();
  std::shared_ptr<const absl::flat_hash_map<std::string, ApiKeyRecord>> keys;
  absl::Time loaded_at;
  {
    absl::MutexLock lock(&mu_);
    keys = keys_by_id_;
    loaded_at = api_keys_loaded_at_;
  }
  if (keys == nullptr || absl::Now() - loaded_at > options_.api_keys_max_staleness) {
    return absl::UnavailableError(
        "API keys cannot be checked now (the key list could not be read from the database); "
        "retry later");
  }
  auto it = keys->find(parts->id);
  // One answer for unknown, revoked and wrong-secret keys: which of them it was is no
  // business of whoever holds the key.
  if (it == keys->end() || !auth::ApiKeyHashMatches(it->second.hash, parts->secret)) {
    return absl::UnauthenticatedError("unknown or revoked API key");
  }
  const ApiKeyRecord& rec = it->second;
  if (rec.expires_at && absl::Now() >= *rec.expires_at) {
    return absl::UnauthenticatedError("API key expired");
  }
  Identity id;
  id.kind = Identity::Kind::kApiKey;
  id.tenant_id = rec.tenant_id;
  id.subject = absl::StrCat(std::string(kApiKeySubjectPrefix), rec.name);
  id.roles = rec.roles;
  id.job_types = rec.job_types;
  id.key_id = rec.id;
  return id;
}

}  // namespace aijobs::scheduler
