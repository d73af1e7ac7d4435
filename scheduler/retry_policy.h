// How long a job waits before its next attempt after a retryable failure.
//
//   absl::BitGen gen;
//   absl::Duration d = RetryDelay(/*attempt=*/2, policy, /*retry_after=*/absl::ZeroDuration(),
//   gen);
#pragma once

#include "absl/random/random.h"
#include "absl/time/time.h"

namespace aijobs::scheduler {

struct RetryPolicy {
  absl::Duration base = absl::Seconds(1);
  absl::Duration max = absl::Seconds(60);
};

// Exponential backoff with jitter: base * 2^(attempt-1), capped at policy.max, then drawn
// uniformly from [half, full] of that ("equal jitter", so retries of jobs that failed
// together spread out but never come sooner than half the backoff). A provider's
// `retry_after` is a floor: the delay is never shorter than it.
absl::Duration RetryDelay(int attempt, const RetryPolicy& policy, absl::Duration retry_after,
                          absl::BitGen& gen);

}  // namespace aijobs::scheduler
