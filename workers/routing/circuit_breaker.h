// A circuit breaker for one deployment: closed until, within a rolling window, at least
// min_requests calls ended and the failed share reached failure_rate; then open (callers skip
// the deployment) for open_duration; then half-open, letting exactly one probe call through:
// its success closes the breaker (with a fresh window), its failure opens it again. Only
// provider failures count (retryable errors: 5xx, 429, timeouts, connection errors); a
// caller's mistake says nothing about the deployment's health.
//
//   CircuitBreaker breaker(BreakerOptionsFrom(deployment.breaker()));
//   CircuitBreaker::Permit p = breaker.Allow();
//   if (p != CircuitBreaker::Permit::kRejected) { ...call...; breaker.Record(p, ok); }
#pragma once

#include <deque>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "aijobs/v1/providers.pb.h"
#include "workers/routing/token_bucket.h"  // Clock

namespace aijobs::worker {

struct CircuitBreakerOptions {
  double failure_rate = 0.5;
  int min_requests = 10;
  absl::Duration window = absl::Seconds(30);
  absl::Duration open_duration = absl::Seconds(15);
  bool disabled = false;
};

// Reads the proto (after ApplyProviderDefaults; zero fields get the documented defaults).
CircuitBreakerOptions BreakerOptionsFrom(const aijobs::v1::CircuitBreaker& proto);

class CircuitBreaker {
 public:
  enum class State { kClosed, kOpen, kHalfOpen };
  // What Allow() granted.
  enum class Permit {
    kRejected,  // open, or half-open with the probe already out: skip this deployment
    kNormal,    // closed: an ordinary call
    kProbe,     // the one call that decides whether a half-open breaker closes
  };

  explicit CircuitBreaker(CircuitBreakerOptions options, Clock clock = RealClock());

  // Asks to make one call. An open breaker whose open_duration has passed turns half-open
  // and grants its caller the probe.
  Permit Allow();

  // Reports how a call granted `permit` ended: `failed` = a provider failure (retryable).
  // Outcomes of ordinary calls that end while the breaker is not closed are ignored (they
  // were started before it opened).
  void Record(Permit permit, bool failed);

  // A granted call that ended without a verdict (cancelled, a caller error, not started):
  // a probe's slot is handed to the next caller.
  void Release(Permit permit);

  State state();
  // While open: time until the breaker lets a probe through (zero otherwise).
  absl::Duration TimeUntilProbe();

 private:
  void PruneLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OpenLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const CircuitBreakerOptions options_;
  const Clock clock_;
  absl::Mutex mu_;
  State state_ ABSL_GUARDED_BY(mu_) = State::kClosed;
  absl::Time opened_at_ ABSL_GUARDED_BY(mu_);
  bool probe_out_ ABSL_GUARDED_BY(mu_) = false;
  struct Outcome {
    absl::Time at;
    bool failed;
  };
  std::deque<Outcome> window_ ABSL_GUARDED_BY(mu_);
  int failures_in_window_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace aijobs::worker
