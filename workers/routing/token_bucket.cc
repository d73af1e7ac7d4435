#include "workers/routing/token_bucket.h"

#include <algorithm>
#include <utility>

namespace aijobs::worker {
namespace {
// Floating-point slack: a bucket refilled to 0.9999999999 of a token counts as one.
constexpr double kEpsilon = 1e-9;
}  // namespace

TokenBucket::TokenBucket(double per_minute, double capacity, Clock clock)
    : configured_per_minute_(per_minute),
      capacity_(capacity > 0 ? capacity : per_minute),
      clock_(std::move(clock)),
      per_second_(per_minute / 60.0),
      tokens_(capacity_),
      last_(clock_()) {}

void TokenBucket::RefillLocked(absl::Time now) {
  absl::Time from = std::max(last_, paused_until_);
  if (now > from) {
    tokens_ = std::min(capacity_, tokens_ + per_second_ * absl::ToDoubleSeconds(now - from));
  }
  last_ = std::max(last_, now);
}

absl::Duration TokenBucket::WaitLocked(double n, absl::Time now) {
  double need = std::min(n, capacity_) - tokens_;
  absl::Duration pause = paused_until_ > now ? paused_until_ - now : absl::ZeroDuration();
  if (need <= kEpsilon) return pause;
  // Round up to whole microseconds so that waking at now + wait finds the tokens there.
  return pause + absl::Ceil(absl::Seconds(need / per_second_), absl::Microseconds(1));
}

absl::Duration TokenBucket::TimeUntil(double n) {
  absl::MutexLock lock(&mu_);
  absl::Time now = clock_();
  RefillLocked(now);
  return WaitLocked(n, now);
}

bool TokenBucket::TryTake(double n) {
  absl::MutexLock lock(&mu_);
  absl::Time now = clock_();
  RefillLocked(now);
  if (WaitLocked(n, now) > absl::ZeroDuration()) return false;
  tokens_ -= n;
  return true;
}

absl::Duration TokenBucket::Reserve(double n) {
  absl::MutexLock lock(&mu_);
  absl::Time now = clock_();
  RefillLocked(now);
  absl::Duration wait = WaitLocked(n, now);
  tokens_ -= n;
  return wait;
}

void TokenBucket::Return(double n) {
  absl::MutexLock lock(&mu_);
  RefillLocked(clock_());
  tokens_ = std::min(capacity_, tokens_ + n);
}

void TokenBucket::Observe(std::optional<double> limit, std::optional<double> remaining,
                          std::optional<absl::Duration> reset) {
  absl::MutexLock lock(&mu_);
  absl::Time now = clock_();
  RefillLocked(now);
  if (limit.has_value() && *limit > 0) {
    per_second_ = std::min(configured_per_minute_, *limit) / 60.0;
  }
  if (remaining.has_value() && *remaining >= 0) {
    // Only ever lower: calls we started after the provider counted are not in its figure.
    tokens_ = std::min(tokens_, *remaining);
    if (*remaining < 1 && reset.has_value() && *reset > absl::ZeroDuration()) {
      paused_until_ = std::max(paused_until_, now + *reset);
    }
  }
}

absl::Time TokenBucket::paused_until() const {
  absl::MutexLock lock(&mu_);
  return paused_until_;
}

double TokenBucket::available() {
  absl::MutexLock lock(&mu_);
  RefillLocked(clock_());
  return tokens_;
}

double TokenBucket::per_minute() const {
  absl::MutexLock lock(&mu_);
  return per_second_ * 60.0;
}

}  // namespace aijobs::worker
