// End-to-end with two scheduler replicas on one database: a job submitted to the replica
// without workers runs on the other one's worker (NOTIFY wake-up), a watcher on the first
// replica still receives its whole output and end, and a cancel sent to the first replica
// stops the attempt on the other replica's worker.
#include <gtest/gtest.h>

#include "tests/e2e_cluster.h"

namespace aijobs::testing {
namespace {

using aijobs::v1::Job;

class E2eReplicasTest : public E2eTest {
 protected:
  // Starts replica A with the worker, then replica B (which stub() talks to afterwards).
  void StartTwoReplicas() {
    // A long poll interval: only the NOTIFY can wake A quickly for B's inserts.
    ASSERT_NO_FATAL_FAILURE(StartScheduler({"--poll_interval_ms", "5000"}));
    replica_a_ = scheduler();
    ASSERT_NE(StartWorker("w-on-a"), nullptr);
    ASSERT_NO_FATAL_FAILURE(StartScheduler({"--poll_interval_ms", "5000"}));
  }
  Process* replica_a_ = nullptr;
};

TEST_F(E2eReplicasTest, JobSubmittedToOneReplicaRunsAndStreamsThroughTheOther) {
  ASSERT_NO_FATAL_FAILURE(StartTwoReplicas());
  Job job;
  ASSERT_TRUE(
      Submit(ChatRequest("cross replica", R"({"tokens": 20, "tokens_per_s": 40})"), &job).ok());
  absl::Time submitted = absl::Now();
  WatchResult w = WatchToEnd(job.id(), 0, absl::Seconds(30));
  ASSERT_TRUE(w.status.ok()) << w.status.error_message();
  ASSERT_FALSE(w.events.empty());
  const auto& last = w.events.back();
  ASSERT_TRUE(last.has_final_job());
  EXPECT_EQ(last.final_job().state(), aijobs::v1::SUCCEEDED);
  EXPECT_EQ(AssembleText(w.events), ResultText(last.final_job()));
  // Woken by NOTIFY, not by A's 5 s poll.
  EXPECT_LT(absl::Now() - submitted, absl::Seconds(5));
  for (size_t i = 1; i < w.events.size(); ++i) {
    EXPECT_GT(w.events[i].seq(), w.events[i - 1].seq());
  }
}

TEST_F(E2eReplicasTest, CancelOnOneReplicaStopsTheAttemptOnTheOther) {
  ASSERT_NO_FATAL_FAILURE(StartTwoReplicas());
  Job job;
  ASSERT_TRUE(
      Submit(ChatRequest("cancel me", R"({"tokens": 400, "tokens_per_s": 20})"), &job).ok());
  ASSERT_TRUE(WaitForState(job.id(), aijobs::v1::RUNNING, absl::Seconds(10)).ok());
  EventCollector watch(stub(), job.id());
  ASSERT_TRUE(watch.WaitForDeltas(1, absl::Seconds(10)));
  Job cancelled;
  ASSERT_TRUE(Cancel(job.id(), &cancelled).ok());
  EXPECT_EQ(cancelled.state(), aijobs::v1::CANCELLED);
  WatchResult w = watch.Finish(absl::Seconds(15));
  ASSERT_TRUE(w.status.ok()) << w.status.error_message();
  ASSERT_TRUE(w.events.back().has_final_job());
  EXPECT_EQ(w.events.back().final_job().state(), aijobs::v1::CANCELLED);
  // Replica A told its worker to stop (instead of letting it stream 20 s for nothing).
  EXPECT_TRUE(WaitFor(
      [&] {
        return replica_a_->ReadStdout().find("cancel from another replica") != std::string::npos;
      },
      absl::Seconds(10)))
      << replica_a_->LogTail();
  // And the job stays cancelled: the stopped attempt's report changes nothing.
  Job after;
  ASSERT_TRUE(Get(job.id(), &after).ok());
  EXPECT_EQ(after.state(), aijobs::v1::CANCELLED);
}

}  // namespace
}  // namespace aijobs::testing
