// Input checks for JobService requests. Each returns INVALID_ARGUMENT with a message that
// says what was wrong, or OK.
//
//   absl::Status s = ValidateSubmit(request, limits, [&](auto& t) { return types.IsKnown(t); });
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "aijobs/v1/admin_service.pb.h"
#include "aijobs/v1/job_service.pb.h"
#include "aijobs/v1/worker_service.pb.h"

namespace aijobs::scheduler {

// The documented ranges (README, "Limits").
inline constexpr int32_t kMinPriority = -1000;
inline constexpr int32_t kMaxPriority = 1000;
inline constexpr int kMaxWorkerJobTypes = 64;
inline constexpr int kMaxWorkerSlots = 4096;

struct SubmitLimits {
  int64_t max_input_bytes = 1 << 20;
  int32_t max_attempts_cap = 100;
};

absl::Status ValidateSubmit(const v1::SubmitJobRequest& request, const SubmitLimits& limits,
                            const std::function<bool(const std::string&)>& is_known_type);

// A pre-composed cache answer: a valid type name (any, registered or not), input within
// max_input_bytes, a result, ttl from 1 s to 30 days.
absl::Status ValidatePutCachedResult(const v1::PutCachedResultRequest& request,
                                     const SubmitLimits& limits);

// A worker's hello: 1-64 valid job type names, 1-4096 slots, a worker_id of at most 128
// bytes of text.
absl::Status ValidateWorkerHello(const v1::WorkerHello& hello);

// A new API key: a name of 1-64 [A-Za-z0-9._-], at most 16 roles of 1-32 [a-z0-9_-] (the
// worker role alone), at most 64 valid job type names (worker keys only), a ttl of none or
// 1 minute to 10 years.
absl::Status ValidateCreateApiKey(const v1::CreateApiKeyRequest& request);

// Checks a job id is a UUID.
absl::Status ValidateJobId(const std::string& job_id);

}  // namespace aijobs::scheduler
