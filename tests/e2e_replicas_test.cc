// End-to-end with two scheduler replicas on one database: a job submitted to the replica
// without workers runs on the other one's worker (NOTIFY wake-up), a watcher on the first
// replica still receives its whole output and end, and a cancel sent to the first replica
// stops the attempt on the other replica's worker.
#include <gtest/gtest.h>

#include <csignal>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

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

// A rolling restart: SIGTERM of the replica a worker is connected to sends that worker to
// the other replica (it must not exit), and work submitted afterwards still runs.
TEST_F(E2eReplicasTest, SchedulerSigtermSendsItsWorkerToTheOtherReplica) {
  ASSERT_NO_FATAL_FAILURE(StartScheduler());
  Process* a = scheduler();
  const std::string a_address = scheduler_address();
  ASSERT_NO_FATAL_FAILURE(StartScheduler());
  Process* b = scheduler();
  Process* worker = StartWorker(
      "roaming", {"--scheduler", absl::StrCat(a_address, ",", scheduler_address())});
  ASSERT_NE(worker, nullptr);
  ASSERT_TRUE(WaitFor([&] { return a->ReadStdout().find("worker roaming connected") !=
                                   std::string::npos; },
                      absl::Seconds(15)))
      << worker->LogTail();

  ASSERT_TRUE(a->Signal(SIGTERM).ok());
  ASSERT_TRUE(WaitFor([&] { return b->ReadStdout().find("worker roaming connected") !=
                                   std::string::npos; },
                      absl::Seconds(15)))
      << worker->LogTail();
  Job job;
  ASSERT_TRUE(Submit(ChatRequest("after the restart", "{}"), &job).ok());
  WatchResult w = WatchToEnd(job.id(), 0, absl::Seconds(30));
  ASSERT_TRUE(w.status.ok()) << w.status.error_message();
  ASSERT_TRUE(w.events.back().has_final_job());
  EXPECT_EQ(w.events.back().final_job().state(), aijobs::v1::SUCCEEDED);
  EXPECT_TRUE(worker->IsRunning()) << worker->LogTail();
}

// kill -9 of the replica that assigned a running attempt: the worker reconnects to the
// other replica and reports the attempt it had to give up, which is requeued at once
// (WORKER_DISCONNECTED) instead of after its 30 s lease (LEASE_EXPIRED).
TEST_F(E2eReplicasTest, AttemptCutOffByAReplicaCrashIsRequeuedWithoutWaitingForItsLease) {
  const std::vector<std::string> long_lease = {"--lease_ms", "30000"};
  ASSERT_NO_FATAL_FAILURE(StartScheduler(long_lease));
  Process* a = scheduler();
  const std::string a_address = scheduler_address();
  ASSERT_NO_FATAL_FAILURE(StartScheduler(long_lease));
  Process* worker = StartWorker(
      "survivor", {"--scheduler", absl::StrCat(a_address, ",", scheduler_address())});
  ASSERT_NE(worker, nullptr);
  ASSERT_TRUE(WaitFor([&] { return a->ReadStdout().find("worker survivor connected") !=
                                   std::string::npos; },
                      absl::Seconds(15)))
      << worker->LogTail();
  Job job;
  ASSERT_TRUE(
      Submit(ChatRequest("outlive a crash", R"({"tokens": 60, "tokens_per_s": 30})"), &job).ok());
  {
    EventCollector watch(stub(), job.id());
    ASSERT_TRUE(watch.WaitForDeltas(1, absl::Seconds(15)));
  }
  a->Kill();
  WatchResult w = WatchToEnd(job.id(), 0, absl::Seconds(25));
  ASSERT_TRUE(w.status.ok()) << w.status.error_message() << worker->LogTail();
  ASSERT_FALSE(w.events.empty());
  ASSERT_TRUE(w.events.back().has_final_job()) << worker->LogTail();
  EXPECT_EQ(w.events.back().final_job().state(), aijobs::v1::SUCCEEDED);
  EXPECT_EQ(w.events.back().final_job().attempt(), 2);
  std::vector<std::string> requeues;
  for (const auto& e : w.events) {
    if (e.has_state_change() && e.state_change().state() == aijobs::v1::QUEUED &&
        e.state_change().has_error()) {
      requeues.push_back(e.state_change().error().code());
    }
  }
  EXPECT_EQ(requeues, std::vector<std::string>{"WORKER_DISCONNECTED"}) << worker->LogTail();
  EXPECT_EQ(AssembleText(w.events), ResultText(w.events.back().final_job()));
}

}  // namespace
}  // namespace aijobs::testing
