// End-to-end: the real aijobs-scheduler and aijobs-worker binaries over a private
// PostgreSQL, driven through the JobService gRPC API. Job flow: submit, watch and resume,
// cancel, idempotency, input validation.
#include <gtest/gtest.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/uuid.h"
#include "tests/e2e_cluster.h"

namespace aijobs::testing {
namespace {

using aijobs::v1::Job;
using aijobs::v1::JobEvent;

class E2eJobFlowTest : public E2eTest {};

// Checks the invariants every complete watch stream must hold and returns its final job.
Job CheckCompleteStream(const WatchResult& w) {
  EXPECT_TRUE(w.status.ok()) << "WatchJob ended with " << w.status.error_code() << " "
                             << w.status.error_message();
  for (size_t i = 1; i < w.events.size(); ++i) {
    EXPECT_GT(w.events[i].seq(), w.events[i - 1].seq()) << "seq not strictly increasing at " << i;
  }
  for (size_t i = 0; i + 1 < w.events.size(); ++i) {
    EXPECT_FALSE(w.events[i].has_final_job())
        << "final_job must be the last event (at " << i << " of " << w.events.size() << ")";
  }
  if (w.events.empty() || !w.events.back().has_final_job()) {
    ADD_FAILURE() << "stream did not end with final_job (" << w.events.size() << " events)";
    return Job();
  }
  return w.events.back().final_job();
}

TEST_F(E2eJobFlowTest, SubmitAndWatchChatToSuccess) {
  ASSERT_NO_FATAL_FAILURE(StartScheduler());
  ASSERT_NE(StartWorker("w1"), nullptr);

  Job submitted;
  grpc::Status s = Submit(ChatRequest("Explain durable queues", R"({"tokens": 16})"), &submitted);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(IsUuid(submitted.id())) << submitted.id();
  EXPECT_EQ(submitted.type(), "chat");

  WatchResult w = WatchToEnd(submitted.id());
  Job final_job = CheckCompleteStream(w);
  ASSERT_EQ(final_job.state(), aijobs::v1::SUCCEEDED) << final_job.ShortDebugString();
  EXPECT_EQ(final_job.id(), submitted.id());
  EXPECT_EQ(final_job.attempt(), 1);
  const std::string text = ResultText(final_job);
  EXPECT_FALSE(text.empty());
  EXPECT_EQ(AssembleText(w.events), text);
  for (const JobEvent& e : w.events) EXPECT_EQ(e.job_id(), submitted.id());

  Job got;
  ASSERT_TRUE(Get(submitted.id(), &got).ok());
  EXPECT_EQ(got.state(), aijobs::v1::SUCCEEDED);
  EXPECT_EQ(ResultText(got), text);
  EXPECT_EQ(got.last_seq(), w.events.back().seq());
}

TEST_F(E2eJobFlowTest, WatchResumesAfterDisconnectWithoutGapOrDuplicate) {
  ASSERT_NO_FATAL_FAILURE(StartScheduler());
  ASSERT_NE(StartWorker("w1"), nullptr);

  Job job;
  ASSERT_TRUE(
      Submit(ChatRequest("Tell a long story", R"({"tokens": 30, "tokens_per_s": 20})"), &job).ok());

  // First connection: read a few deltas, then drop the stream from the client side.
  std::vector<JobEvent> first;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    aijobs::v1::WatchJobRequest req;
    req.set_job_id(job.id());
    auto reader = stub()->WatchJob(&ctx, req);
    JobEvent e;
    int deltas = 0;
    while (reader->Read(&e)) {
      first.push_back(e);
      if (e.has_output_delta() && ++deltas == 3) ctx.TryCancel();
    }
    grpc::Status st = reader->Finish();
    ASSERT_GE(deltas, 3) << "stream ended before 3 deltas: " << st.error_message();
    ASSERT_FALSE(first.back().has_final_job()) << "job finished before the disconnect; the "
                                                  "sim settings are too fast for this test";
  }
  const int64_t last_seen = first.back().seq();

  WatchResult second = WatchToEnd(job.id(), last_seen);
  Job final_job = CheckCompleteStream(second);
  ASSERT_EQ(final_job.state(), aijobs::v1::SUCCEEDED);
  ASSERT_FALSE(second.events.empty());
  EXPECT_GT(second.events.front().seq(), last_seen) << "resume replayed an event already seen";

  std::vector<JobEvent> all = first;
  all.insert(all.end(), second.events.begin(), second.events.end());
  for (size_t i = 1; i < all.size(); ++i) EXPECT_GT(all[i].seq(), all[i - 1].seq());
  EXPECT_EQ(AssembleText(all), ResultText(final_job));

  // Replay of the finished job from the start: everything again, then the stream ends.
  WatchResult replay = WatchToEnd(job.id(), 0, absl::Seconds(10));
  Job replay_final = CheckCompleteStream(replay);
  EXPECT_EQ(replay_final.state(), aijobs::v1::SUCCEEDED);
  EXPECT_EQ(AssembleText(replay.events), ResultText(final_job));
  ASSERT_FALSE(replay.events.empty());
  EXPECT_EQ(replay.events.back().seq(), second.events.back().seq());
}

TEST_F(E2eJobFlowTest, CancelRunningJobStopsItsOutput) {
  ASSERT_NO_FATAL_FAILURE(StartScheduler());
  ASSERT_NE(StartWorker("w1", {"--slots", "1"}), nullptr);

  Job job;
  ASSERT_TRUE(
      Submit(ChatRequest("A very long answer", R"({"tokens": 400, "tokens_per_s": 20})"), &job)
          .ok());
  EventCollector watch(stub(), job.id());
  ASSERT_TRUE(watch.WaitForDeltas(1, absl::Seconds(20))) << "job never started streaming";

  Job cancelled;
  grpc::Status s = Cancel(job.id(), &cancelled);
  ASSERT_TRUE(s.ok()) << s.error_message();
  auto done = WaitForState(job.id(), aijobs::v1::CANCELLED, absl::Seconds(10));
  ASSERT_TRUE(done.ok()) << done.status();

  WatchResult w = watch.Finish(absl::Seconds(10));
  Job final_job = CheckCompleteStream(w);
  EXPECT_EQ(final_job.state(), aijobs::v1::CANCELLED);
  // Far fewer than the 400 tokens (words) were produced: the call was aborted, not run to
  // the end (which would take 20 s).
  const std::string partial = AssembleText(w.events);
  EXPECT_LT(std::count(partial.begin(), partial.end(), ' '), 200) << partial;

  // The single slot is free again: the worker really stopped the cancelled call.
  Job next;
  ASSERT_TRUE(Submit(ChatRequest("Quick one", R"({"tokens": 3})"), &next).ok());
  auto next_done = WaitForState(next.id(), aijobs::v1::SUCCEEDED, absl::Seconds(20));
  ASSERT_TRUE(next_done.ok()) << next_done.status();

  // No output was appended to the cancelled job after its final event.
  Job after;
  ASSERT_TRUE(Get(job.id(), &after).ok());
  EXPECT_EQ(after.state(), aijobs::v1::CANCELLED);
  EXPECT_EQ(after.last_seq(), w.events.back().seq());
}

TEST_F(E2eJobFlowTest, CancelQueuedJobIsImmediate) {
  ASSERT_NO_FATAL_FAILURE(StartScheduler());  // no worker: the job stays queued

  Job job;
  ASSERT_TRUE(Submit(ChatRequest("never runs"), &job).ok());
  EXPECT_EQ(job.state(), aijobs::v1::QUEUED);
  Job cancelled;
  grpc::Status s = Cancel(job.id(), &cancelled);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(cancelled.state(), aijobs::v1::CANCELLED);
  Job got;
  ASSERT_TRUE(Get(job.id(), &got).ok());
  EXPECT_EQ(got.state(), aijobs::v1::CANCELLED);

  WatchResult w = WatchToEnd(job.id(), 0, absl::Seconds(10));
  EXPECT_EQ(CheckCompleteStream(w).state(), aijobs::v1::CANCELLED);
  EXPECT_EQ(AssembleText(w.events), "");
}

TEST_F(E2eJobFlowTest, IdempotencyKeyReturnsTheSameJob) {
  ASSERT_NO_FATAL_FAILURE(StartScheduler());

  auto req = ChatRequest("only once");
  req.set_idempotency_key("order-42");
  Job a, b;
  ASSERT_TRUE(Submit(req, &a).ok());
  ASSERT_TRUE(Submit(req, &b).ok());
  EXPECT_EQ(a.id(), b.id());
  EXPECT_EQ(b.idempotency_key(), "order-42");

  // Regression (issue 10): the same key with a different body silently returned the first
  // job; it is a client bug, answered ALREADY_EXISTS (HTTP 409) naming the job.
  auto other = ChatRequest("something else");
  other.set_idempotency_key("order-42");
  Job d;
  grpc::Status conflict = Submit(other, &d);
  EXPECT_EQ(conflict.error_code(), grpc::StatusCode::ALREADY_EXISTS) << conflict.error_message();
  EXPECT_NE(conflict.error_message().find(a.id()), std::string::npos) << conflict.error_message();
  other = req;
  other.set_priority(5);
  EXPECT_EQ(Submit(other, &d).error_code(), grpc::StatusCode::ALREADY_EXISTS);

  req.set_idempotency_key("order-43");
  Job c;
  ASSERT_TRUE(Submit(req, &c).ok());
  EXPECT_NE(c.id(), a.id());

  auto jobs = ListAll();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  ASSERT_EQ(jobs->size(), 2u);
  int with_42 = 0;
  for (const Job& j : *jobs) with_42 += j.idempotency_key() == "order-42";
  EXPECT_EQ(with_42, 1);
}

TEST_F(E2eJobFlowTest, RejectsBadInputWithoutCreatingJobs) {
  ASSERT_NO_FATAL_FAILURE(StartScheduler({"--max_input_bytes", "2048"}));

  Job job;
  auto unknown = ChatRequest("hi");
  unknown.set_type("no_such_type");
  grpc::Status s = Submit(unknown, &job);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_NE(s.error_message().find("no_such_type"), std::string::npos) << s.error_message();

  s = Submit(RequestFromJson(R"({"type": "chat", "input": {"messages": []}})"), &job);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();

  s = Submit(ChatRequest(std::string(4096, 'x')), &job);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();

  s = Get(NewUuid(), &job);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();
  s = Get("not-a-uuid", &job);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();

  auto jobs = ListAll();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  EXPECT_TRUE(jobs->empty()) << jobs->size() << " jobs were created by rejected requests";

  // The same scheduler still accepts a valid request (the limit is not absurdly low).
  EXPECT_TRUE(Submit(ChatRequest("fine"), &job).ok());
}

}  // namespace
}  // namespace aijobs::testing
