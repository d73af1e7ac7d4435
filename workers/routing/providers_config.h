// The worker's provider configuration file (`aijobs-worker --providers FILE`): loading it
// (protobuf text format or JSON), validating it with errors that name the bad field by its
// path, filling in the documented defaults in one place, and deriving the response-cache
// adverts the worker sends in its hello.
//
//   absl::StatusOr<v1::ProvidersConfig> config = LoadProvidersConfig("providers.textproto");
//   if (!config.ok()) { std::cerr << config.status().message(); return 2; }
//   hello.cache_adverts = CacheAdverts(*config, {"chat", "embed"});
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "aijobs/v1/providers.pb.h"
#include "aijobs/v1/worker_service.pb.h"

namespace aijobs::worker {

// The defaults of providers.proto, applied by ApplyProviderDefaults.
inline constexpr int kDefaultConnectTimeoutS = 5;
inline constexpr int kDefaultFirstByteTimeoutS = 60;
inline constexpr int kDefaultIdleTimeoutS = 30;
inline constexpr int kDefaultTotalTimeoutS = 600;
inline constexpr int kDefaultMaxRetries = 2;
inline constexpr int kDefaultInitialBackoffMs = 500;
inline constexpr int kDefaultMaxBackoffS = 8;
inline constexpr double kDefaultBreakerFailureRate = 0.5;
inline constexpr int kDefaultBreakerMinRequests = 10;
inline constexpr int kDefaultBreakerWindowS = 30;
inline constexpr int kDefaultBreakerOpenS = 15;

// Reads, parses, validates and completes the file at `path`: `.json` is parsed as JSON
// (protobuf's JSON mapping, unknown fields rejected), anything else (.textproto, .pbtxt,
// .txt) as protobuf text format. INVALID_ARGUMENT names the file and the problem: a syntax
// error by line:column, a validation error by field path (every problem, one per line);
// NOT_FOUND when the file cannot be read. The result has the defaults applied.
absl::StatusOr<aijobs::v1::ProvidersConfig> LoadProvidersConfig(const std::string& path);

// Like LoadProvidersConfig for text already in memory; `source` prefixes error messages.
absl::StatusOr<aijobs::v1::ProvidersConfig> ParseProvidersConfig(const std::string& text, bool json,
                                                                 const std::string& source);

// Checks every field; INVALID_ARGUMENT lists each problem on its own line as
// `<field path>: <what is wrong>`, e.g. `deployments[1].base_url: must start with http:// or
// https:// (got "ftp://x")`. Zero values mean "default" and are accepted.
absl::Status ValidateProvidersConfig(const aijobs::v1::ProvidersConfig& config);

// Replaces every zero/unset value that has a documented default by that default: timeouts
// (connect 5s, first_byte 60s, idle 30s, total 600s), retry (max_retries 2, backoff 0.5s..8s),
// breaker (0.5, 10, 30s, 15s), member weight 1, default_model_group = the first group.
// Idempotent.
void ApplyProviderDefaults(aijobs::v1::ProvidersConfig* config);

// The model group jobs naming no model get: default_model_group, or the first group.
std::string DefaultModelGroup(const aijobs::v1::ProvidersConfig& config);

// One advert per (job type in `job_types` that is "chat" or "embed") x (model group with
// cache_ttl > 0), with model = the group name; the default group is advertised under model ""
// too (jobs that name no model).
std::vector<aijobs::v1::CacheAdvert> CacheAdverts(const aijobs::v1::ProvidersConfig& config,
                                                  const std::vector<std::string>& job_types);

}  // namespace aijobs::worker
