#include "workers/routing/circuit_breaker.h"

#include <algorithm>
#include <utility>

#include "common/time_util.h"
#include "workers/routing/providers_config.h"

namespace aijobs::worker {

CircuitBreakerOptions BreakerOptionsFrom(const aijobs::v1::CircuitBreaker& proto) {
  CircuitBreakerOptions o;
  o.failure_rate = proto.failure_rate() > 0 ? proto.failure_rate() : kDefaultBreakerFailureRate;
  o.min_requests = proto.min_requests() > 0 ? proto.min_requests() : kDefaultBreakerMinRequests;
  absl::Duration window = FromProtoDuration(proto.window());
  o.window = window > absl::ZeroDuration() ? window : absl::Seconds(kDefaultBreakerWindowS);
  absl::Duration open = FromProtoDuration(proto.open_duration());
  o.open_duration = open > absl::ZeroDuration() ? open : absl::Seconds(kDefaultBreakerOpenS);
  o.disabled = proto.disabled();
  return o;
}

CircuitBreaker::CircuitBreaker(CircuitBreakerOptions options, Clock clock)
    : options_(std::move(options)), clock_(std::move(clock)) {}

CircuitBreaker::Permit CircuitBreaker::Allow() {
  if (options_.disabled) return Permit::kNormal;
  absl::MutexLock lock(&mu_);
  switch (state_) {
    case State::kClosed:
      return Permit::kNormal;
    case State::kOpen:
      if (clock_() - opened_at_ < options_.open_duration) return Permit::kRejected;
      state_ = State::kHalfOpen;
      probe_out_ = true;
      return Permit::kProbe;
    case State::kHalfOpen:
      if (probe_out_) return Permit::kRejected;
      probe_out_ = true;
      return Permit::kProbe;
  }
  return Permit::kRejected;
}

void CircuitBreaker::PruneLocked(absl::Time now) {
  while (!window_.empty() && now - window_.front().at > options_.window) {
    if (window_.front().failed) --failures_in_window_;
    window_.pop_front();
  }
}

void CircuitBreaker::OpenLocked(absl::Time now) {
  state_ = State::kOpen;
  opened_at_ = now;
  probe_out_ = false;
  window_.clear();
  failures_in_window_ = 0;
}

void CircuitBreaker::Record(Permit permit, bool failed) {
  if (options_.disabled || permit == Permit::kRejected) return;
  absl::MutexLock lock(&mu_);
  absl::Time now = clock_();
  if (permit == Permit::kProbe) {
    if (state_ != State::kHalfOpen) return;
    if (failed) {
      OpenLocked(now);
    } else {
      state_ = State::kClosed;
      probe_out_ = false;
      window_.clear();
      failures_in_window_ = 0;
    }
    return;
  }
  if (state_ != State::kClosed) return;
  window_.push_back(Outcome{now, failed});
  if (failed) ++failures_in_window_;
  PruneLocked(now);
  int total = static_cast<int>(window_.size());
  if (failed && total >= options_.min_requests &&
      failures_in_window_ >= options_.failure_rate * total) {
    OpenLocked(now);
  }
}

void CircuitBreaker::Release(Permit permit) {
  if (options_.disabled || permit != Permit::kProbe) return;
  absl::MutexLock lock(&mu_);
  if (state_ == State::kHalfOpen) probe_out_ = false;
}

CircuitBreaker::State CircuitBreaker::state() {
  absl::MutexLock lock(&mu_);
  return state_;
}

absl::Duration CircuitBreaker::TimeUntilProbe() {
  absl::MutexLock lock(&mu_);
  if (state_ != State::kOpen) return absl::ZeroDuration();
  return std::max(absl::ZeroDuration(), opened_at_ + options_.open_duration - clock_());
}

}  // namespace aijobs::worker
