#include "scheduler/retry_policy.h"

#include <algorithm>

namespace aijobs::scheduler {

absl::Duration RetryDelay(int attempt, const RetryPolicy& policy, absl::Duration retry_after,
                          absl::BitGen& gen) {
  absl::Duration backoff = policy.base;
  for (int i = 1; i < attempt && backoff < policy.max; ++i) backoff *= 2;
  backoff = std::min(backoff, policy.max);
  double fraction = absl::Uniform<double>(absl::IntervalClosed, gen, 0.5, 1.0);
  absl::Duration delay = backoff * fraction;
  return std::max(delay, retry_after);
}

}  // namespace aijobs::scheduler
