// End-to-end fault handling with the real binaries: a worker killed mid-job, retries and
// the dead-letter state, a scheduler killed with jobs queued, and a worker's graceful drain.
#include <gtest/gtest.h>
#include <signal.h>

#include <set>

#include "tests/e2e_cluster.h"

namespace aijobs::testing {
namespace {

using aijobs::v1::Job;
using aijobs::v1::JobEvent;

class E2eFaultsTest : public E2eTest {};

TEST_F(E2eFaultsTest, WorkerKilledMidJobIsRetriedOnAnotherWorker) {
  ASSERT_NO_FATAL_FAILURE(StartScheduler());
  Process* first = StartWorker("doomed");
  ASSERT_NE(first, nullptr);

  Job job;
  ASSERT_TRUE(
      Submit(ChatRequest("Survive a crash", R"({"tokens": 40, "tokens_per_s": 20})"), &job).ok());
  {
    EventCollector watch(stub(), job.id());
    ASSERT_TRUE(watch.WaitForDeltas(1, absl::Seconds(20))) << "job never started streaming";
  }
  first->Kill();  // SIGKILL: no goodbye on the stream
  ASSERT_NE(StartWorker("rescuer"), nullptr);

  auto done = WaitForState(job.id(), aijobs::v1::SUCCEEDED, absl::Seconds(30));
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->attempt(), 2);

  // A watcher replaying from the start ends up with exactly the successful attempt's text:
  // the dead attempt's partial output is discarded.
  WatchResult w = WatchToEnd(job.id(), 0, absl::Seconds(10));
  EXPECT_TRUE(w.status.ok()) << w.status.error_message();
  EXPECT_EQ(AssembleText(w.events), ResultText(*done));
  bool discarded = false;
  for (const JobEvent& e : w.events) discarded |= e.state_change().discard_output();
  EXPECT_TRUE(discarded) << "no state change told watchers to discard attempt 1's output";
}

// Regression (issue 10, item 6): queued jobs no worker takes used to wait forever. Past
// their queue timeout they end FAILED EXPIRED (watchers see it end); a job with a longer
// one keeps waiting and runs once a worker comes.
TEST_F(E2eFaultsTest, QueuedJobNoWorkerTakesExpiresAndWatchersSeeItEnd) {
  ASSERT_NO_FATAL_FAILURE(StartScheduler({"--default_queue_timeout_s", "1"}));
  Job doomed;
  ASSERT_TRUE(Submit(ChatRequest("Nobody serves me"), &doomed).ok());
  EXPECT_EQ(doomed.queue_timeout().seconds(), 1);
  aijobs::v1::SubmitJobRequest patient_request = ChatRequest("I can wait");
  patient_request.mutable_queue_timeout()->set_seconds(3600);
  Job patient;
  ASSERT_TRUE(Submit(patient_request, &patient).ok());

  WatchResult w = WatchToEnd(doomed.id(), 0, absl::Seconds(20));
  ASSERT_TRUE(w.status.ok()) << w.status.error_message();
  ASSERT_FALSE(w.events.empty());
  ASSERT_TRUE(w.events.back().has_final_job());
  const Job& ended = w.events.back().final_job();
  EXPECT_EQ(ended.state(), aijobs::v1::FAILED);
  EXPECT_EQ(ended.error().code(), "EXPIRED");
  EXPECT_EQ(ended.attempt(), 0);

  ASSERT_NE(StartWorker("late"), nullptr);
  auto done = WaitForState(patient.id(), aijobs::v1::SUCCEEDED, absl::Seconds(30));
  ASSERT_TRUE(done.ok()) << done.status();
}

TEST_F(E2eFaultsTest, FailingAttemptsAreRetriedUntilSuccess) {
  ASSERT_NO_FATAL_FAILURE(StartScheduler());
  ASSERT_NE(StartWorker("w1"), nullptr);

  Job job;
  ASSERT_TRUE(Submit(ChatRequest("Flaky provider",
                                 R"({"tokens": 8, "fail_attempts": 2, "fail_after_tokens": 3})"),
                     &job)
                  .ok());
  WatchResult w = WatchToEnd(job.id(), 0, absl::Seconds(30));
  ASSERT_TRUE(w.status.ok()) << w.status.error_message();
  ASSERT_FALSE(w.events.empty());
  ASSERT_TRUE(w.events.back().has_final_job());
  const Job& final_job = w.events.back().final_job();
  EXPECT_EQ(final_job.state(), aijobs::v1::SUCCEEDED) << final_job.ShortDebugString();
  EXPECT_EQ(final_job.attempt(), 3);
  EXPECT_EQ(AssembleText(w.events), ResultText(final_job));
}

TEST_F(E2eFaultsTest, ExhaustedRetriesFailTheJobAndRetryJobRedrivesIt) {
  ASSERT_NO_FATAL_FAILURE(StartScheduler());
  Process* worker = StartWorker("w1");
  ASSERT_NE(worker, nullptr);

  Job job;
  ASSERT_TRUE(Submit(ChatRequest("Always broken", R"({"tokens": 4, "error_rate": 1})"), &job).ok());
  auto failed = WaitForState(job.id(), aijobs::v1::FAILED, absl::Seconds(30));
  ASSERT_TRUE(failed.ok()) << failed.status();
  EXPECT_EQ(failed->attempt(), 3);
  EXPECT_EQ(failed->max_attempts(), 3);
  EXPECT_EQ(failed->error().code(), "SIM_FAILURE") << failed->error().ShortDebugString();

  // Redrive with no worker connected, so the job is observably QUEUED again.
  worker->Kill();
  Job redriven;
  grpc::Status s = Retry(job.id(), &redriven);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(redriven.state(), aijobs::v1::QUEUED);
  Job got;
  ASSERT_TRUE(Get(job.id(), &got).ok());
  EXPECT_EQ(got.state(), aijobs::v1::QUEUED);

  // A succeeded job is not redrivable.
  ASSERT_NE(StartWorker("w2"), nullptr);
  Job ok_job;
  ASSERT_TRUE(Submit(ChatRequest("fine", R"({"tokens": 2})"), &ok_job).ok());
  ASSERT_TRUE(WaitForState(ok_job.id(), aijobs::v1::SUCCEEDED).ok());
  EXPECT_FALSE(Retry(ok_job.id(), &got).ok());
}

TEST_F(E2eFaultsTest, QueuedJobsSurviveSchedulerKill) {
  constexpr int kJobs = 200;
  ASSERT_NO_FATAL_FAILURE(StartScheduler());
  std::set<std::string> ids;
  for (int i = 0; i < kJobs; ++i) {
    Job job;
    grpc::Status s = Submit(ChatRequest("job " + std::to_string(i), R"({"tokens": 3})"), &job);
    ASSERT_TRUE(s.ok()) << "submit " << i << ": " << s.error_message();
    ids.insert(job.id());
  }
  ASSERT_EQ(ids.size(), static_cast<size_t>(kJobs));

  scheduler_->Kill();  // SIGKILL right after the last acknowledged submit
  ASSERT_NO_FATAL_FAILURE(StartScheduler());
  ASSERT_NE(StartWorker("w1"), nullptr);

  std::vector<Job> succeeded;
  bool all_done = WaitFor(
      [&] {
        auto jobs = ListAll(aijobs::v1::SUCCEEDED);
        if (jobs.ok()) succeeded = std::move(*jobs);
        return succeeded.size() >= static_cast<size_t>(kJobs);
      },
      absl::Seconds(60), absl::Milliseconds(250));
  EXPECT_TRUE(all_done) << succeeded.size() << " of " << kJobs << " jobs succeeded";
  std::set<std::string> done_ids;
  for (const Job& j : succeeded) done_ids.insert(j.id());
  EXPECT_EQ(done_ids, ids);
}

TEST_F(E2eFaultsTest, SigtermDrainsTheWorkerAfterItsRunningJob) {
  ASSERT_NO_FATAL_FAILURE(StartScheduler());
  Process* worker = StartWorker("w1", {"--drain_timeout_ms", "30000"});
  ASSERT_NE(worker, nullptr);

  Job job;
  ASSERT_TRUE(Submit(ChatRequest("Finish me", R"({"tokens": 30, "tokens_per_s": 20})"), &job).ok());
  EventCollector watch(stub(), job.id());
  ASSERT_TRUE(watch.WaitForDeltas(1, absl::Seconds(20))) << "job never started streaming";
  ASSERT_TRUE(worker->Signal(SIGTERM).ok());

  auto done = WaitForState(job.id(), aijobs::v1::SUCCEEDED, absl::Seconds(30));
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->attempt(), 1) << "the job was not finished by the draining worker";
  auto code = worker->Wait(absl::Seconds(15));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0);

  WatchResult w = watch.Finish(absl::Seconds(10));
  EXPECT_TRUE(w.status.ok()) << w.status.error_message();
  EXPECT_EQ(AssembleText(w.events), ResultText(*done));
}

}  // namespace
}  // namespace aijobs::testing
