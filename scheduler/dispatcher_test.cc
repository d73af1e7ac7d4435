// Dispatcher with a fake JobStore and fake worker sessions (real EventHub and
// AttemptFinisher): claims sized to free slots, no claims for full sessions, requeue of a
// lost session's attempts, prompt wake-ups.
#include "scheduler/dispatcher.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/time_util.h"
#include "common/uuid.h"
#include "scheduler/testing/fake_job_store.h"
#include "scheduler/testing/recording_sink.h"

namespace aijobs::scheduler {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;

constexpr absl::Duration kWait = absl::Seconds(10);

struct ClaimCall {
  std::vector<std::string> types;
  int limit = 0;
  std::string owner;
  absl::Duration lease;
};

// An in-memory JobStore with just what the dispatcher and the finisher use (claims, deltas,
// finished attempts); every such call is recorded and tests wait on the records with a
// deadline. The other calls answer UNIMPLEMENTED.
class RecordingJobStore : public FakeJobStore {
 public:
  // Queues a job; ClaimJobs hands queued jobs out in insertion order.
  v1::Job AddQueued(const std::string& type) {
    v1::Job job;
    job.set_id(NewUuid());
    job.set_type(type);
    job.set_state(v1::QUEUED);
    job.set_max_attempts(3);
    job.set_last_seq(1);
    (*job.mutable_input()->mutable_fields())["prompt"].set_string_value("p-" + job.id());
    absl::MutexLock lock(&mu_);
    queued_.push_back(job);
    return job;
  }

  // Blocks until pred() holds (evaluated under the store's lock) or the deadline passes.
  bool WaitUntil(const std::function<bool()>& pred, absl::Duration timeout = kWait) {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(absl::Condition(&pred), timeout);
  }

  std::vector<ClaimCall> claims() {
    absl::MutexLock lock(&mu_);
    return claims_;
  }
  std::vector<AttemptOutcome> finished() {
    absl::MutexLock lock(&mu_);
    return finished_;
  }
  std::vector<DeltaRow> deltas() {
    absl::MutexLock lock(&mu_);
    return deltas_;
  }
  size_t claim_count() {
    absl::MutexLock lock(&mu_);
    return claims_.size();
  }
  // Lock-free accessors for WaitUntil predicates (which run with mu_ held).
  size_t claim_count_locked() const ABSL_NO_THREAD_SAFETY_ANALYSIS { return claims_.size(); }
  size_t finished_count_locked() const ABSL_NO_THREAD_SAFETY_ANALYSIS { return finished_.size(); }
  std::vector<ClaimCall> claims_locked() const ABSL_NO_THREAD_SAFETY_ANALYSIS { return claims_; }

  absl::StatusOr<std::vector<ClaimedJob>> ClaimJobs(const std::vector<std::string>& types,
                                                    int limit, const std::string& lease_owner,
                                                    absl::Duration lease,
                                                    absl::Duration default_timeout) override {
    absl::MutexLock lock(&mu_);
    claims_.push_back({types, limit, lease_owner, lease});
    std::vector<ClaimedJob> out;
    for (auto it = queued_.begin(); it != queued_.end() && static_cast<int>(out.size()) < limit;) {
      if (std::find(types.begin(), types.end(), it->type()) == types.end()) {
        ++it;
        continue;
      }
      ClaimedJob c;
      c.job = *it;
      c.job.set_state(v1::RUNNING);
      c.job.set_attempt(c.job.attempt() + 1);
      c.job.set_last_seq(c.job.last_seq() + 1);
      c.deadline = absl::Now() + default_timeout;
      out.push_back(std::move(c));
      it = queued_.erase(it);
    }
    return out;
  }

  absl::Status AppendDeltas(const std::vector<DeltaRow>& rows) override {
    absl::MutexLock lock(&mu_);
    deltas_.insert(deltas_.end(), rows.begin(), rows.end());
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<v1::Job>> FinishAttempts(
      const std::vector<AttemptOutcome>& outcomes) override {
    absl::MutexLock lock(&mu_);
    std::vector<v1::Job> out;
    for (const AttemptOutcome& o : outcomes) {
      finished_.push_back(o);
      v1::Job& job = out.emplace_back();
      job.set_id(o.job_id);
      job.set_attempt(o.attempt);
      job.set_state(o.kind == AttemptOutcome::Kind::kSucceeded ? v1::SUCCEEDED : v1::QUEUED);
      *job.mutable_error() = o.error;
      job.set_last_seq(o.last_seq + 1);
      *job.mutable_run_after() = ToProtoTimestamp(absl::Now());
    }
    return out;
  }

 private:
  absl::Mutex mu_;
  std::vector<v1::Job> queued_ ABSL_GUARDED_BY(mu_);
  std::vector<ClaimCall> claims_ ABSL_GUARDED_BY(mu_);
  std::vector<AttemptOutcome> finished_ ABSL_GUARDED_BY(mu_);
  std::vector<DeltaRow> deltas_ ABSL_GUARDED_BY(mu_);
};

// Records what the dispatcher sends to the worker.
class FakeSession : public WorkerSession {
 public:
  FakeSession(std::string id, std::vector<std::string> types, int slots)
      : WorkerSession(id, "worker-" + id, std::move(types), slots) {}

  void SendCancel(const std::string& job_id, int32_t, const std::string&) override {
    absl::MutexLock lock(&mu_);
    cancels_.push_back(job_id);
  }
  void SendDrain() override {}
  void Abort(const std::string&) override {}

  bool WaitForAssignments(size_t n, absl::Duration timeout = kWait) {
    absl::MutexLock lock(&mu_);
    auto enough = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return assignments_.size() >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), timeout);
  }
  std::vector<v1::Assignment> assignments() {
    absl::MutexLock lock(&mu_);
    return assignments_;
  }

 protected:
  void SendAssignments(std::vector<v1::Assignment> assignments) override {
    absl::MutexLock lock(&mu_);
    for (auto& a : assignments) assignments_.push_back(std::move(a));
  }

 private:
  absl::Mutex mu_;
  std::vector<v1::Assignment> assignments_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> cancels_ ABSL_GUARDED_BY(mu_);
};

class DispatcherTest : public ::testing::Test {
 protected:
  // Long poll interval: only explicit wake-ups make the dispatcher claim within a test.
  void Start(absl::Duration poll_interval = absl::Hours(1), int max_claim_batch = 256) {
    finisher_ = std::make_unique<AttemptFinisher>(&store_, &hub_, [this](const v1::Job& job) {
      absl::MutexLock lock(&requeued_mu_);
      requeued_.push_back(job.id());
    });
    DispatcherOptions options;
    options.lease = absl::Seconds(17);
    options.poll_interval = poll_interval;
    options.default_timeout = absl::Minutes(3);
    options.max_claim_batch = max_claim_batch;
    dispatcher_ = std::make_unique<Dispatcher>(&store_, &hub_, finisher_.get(), options);
  }

  void TearDown() override {
    if (dispatcher_) dispatcher_->Stop();
    dispatcher_.reset();
    finisher_.reset();
  }

  std::vector<std::string> requeued() {
    absl::MutexLock lock(&requeued_mu_);
    return requeued_;
  }

  // Waits until the store has seen `n` claims in total.
  bool WaitForClaims(size_t n) {
    return store_.WaitUntil([&] { return store_.claim_count_locked() >= n; });
  }

  RecordingJobStore store_;
  EventHub hub_;
  std::unique_ptr<AttemptFinisher> finisher_;
  std::unique_ptr<Dispatcher> dispatcher_;
  absl::Mutex requeued_mu_;
  std::vector<std::string> requeued_ ABSL_GUARDED_BY(requeued_mu_);
};

TEST_F(DispatcherTest, ClaimsAreSizedToFreeSlots) {
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(store_.AddQueued("chat").id());
  store_.AddQueued("embed");
  auto watcher = std::make_shared<RecordingSink>();
  hub_.Subscribe(ids[0], watcher);
  Start();
  auto session = std::make_shared<FakeSession>("s1", std::vector<std::string>{"chat"}, 3);
  dispatcher_->AddSession(session);

  ASSERT_TRUE(session->WaitForAssignments(3));
  std::vector<ClaimCall> claims = store_.claims();
  ASSERT_GE(claims.size(), 1u);
  EXPECT_EQ(claims[0].limit, 3);
  EXPECT_EQ(claims[0].owner, "s1");
  EXPECT_THAT(claims[0].types, ElementsAre("chat"));
  EXPECT_EQ(claims[0].lease, absl::Seconds(17));

  std::vector<v1::Assignment> assigned = session->assignments();
  ASSERT_EQ(assigned.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(assigned[i].job_id(), ids[i]);
    EXPECT_EQ(assigned[i].attempt(), 1);
    EXPECT_EQ(assigned[i].type(), "chat");
    EXPECT_EQ(assigned[i].input().fields().at("prompt").string_value(), "p-" + ids[i]);
    absl::Time deadline = FromProtoTimestamp(assigned[i].deadline());
    EXPECT_GT(deadline, absl::Now() + absl::Minutes(2));
    EXPECT_EQ(hub_.RunningSeq(ids[i]), 2) << "the attempt runs in the hub from its RUNNING seq";
  }
  EXPECT_EQ(session->RunningCount(), 3);
  EXPECT_EQ(dispatcher_->FindRunning(ids[1]), session);
  // Watchers were told the job started.
  ASSERT_FALSE(watcher->events().empty());
  EXPECT_EQ(watcher->events()[0].state_change().state(), v1::RUNNING);
  EXPECT_EQ(watcher->events()[0].seq(), 2);

  // A slot frees up: the next claim asks for exactly one job.
  ASSERT_TRUE(session->EndAttempt(ids[0], 1));
  dispatcher_->Wake();
  ASSERT_TRUE(session->WaitForAssignments(4));
  EXPECT_EQ(session->assignments()[3].job_id(), ids[3]);
  claims = store_.claims();
  for (size_t i = 1; i < claims.size(); ++i) {
    EXPECT_EQ(claims[i].limit, 1) << "claim " << i << " asked for more than the free slots";
  }
  EXPECT_EQ(claims.size(), 2u) << "no claim may be made while the session is full";
}

TEST_F(DispatcherTest, ClaimBatchIsCappedByMaxClaimBatch) {
  for (int i = 0; i < 10; ++i) store_.AddQueued("chat");
  Start(absl::Hours(1), /*max_claim_batch=*/4);
  auto session = std::make_shared<FakeSession>("s1", std::vector<std::string>{"chat"}, 9);
  dispatcher_->AddSession(session);
  // A full batch means "there may be more": the dispatcher claims again at once.
  ASSERT_TRUE(session->WaitForAssignments(9));
  ASSERT_TRUE(WaitForClaims(3));
  std::vector<ClaimCall> claims = store_.claims();
  EXPECT_EQ(claims[0].limit, 4);
  EXPECT_EQ(claims[1].limit, 4);
  EXPECT_EQ(claims[2].limit, 1);
  EXPECT_EQ(claims.size(), 3u);
}

TEST_F(DispatcherTest, FullSessionIsNotClaimedFor) {
  Start();
  // `full` already runs as many attempts as it has slots.
  auto full = std::make_shared<FakeSession>("full", std::vector<std::string>{"chat"}, 1);
  ClaimedJob running;
  running.job.set_id(NewUuid());
  running.job.set_attempt(1);
  running.deadline = absl::Now() + absl::Minutes(1);
  full->Assign({running});
  auto draining = std::make_shared<FakeSession>("draining", std::vector<std::string>{"chat"}, 8);
  draining->SetDraining();
  auto open = std::make_shared<FakeSession>("open", std::vector<std::string>{"embed"}, 2);
  dispatcher_->AddSession(full);
  dispatcher_->AddSession(draining);
  dispatcher_->AddSession(open);
  store_.AddQueued("chat");

  // Each wake-up is one pass over all sessions; `open` has free slots and nothing to claim,
  // so it is claimed for on every pass. After its third claim, two whole passes are done.
  for (size_t n = 1; n <= 3; ++n) {
    ASSERT_TRUE(WaitForClaims(n));
    dispatcher_->Wake();
  }
  for (const ClaimCall& c : store_.claims()) {
    EXPECT_EQ(c.owner, "open") << "claimed for a session without free slots";
    EXPECT_EQ(c.limit, 2);
  }
  EXPECT_THAT(full->assignments(), ::testing::SizeIs(1));
  EXPECT_THAT(draining->assignments(), IsEmpty());
}

TEST_F(DispatcherTest, RemoveSessionRequeuesItsAttempts) {
  v1::Job a = store_.AddQueued("chat");
  v1::Job b = store_.AddQueued("chat");
  Start();
  auto session = std::make_shared<FakeSession>("s1", std::vector<std::string>{"chat"}, 2);
  auto other = std::make_shared<FakeSession>("s2", std::vector<std::string>{"embed"}, 1);
  dispatcher_->AddSession(session);
  dispatcher_->AddSession(other);
  ASSERT_TRUE(session->WaitForAssignments(2));
  // Job a streamed output that was never flushed.
  ASSERT_TRUE(hub_.AppendDelta(a.id(), 1, "partial "));
  ASSERT_TRUE(hub_.AppendDelta(a.id(), 1, "output"));

  dispatcher_->RemoveSession(session);
  ASSERT_TRUE(store_.WaitUntil([&] { return store_.finished_count_locked() >= 2; }));
  finisher_->Flush();

  std::vector<AttemptOutcome> finished = store_.finished();
  ASSERT_EQ(finished.size(), 2u);
  std::vector<std::string> ids;
  for (const AttemptOutcome& o : finished) {
    ids.push_back(o.job_id);
    EXPECT_EQ(o.attempt, 1);
    EXPECT_EQ(o.kind, AttemptOutcome::Kind::kRetryableFailure);
    EXPECT_EQ(o.error.code(), "WORKER_LOST");
    EXPECT_TRUE(o.error.retryable());
    EXPECT_THAT(o.error.message(), ::testing::HasSubstr("worker-s1"));
    // The final transition must come after every seq the replica used.
    EXPECT_EQ(o.last_seq, o.job_id == a.id() ? 4 : 2) << o.job_id;
  }
  EXPECT_THAT(ids, UnorderedElementsAre(a.id(), b.id()));
  // The unflushed output is persisted with the transition.
  for (const AttemptOutcome& o : finished) {
    if (o.job_id != a.id()) {
      EXPECT_EQ(o.unflushed.pieces_size(), 0) << o.job_id;
      continue;
    }
    EXPECT_EQ(o.unflushed.attempt(), 1);
    ASSERT_EQ(o.unflushed.pieces_size(), 2);
    EXPECT_EQ(o.unflushed.pieces(0).seq(), 3);
    EXPECT_EQ(o.unflushed.pieces(1).text(), "output");
  }

  EXPECT_THAT(requeued(), UnorderedElementsAre(a.id(), b.id()));
  EXPECT_EQ(session->RunningCount(), 0);
  EXPECT_EQ(session->FreeSlots(), 0) << "a removed session takes no more work";
  EXPECT_EQ(hub_.RunningSeq(a.id()), 0);
  EXPECT_FALSE(hub_.AppendDelta(a.id(), 1, "late"));
  EXPECT_EQ(dispatcher_->FindRunning(a.id()), nullptr);
  EXPECT_THAT(dispatcher_->Sessions(), ElementsAre(other));
}

TEST_F(DispatcherTest, StopRequeuesAttemptsOfConnectedSessions) {
  v1::Job a = store_.AddQueued("chat");
  Start();
  auto session = std::make_shared<FakeSession>("s1", std::vector<std::string>{"chat"}, 4);
  dispatcher_->AddSession(session);
  ASSERT_TRUE(session->WaitForAssignments(1));
  dispatcher_->Stop();
  finisher_->Flush();
  std::vector<AttemptOutcome> finished = store_.finished();
  ASSERT_EQ(finished.size(), 1u);
  EXPECT_EQ(finished[0].job_id, a.id());
  EXPECT_EQ(finished[0].error.code(), "WORKER_LOST");
  EXPECT_THAT(dispatcher_->Sessions(), IsEmpty());
}

TEST_F(DispatcherTest, WakeTriggersAPromptClaim) {
  Start(/*poll_interval=*/absl::Hours(1));
  auto session = std::make_shared<FakeSession>("s1", std::vector<std::string>{"chat"}, 4);
  dispatcher_->AddSession(session);
  ASSERT_TRUE(WaitForClaims(1));  // nothing queued yet
  EXPECT_THAT(session->assignments(), IsEmpty());

  v1::Job job = store_.AddQueued("chat");
  dispatcher_->Wake();
  ASSERT_TRUE(session->WaitForAssignments(1, absl::Seconds(5)))
      << "Wake did not make the dispatcher claim (poll interval is an hour)";
  EXPECT_EQ(session->assignments()[0].job_id(), job.id());
}

// Regression (fixed): WakeAt only lowers next_wake_ (dispatcher.cc:38-41); it neither sets wake_
// nor re-arms the wait, and Loop computed its AwaitWithDeadline deadline (dispatcher.cc:118-119)
// before. A loop already parked keeps sleeping until its old deadline (up to
// poll_interval), so a delayed retry becomes runnable but is claimed up to poll_interval
// late, breaking "Claims again no later than `t`". AttemptFinisher's on_requeued (wired in
// scheduler_server.cc:88) relies on it for every retry. Fix: have WakeAt signal the loop when
// it lowers next_wake_ (e.g. a `rearm_` flag in the ready condition; the loop then recomputes
// its deadline without claiming), or wait in a loop on min(next_wake_, poll deadline).
TEST_F(DispatcherTest, WakeAtClaimsWhenTheTimeComes) {
  Start(/*poll_interval=*/absl::Hours(1));
  auto session = std::make_shared<FakeSession>("s1", std::vector<std::string>{"chat"}, 4);
  dispatcher_->AddSession(session);
  ASSERT_TRUE(WaitForClaims(1));
  // Let the loop park in its wait. This sleep cannot make the test fail: if the loop has not
  // parked yet, WakeAt is honoured and the test passes.
  absl::SleepFor(absl::Milliseconds(200));
  v1::Job job = store_.AddQueued("chat");  // a retry whose run_after is now + 100 ms
  absl::Time start = absl::Now();
  dispatcher_->WakeAt(start + absl::Milliseconds(100));
  ASSERT_TRUE(session->WaitForAssignments(1, absl::Seconds(3)))
      << "WakeAt(now + 100ms) did not claim within 3 s (poll interval is an hour)";
  EXPECT_GE(absl::Now(), start + absl::Milliseconds(100));
}

}  // namespace
}  // namespace aijobs::scheduler
