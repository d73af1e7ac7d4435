// One deployment as the router sees it: its provider, circuit breaker and token buckets
// (requests/min, tokens/min). It is its provider's RateLimitObserver, so the buckets follow
// the x-ratelimit-* headers the provider reports.
//
//   RoutedDeployment d(config, options);  // then d.provider = factory(config, &d)
//   if (d.Wait(estimate) == absl::ZeroDuration() && d.TryTake(estimate)) ... start a call
//   d.Return(estimate);  // the call did not go after all
#pragma once

#include <memory>

#include "absl/time/time.h"
#include "aijobs/v1/providers.pb.h"
#include "workers/llm_provider.h"
#include "workers/routing/circuit_breaker.h"
#include "workers/routing/token_bucket.h"

namespace aijobs::worker {

struct RoutedProviderOptions;

// Thread-safe: the breaker and buckets lock themselves (leaf locks).
class RoutedDeployment : public RateLimitObserver {
 public:
  RoutedDeployment(const aijobs::v1::Deployment& config, const RoutedProviderOptions& options);

  void OnRateLimitHeaders(const RateLimitHeaders& h) override;

  // How long until a call estimated at `estimate` tokens may start (zero: now).
  absl::Duration Wait(double estimate);
  // Takes one request and `estimate` tokens if both buckets have them now.
  bool TryTake(double estimate);
  // Takes them even into debt; returns how long until the debt is paid off.
  absl::Duration Reserve(double estimate);
  // Gives back what TryTake or Reserve took.
  void Return(double estimate);
  // Until when the provider asked (through its headers) to send nothing.
  absl::Time PausedUntil() const;

  const aijobs::v1::Deployment config;
  CircuitBreaker breaker;
  std::unique_ptr<TokenBucket> requests;  // nullptr: unlimited
  std::unique_ptr<TokenBucket> tokens;
  // Last: destroyed first, while the observer (this) and the buckets still exist.
  std::unique_ptr<LlmProvider> provider;
};

}  // namespace aijobs::worker
