#include "workers/routing/routed_deployment.h"

#include <algorithm>

#include "common/time_util.h"
#include "workers/routing/providers_config.h"
#include "workers/routing/routed_provider.h"

namespace aijobs::worker {

RoutedDeployment::RoutedDeployment(const aijobs::v1::Deployment& c,
                                   const RoutedProviderOptions& options)
    : config(c), breaker(BreakerOptionsFrom(c.breaker()), options.clock) {
  // Seconds / 60 rather than ToDoubleMinutes: 3000/min x 0.2 s comes out as exactly 10.
  // The deployment's own burst wins over the process-wide default.
  absl::Duration burst = FromProtoDuration(c.rate_limit().burst());
  if (burst <= absl::ZeroDuration()) burst = options.rate_burst;
  double burst_minutes = absl::ToDoubleSeconds(burst) / 60;
  if (c.rate_limit().requests_per_minute() > 0) {
    double rpm = c.rate_limit().requests_per_minute();
    requests =
        std::make_unique<TokenBucket>(rpm, std::max(1.0, rpm * burst_minutes), options.clock);
  }
  if (c.rate_limit().tokens_per_minute() > 0) {
    double tpm = c.rate_limit().tokens_per_minute();
    tokens = std::make_unique<TokenBucket>(tpm, std::max(1.0, tpm * burst_minutes), options.clock);
  }
}

void RoutedDeployment::OnRateLimitHeaders(const RateLimitHeaders& h) {
  if (requests) requests->Observe(h.limit_requests, h.remaining_requests, h.reset_requests);
  if (tokens) tokens->Observe(h.limit_tokens, h.remaining_tokens, h.reset_tokens);
}

absl::Duration RoutedDeployment::Wait(double estimate) {
  absl::Duration w = absl::ZeroDuration();
  if (requests) w = std::max(w, requests->TimeUntil(1));
  if (tokens) w = std::max(w, tokens->TimeUntil(estimate));
  return w;
}

bool RoutedDeployment::TryTake(double estimate) {
  if (requests && !requests->TryTake(1)) return false;
  if (tokens && !tokens->TryTake(estimate)) {
    if (requests) requests->Return(1);
    return false;
  }
  return true;
}

absl::Duration RoutedDeployment::Reserve(double estimate) {
  absl::Duration w = absl::ZeroDuration();
  if (requests) w = std::max(w, requests->Reserve(1));
  if (tokens) w = std::max(w, tokens->Reserve(estimate));
  return w;
}

void RoutedDeployment::Return(double estimate) {
  if (requests) requests->Return(1);
  if (tokens) tokens->Return(estimate);
}

absl::Time RoutedDeployment::PausedUntil() const {
  absl::Time t = absl::InfinitePast();
  if (requests) t = std::max(t, requests->paused_until());
  if (tokens) t = std::max(t, tokens->paused_until());
  return t;
}

}  // namespace aijobs::worker
