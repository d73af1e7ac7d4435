// SubmitQuota: how many jobs a tenant, and each user within it, may submit — token buckets
// shared by every replica (QuotaStore), checked once per submit batch (one statement for all
// its tenants and users). A job over a limit is refused RESOURCE_EXHAUSTED naming the limit,
// with a retry hint (RetryAfterOf) the scheduler sends as retry-after metadata and the gateway
// as Retry-After.
//
//   SubmitQuota quota(&quota_store, {.user_rate = 50, .user_burst = 500});
//   absl::StatusOr<std::vector<absl::Status>> admitted = quota.Admit(jobs);
#pragma once

#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "scheduler/job_store.h"
#include "scheduler/quota_store.h"

namespace aijobs::scheduler {

struct QuotaOptions {
  // Jobs per second (refill) and burst per tenant, and per user of a tenant (anonymous
  // callers of a tenant share one user bucket). A rate of 0 turns that limit off.
  double tenant_rate = 0;
  double tenant_burst = 0;
  double user_rate = 0;
  double user_burst = 0;
};

class SubmitQuota {
 public:
  SubmitQuota(QuotaStore* store, QuotaOptions options) : store_(store), options_(options) {}
  bool enabled() const { return options_.tenant_rate > 0 || options_.user_rate > 0; }

  // One status per job, in order: OK, or RESOURCE_EXHAUSTED saying which limit and when to
  // retry. The outer status is a failure to reach the buckets.
  absl::StatusOr<std::vector<absl::Status>> Admit(const std::vector<const NewJob*>& jobs);

 private:
  QuotaStore* const store_;
  const QuotaOptions options_;
};

// The retry hint of a refusal from SubmitQuota (nullopt for any other status).
std::optional<absl::Duration> RetryAfterOf(const absl::Status& status);

}  // namespace aijobs::scheduler
