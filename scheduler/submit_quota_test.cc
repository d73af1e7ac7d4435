#include "scheduler/submit_quota.h"

#include <gtest/gtest.h>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"

namespace aijobs::scheduler {
namespace {

// Buckets in memory that never refill: each starts at its burst.
class FakeQuotaStore : public QuotaStore {
 public:
  absl::StatusOr<std::vector<TokenGrant>> TakeTokens(
      const std::vector<TokenRequest>& requests) override {
    if (fail) return absl::UnavailableError("database down");
    std::vector<TokenGrant> out;
    for (const TokenRequest& r : requests) {
      auto [it, inserted] = tokens.try_emplace(r.key, r.burst);
      int64_t granted = std::min<int64_t>(r.tokens, static_cast<int64_t>(it->second));
      it->second -= static_cast<double>(granted);
      out.push_back({granted, it->second});
      ++calls;
    }
    return out;
  }
  absl::flat_hash_map<std::string, double> tokens;
  int calls = 0;
  bool fail = false;
};

NewJob Job(const std::string& tenant, const std::string& subject) {
  NewJob j;
  j.caller.tenant_id = tenant;
  j.caller.subject = subject;
  return j;
}

int Admitted(const std::vector<absl::Status>& v) {
  int n = 0;
  for (const auto& s : v) n += s.ok();
  return n;
}

TEST(SubmitQuotaTest, UserAndTenantLimitsHoldInOneCallPerBucket) {
  FakeQuotaStore store;
  SubmitQuota quota(&store,
                    {.tenant_rate = 10, .tenant_burst = 5, .user_rate = 1, .user_burst = 3});
  std::vector<NewJob> jobs;
  for (int i = 0; i < 4; ++i) jobs.push_back(Job("t1", "alice"));
  for (int i = 0; i < 4; ++i) jobs.push_back(Job("t1", "bob"));
  jobs.push_back(Job("t2", "alice"));
  std::vector<const NewJob*> ptrs;
  for (const auto& j : jobs) ptrs.push_back(&j);
  auto admitted = quota.Admit(ptrs);
  ASSERT_TRUE(admitted.ok());
  // alice: 3 of 4 (user burst); bob: 2 of 4 (t1's burst of 5 is spent); t2's alice: 1.
  EXPECT_EQ(Admitted(*admitted), 6);
  EXPECT_TRUE((*admitted)[0].ok() && (*admitted)[2].ok());
  EXPECT_EQ((*admitted)[3].code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(absl::StrContains((*admitted)[3].message(), "your submit rate limit"))
      << (*admitted)[3];
  EXPECT_TRUE(absl::StrContains((*admitted)[7].message(), "tenant t1's submit rate limit"))
      << (*admitted)[7];
  EXPECT_TRUE((*admitted)[8].ok());
  EXPECT_EQ(store.calls, 5) << "one request per distinct bucket (t1, t2, 3 users)";
  std::optional<absl::Duration> wait = RetryAfterOf((*admitted)[3]);
  ASSERT_TRUE(wait.has_value());
  EXPECT_EQ(*wait, absl::Seconds(1)) << "an empty bucket at 1 job/s refills one in 1 s";
  EXPECT_FALSE(RetryAfterOf(absl::ResourceExhaustedError("other")).has_value());
}

TEST(SubmitQuotaTest, OffWhenNoRateAndFailsWholeWhenTheStoreIsDown) {
  FakeQuotaStore store;
  SubmitQuota off(&store, {});
  NewJob j = Job("t", "u");
  EXPECT_FALSE(off.enabled());
  EXPECT_TRUE((*off.Admit({&j}))[0].ok());
  EXPECT_EQ(store.calls, 0);
  store.fail = true;
  SubmitQuota on(&store, {.user_rate = 1, .user_burst = 1});
  EXPECT_EQ(on.Admit({&j}).status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace aijobs::scheduler
