// JobTypeRegistry: answers from memory; tells "no such type" (INVALID_ARGUMENT) from "the
// types could not be loaded" (UNAVAILABLE); never waits for the database (issue 9, bug 3).
#include "scheduler/job_type_registry.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "scheduler/testing/fake_job_store.h"
#include "tests/fixtures/process.h"

namespace aijobs::scheduler {
namespace {

// KnownJobTypes answers what the test sets (or blocks until released); counts the reads.
class TypesStore : public FakeJobStore {
 public:
  absl::StatusOr<std::vector<std::string>> KnownJobTypes(absl::Duration) override {
    reads_.fetch_add(1);
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](TypesStore* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu_) { return !s->blocked_; }, this));
    return answer_;
  }
  absl::Status RegisterJobTypes(const std::vector<std::string>& types) override {
    absl::MutexLock lock(&mu_);
    if (!writes_ok_) return absl::UnavailableError("connection to the database refused");
    registered_.push_back(types);
    return absl::OkStatus();
  }
  absl::StatusOr<int> ForgetJobTypes(absl::Duration unseen_for) override {
    absl::MutexLock lock(&mu_);
    if (!writes_ok_) return absl::UnavailableError("connection to the database refused");
    forgotten_for_.push_back(unseen_for);
    return 0;
  }
  void AcceptWrites() {
    absl::MutexLock lock(&mu_);
    writes_ok_ = true;
  }
  std::vector<std::vector<std::string>> Registered() {
    absl::MutexLock lock(&mu_);
    return registered_;
  }
  std::vector<absl::Duration> ForgottenFor() {
    absl::MutexLock lock(&mu_);
    return forgotten_for_;
  }
  void Answer(absl::StatusOr<std::vector<std::string>> a) {
    absl::MutexLock lock(&mu_);
    answer_ = std::move(a);
  }
  void Block(bool b) {
    absl::MutexLock lock(&mu_);
    blocked_ = b;
  }

  std::atomic<int> reads_{0};

 private:
  absl::Mutex mu_;
  bool blocked_ ABSL_GUARDED_BY(mu_) = false;
  bool writes_ok_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::vector<std::string>> registered_ ABSL_GUARDED_BY(mu_);
  std::vector<absl::Duration> forgotten_for_ ABSL_GUARDED_BY(mu_);
  absl::StatusOr<std::vector<std::string>> answer_ ABSL_GUARDED_BY(mu_) =
      std::vector<std::string>{};
};

// A clock the test moves.
struct FakeClock {
  std::function<absl::Time()> Fn() {
    return [this] {
      absl::MutexLock lock(&mu);
      return now;
    };
  }
  void Advance(absl::Duration d) {
    absl::MutexLock lock(&mu);
    now += d;
  }
  absl::Mutex mu;
  absl::Time now ABSL_GUARDED_BY(mu) = absl::FromUnixSeconds(1700000000);
};

JobTypeRegistryOptions Manual(FakeClock& clock) {
  JobTypeRegistryOptions o;
  o.refresh_in_background = false;
  o.max_staleness = absl::Seconds(30);
  o.clock = clock.Fn();
  return o;
}

bool WaitFor(const std::function<bool()>& done) {
  return aijobs::testing::WaitFor(done, absl::Seconds(10), absl::Milliseconds(1));
}

TEST(JobTypeRegistryTest, BuiltInsAreKnownBeforeAnyRead) {
  TypesStore store;
  FakeClock clock;
  JobTypeRegistry types(&store, Manual(clock));
  EXPECT_TRUE(types.IsKnown("chat").ok());
  EXPECT_TRUE(types.IsKnown("embed").ok());
  EXPECT_EQ(store.reads_.load(), 0);
}

TEST(JobTypeRegistryTest, UnknownAfterAFreshReadIsInvalidArgument) {
  TypesStore store;
  store.Answer(std::vector<std::string>{"summarize"});
  FakeClock clock;
  JobTypeRegistry types(&store, Manual(clock));
  ASSERT_TRUE(types.Refresh().ok());
  EXPECT_TRUE(types.IsKnown("summarize").ok());
  absl::Status s = types.IsKnown("translate");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("unknown job type \"translate\""), absl::string_view::npos) << s;
}

TEST(JobTypeRegistryTest, NeverLoadedIsUnavailableNotInvalidArgument) {
  TypesStore store;
  store.Answer(absl::UnavailableError("connection to the database refused"));
  FakeClock clock;
  JobTypeRegistry types(&store, Manual(clock));
  EXPECT_FALSE(types.Refresh().ok());
  absl::Status s = types.IsKnown("summarize");
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_NE(s.message().find("job types could not be loaded"), absl::string_view::npos) << s;
  EXPECT_NE(s.message().find("retry"), absl::string_view::npos) << s;
}

TEST(JobTypeRegistryTest, StaleListWithFailingReadsIsUnavailable) {
  TypesStore store;
  FakeClock clock;
  JobTypeRegistry types(&store, Manual(clock));
  ASSERT_TRUE(types.Refresh().ok());
  store.Answer(absl::UnavailableError("connection to the database refused"));
  // A failed read while the list is recent: still trusted.
  clock.Advance(absl::Seconds(10));
  EXPECT_FALSE(types.Refresh().ok());
  EXPECT_EQ(types.IsKnown("summarize").code(), absl::StatusCode::kInvalidArgument);
  // Past the bound: no longer.
  clock.Advance(absl::Seconds(25));
  EXPECT_FALSE(types.Refresh().ok());
  EXPECT_EQ(types.IsKnown("summarize").code(), absl::StatusCode::kUnavailable);
  // A read that succeeds again restores the answer.
  store.Answer(std::vector<std::string>{"summarize"});
  ASSERT_TRUE(types.Refresh().ok());
  EXPECT_TRUE(types.IsKnown("summarize").ok());
  EXPECT_EQ(types.IsKnown("translate").code(), absl::StatusCode::kInvalidArgument);
}

TEST(JobTypeRegistryTest, LocallyRegisteredTypesAreKnownAtOnce) {
  TypesStore store;  // RegisterJobTypes fails, and nothing was ever read
  FakeClock clock;
  JobTypeRegistry types(&store, Manual(clock));
  types.Register({"summarize"});
  EXPECT_TRUE(types.IsKnown("summarize").ok());
}

// Issue 10, item 6: a type registered once stayed valid forever. Now the list is replaced
// on each read (the store answers only types seen within the ttl), and types this replica's
// connected workers serve stay known until they go away.
TEST(JobTypeRegistryTest, TypesLeaveTheListWhenNoWorkerServesThemAnyMore) {
  TypesStore store;
  store.Answer(std::vector<std::string>{"summarize", "translate"});
  FakeClock clock;
  JobTypeRegistry types(&store, Manual(clock));
  ASSERT_TRUE(types.Refresh().ok());
  EXPECT_TRUE(types.IsKnown("translate").ok());
  types.Serve({"local"});
  EXPECT_TRUE(types.IsKnown("local").ok());

  store.Answer(std::vector<std::string>{"summarize"});  // translate unseen for the ttl
  ASSERT_TRUE(types.Refresh().ok());
  EXPECT_EQ(types.IsKnown("translate").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(types.IsKnown("summarize").ok());
  EXPECT_TRUE(types.IsKnown("local").ok()) << "a connected worker serves it";
  EXPECT_TRUE(types.IsKnown("chat").ok());

  types.Serve({"local"});  // a second worker
  types.Unserve({"local"});
  ASSERT_TRUE(types.Refresh().ok());
  EXPECT_TRUE(types.IsKnown("local").ok()) << "one worker still serves it";
  types.Unserve({"local"});
  ASSERT_TRUE(types.Refresh().ok());
  EXPECT_EQ(types.IsKnown("local").code(), absl::StatusCode::kInvalidArgument);
}

TEST(JobTypeRegistryTest, ServedTypesAreMarkedSeenAndStaleOnesForgottenEachUpkeep) {
  TypesStore store;
  store.AcceptWrites();
  FakeClock clock;
  JobTypeRegistryOptions o = Manual(clock);
  o.type_ttl = absl::Hours(3);
  o.upkeep_interval = absl::Minutes(1);
  JobTypeRegistry types(&store, o);
  types.Serve({"summarize", "translate"});
  ASSERT_TRUE(types.Refresh().ok());
  ASSERT_EQ(store.Registered().size(), 1u);
  std::vector<std::string> seen = store.Registered()[0];
  std::sort(seen.begin(), seen.end());
  EXPECT_EQ(seen, (std::vector<std::string>{"summarize", "translate"}));
  EXPECT_EQ(store.ForgottenFor(), std::vector<absl::Duration>{absl::Hours(3)});

  clock.Advance(absl::Seconds(30));
  ASSERT_TRUE(types.Refresh().ok());
  EXPECT_EQ(store.Registered().size(), 1u) << "not due yet";
  types.Unserve({"translate"});
  clock.Advance(absl::Seconds(31));
  ASSERT_TRUE(types.Refresh().ok());
  ASSERT_EQ(store.Registered().size(), 2u);
  EXPECT_EQ(store.Registered()[1], std::vector<std::string>{"summarize"});
}

TEST(JobTypeRegistryTest, IsKnownDoesNotBlockWhileTheReadHangs) {
  TypesStore store;
  store.Block(true);
  store.Answer(std::vector<std::string>{"summarize"});
  JobTypeRegistryOptions o;
  o.min_refresh_gap = absl::Milliseconds(1);
  JobTypeRegistry types(&store, o);
  ASSERT_TRUE(WaitFor([&] { return store.reads_.load() == 1; }));  // the read hangs
  absl::Notification answered;
  absl::Status s;
  std::thread caller([&] {
    s = types.IsKnown("summarize");
    answered.Notify();
  });
  bool in_time = answered.WaitForNotificationWithTimeout(absl::Seconds(5));
  store.Block(false);
  caller.join();
  ASSERT_TRUE(in_time) << "IsKnown waited for the database";
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  // Once the read comes back, the type is known without anyone waiting for it.
  EXPECT_TRUE(WaitFor([&] { return types.IsKnown("summarize").ok(); }));
}

TEST(JobTypeRegistryTest, UnknownTypeAsksForAReadInTheBackground) {
  TypesStore store;
  JobTypeRegistryOptions o;
  o.refresh_interval = absl::Hours(1);  // only requests cause reads after the first
  o.min_refresh_gap = absl::Milliseconds(1);
  JobTypeRegistry types(&store, o);
  ASSERT_TRUE(WaitFor([&] { return types.IsKnown("chat").ok() && store.reads_.load() == 1; }));
  ASSERT_TRUE(WaitFor(
      [&] { return types.IsKnown("summarize").code() == absl::StatusCode::kInvalidArgument; }));
  // Another replica's worker registers it; asking about it again triggers a read.
  store.Answer(std::vector<std::string>{"summarize"});
  EXPECT_TRUE(WaitFor([&] { return types.IsKnown("summarize").ok(); }));
}

}  // namespace
}  // namespace aijobs::scheduler
