#include "scheduler/submit_quota.h"

#include <algorithm>
#include <cmath>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace aijobs::scheduler {
namespace {

constexpr char kRetryAfterPayload[] = "type.aijobs/retry-after-ms";

absl::Status OverLimit(const std::string& what, double rate, double burst, double left) {
  const double wait_s = rate > 0 ? std::max(0.0, 1.0 - left) / rate : 60;
  const absl::Duration wait = absl::Milliseconds(std::ceil(wait_s * 1000));
  absl::Status s = absl::ResourceExhaustedError(
      absl::StrCat(what, " submit rate limit reached (", rate, " jobs/s, burst ", burst,
                   "); retry in ", absl::FormatDuration(std::max(wait, absl::Milliseconds(1)))));
  s.SetPayload(kRetryAfterPayload, absl::Cord(absl::StrCat(absl::ToInt64Milliseconds(wait))));
  return s;
}

}  // namespace

absl::StatusOr<std::vector<absl::Status>> SubmitQuota::Admit(
    const std::vector<const NewJob*>& jobs) {
  std::vector<absl::Status> out(jobs.size());
  if (!enabled() || jobs.empty()) return out;
  // Count the batch's jobs per bucket, ask once for each bucket.
  std::vector<TokenRequest> requests;
  absl::flat_hash_map<std::string, size_t> index;
  // Each job's tenant and user bucket, as positions in `requests` (SIZE_MAX: no limit).
  std::vector<std::pair<size_t, size_t>> buckets(jobs.size(), {SIZE_MAX, SIZE_MAX});
  auto add = [&](std::string key, double rate, double burst) {
    auto [it, inserted] = index.try_emplace(key, requests.size());
    if (inserted) requests.push_back({std::move(key), 0, rate, burst});
    ++requests[it->second].tokens;
    return it->second;
  };
  for (size_t k = 0; k < jobs.size(); ++k) {
    const NewJob* j = jobs[k];
    if (options_.tenant_rate > 0) {
      buckets[k].first =
          add(absl::StrCat("t:", j->caller.tenant_id), options_.tenant_rate, options_.tenant_burst);
    }
    if (options_.user_rate > 0) {
      buckets[k].second = add(absl::StrCat("u:", j->caller.tenant_id, ":", j->caller.subject),
                              options_.user_rate, options_.user_burst);
    }
  }
  auto grants = store_->TakeTokens(requests);
  if (!grants.ok()) return grants.status();
  std::vector<int64_t> left(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) left[i] = (*grants)[i].granted;
  // Jobs in batch order take the granted tokens; a job needs its user's and its tenant's.
  for (size_t k = 0; k < jobs.size(); ++k) {
    const NewJob* j = jobs[k];
    const auto [t, u] = buckets[k];
    if (u != SIZE_MAX && left[u] <= 0) {
      out[k] = OverLimit("your", options_.user_rate, options_.user_burst, (*grants)[u].left);
      continue;
    }
    if (t != SIZE_MAX && left[t] <= 0) {
      out[k] = OverLimit(absl::StrCat("tenant ", j->caller.tenant_id, "'s"), options_.tenant_rate,
                         options_.tenant_burst, (*grants)[t].left);
      continue;  // (its user token is spent: a small over-count, never an under-count)
    }
    if (u != SIZE_MAX) --left[u];
    if (t != SIZE_MAX) --left[t];
  }
  return out;
}

std::optional<absl::Duration> RetryAfterOf(const absl::Status& status) {
  auto p = status.GetPayload(kRetryAfterPayload);
  int64_t ms = 0;
  if (!p || !absl::SimpleAtoi(std::string(*p), &ms)) return std::nullopt;
  return absl::Milliseconds(ms);
}

}  // namespace aijobs::scheduler
