// End-to-end recovery: a scheduler killed with attempts running, a scheduler stopped
// gracefully mid-stream, and a PostgreSQL restart under a running system. In every case each
// acknowledged job ends SUCCEEDED and a watcher replaying it gets exactly the result text.
#include <gtest/gtest.h>
#include <signal.h>

#include <set>

#include "tests/e2e_cluster.h"

namespace aijobs::testing {
namespace {

using aijobs::v1::Job;

class E2eRecoveryTest : public E2eTest {
 protected:
  // Submits `n` streaming jobs and returns their ids.
  std::vector<std::string> SubmitStreaming(int n, const std::string& sim_json) {
    std::vector<std::string> ids;
    for (int i = 0; i < n; ++i) {
      Job job;
      grpc::Status s = Submit(ChatRequest("recover " + std::to_string(i), sim_json), &job);
      EXPECT_TRUE(s.ok()) << "submit " << i << ": " << s.error_message();
      if (s.ok()) ids.push_back(job.id());
    }
    return ids;
  }

  void ExpectAllSucceed(const std::vector<std::string>& ids, absl::Duration timeout) {
    for (const std::string& id : ids) {
      auto done = WaitForState(id, aijobs::v1::SUCCEEDED, timeout);
      ASSERT_TRUE(done.ok()) << id << ": " << done.status();
      WatchResult w = WatchToEnd(id, 0, absl::Seconds(10));
      EXPECT_TRUE(w.status.ok()) << w.status.error_message();
      EXPECT_EQ(AssembleText(w.events), ResultText(*done)) << id;
    }
  }
};

TEST_F(E2eRecoveryTest, RunningJobsSurviveSchedulerKill) {
  ASSERT_NO_FATAL_FAILURE(StartScheduler());
  ASSERT_NE(StartWorker("w1"), nullptr);
  std::vector<std::string> ids = SubmitStreaming(5, R"({"tokens": 40, "tokens_per_s": 20})");
  ASSERT_EQ(ids.size(), 5u);
  {
    EventCollector watch(stub(), ids.back());
    ASSERT_TRUE(watch.WaitForDeltas(2, absl::Seconds(20))) << "jobs never started streaming";
  }
  scheduler_->Kill();  // SIGKILL with attempts running: their leases must expire and requeue
  ASSERT_NO_FATAL_FAILURE(StartScheduler());
  ASSERT_NE(StartWorker("w2"), nullptr);  // w1 keeps reconnecting to the dead address
  ExpectAllSucceed(ids, absl::Seconds(60));
  auto jobs = ListAll(aijobs::v1::SUCCEEDED);
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  for (const Job& j : *jobs) EXPECT_GE(j.attempt(), 2) << j.id() << " was not re-run";
}

TEST_F(E2eRecoveryTest, GracefulSchedulerStopLosesNothing) {
  ASSERT_NO_FATAL_FAILURE(StartScheduler({"--shutdown_grace_ms", "500"}));
  ASSERT_NE(StartWorker("w1"), nullptr);
  std::vector<std::string> ids = SubmitStreaming(10, R"({"tokens": 60, "tokens_per_s": 30})");
  ASSERT_EQ(ids.size(), 10u);
  {
    EventCollector watch(stub(), ids.back());
    ASSERT_TRUE(watch.WaitForDeltas(1, absl::Seconds(20)));
  }
  ASSERT_TRUE(scheduler_->Signal(SIGTERM).ok());
  auto code = scheduler_->Wait(absl::Seconds(20));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0) << "scheduler did not exit cleanly on SIGTERM";
  // Attempts still running at the end of the grace period were requeued at once (not left
  // to lease expiry), so a new scheduler and worker finish everything.
  ASSERT_NO_FATAL_FAILURE(StartScheduler());
  ASSERT_NE(StartWorker("w2"), nullptr);
  ExpectAllSucceed(ids, absl::Seconds(60));
}

TEST_F(E2eRecoveryTest, DatabaseRestartIsSurvived) {
  ASSERT_NO_FATAL_FAILURE(StartScheduler());
  ASSERT_NE(StartWorker("w1"), nullptr);
  std::vector<std::string> ids = SubmitStreaming(5, R"({"tokens": 40, "tokens_per_s": 40})");
  ASSERT_EQ(ids.size(), 5u);
  ASSERT_TRUE(server()->Stop().ok());
  ASSERT_TRUE(server()->Start().ok());
  // Calls may fail with UNAVAILABLE while the pool reconnects; acknowledged ones must stick.
  std::vector<std::string> later;
  ASSERT_TRUE(WaitFor(
      [&] {
        Job job;
        if (!Submit(ChatRequest("after restart", R"({"tokens": 3})"), &job).ok()) return false;
        later.push_back(job.id());
        return true;
      },
      absl::Seconds(30), absl::Milliseconds(200)))
      << "the scheduler never accepted a submit after the database restart";
  ids.insert(ids.end(), later.begin(), later.end());
  ExpectAllSucceed(ids, absl::Seconds(60));
}

}  // namespace
}  // namespace aijobs::testing
