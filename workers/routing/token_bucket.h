// A thread-safe token bucket for one deployment's requests/min or tokens/min limit:
// continuous refill at the per-minute rate up to a capacity (default: one minute's worth),
// corrected by the provider's x-ratelimit-* response headers. The clock is injectable so
// tests run on simulated time.
//
//   TokenBucket rpm(600);  // 600 requests per minute, starts full
//   if (rpm.TryTake(1)) Send(); else Retry(rpm.TimeUntil(1));
//   rpm.Observe(/*limit=*/600, /*remaining=*/0, /*reset=*/absl::Seconds(2));  // pauses ~2s
#pragma once

#include <functional>
#include <optional>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace aijobs::worker {

using Clock = std::function<absl::Time()>;

// The process clock, for production use.
inline Clock RealClock() {
  return [] { return absl::Now(); };
}

class TokenBucket {
 public:
  // `per_minute` > 0 is the refill rate. `capacity` is the largest burst; <= 0 means one
  // minute's worth (per_minute). The bucket starts full.
  explicit TokenBucket(double per_minute, double capacity = 0, Clock clock = RealClock());

  // Returns how long until `n` tokens could be taken (zero: now). A request larger than the
  // capacity needs a full bucket (and leaves it in debt), so it is never blocked forever.
  absl::Duration TimeUntil(double n);

  // Takes `n` tokens if TimeUntil(n) is zero; returns whether it did.
  bool TryTake(double n);

  // Takes `n` tokens now, possibly going into debt, and returns how long the caller must wait
  // before using them (zero: at once). Later callers queue behind this one, so a waiting call
  // and the calls after it all keep to the rate. Give the tokens back with Return() if the
  // caller does not use them.
  absl::Duration Reserve(double n);

  // Gives back `n` tokens (a reservation not used, an estimate that was too high); a negative
  // `n` takes more (an estimate that was too low). Never fills above the capacity.
  void Return(double n);

  // Applies a provider's x-ratelimit-{limit,remaining,reset}-* headers (absent: nullopt).
  // `limit` below the configured rate lowers the rate (never raises it); `remaining` caps the
  // tokens available now; when `remaining` is below one token, refill pauses for `reset`, so
  // remaining=0 reset=2s makes every caller wait about 2s.
  void Observe(std::optional<double> limit, std::optional<double> remaining,
               std::optional<absl::Duration> reset);

  // Refill is paused until this time by Observe (past: not paused).
  absl::Time paused_until() const;

  // Tokens available now (negative: in debt). For tests and metrics.
  double available();

  double per_minute() const;
  double capacity() const { return capacity_; }

 private:
  void RefillLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Duration WaitLocked(double n, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const double configured_per_minute_;
  const double capacity_;
  const Clock clock_;
  mutable absl::Mutex mu_;
  double per_second_ ABSL_GUARDED_BY(mu_);
  double tokens_ ABSL_GUARDED_BY(mu_);
  absl::Time last_ ABSL_GUARDED_BY(mu_);
  absl::Time paused_until_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

}  // namespace aijobs::worker
