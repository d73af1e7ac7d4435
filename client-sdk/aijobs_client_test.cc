#include <google/protobuf/util/message_differencer.h>

#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "aijobs/client.h"
#include "client-sdk/fake_job_service.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace aijobs {
namespace {

using ::aijobs::testing::DeltaEvent;
using ::aijobs::testing::FakeJobServer;
using ::aijobs::testing::FakeJobService;
using ::aijobs::testing::FinalEvent;
using ::aijobs::testing::StateEvent;
using ::google::protobuf::util::MessageDifferencer;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

ClientOptions FastOptions() {
  ClientOptions options;
  options.watch_initial_backoff = absl::Milliseconds(10);
  options.watch_max_backoff = absl::Milliseconds(50);
  return options;
}

v1::Job MakeJob(const std::string& id, v1::JobState state) {
  v1::Job job;
  job.set_id(id);
  job.set_type("chat");
  job.set_state(state);
  job.set_attempt(1);
  job.set_max_attempts(3);
  return job;
}

class ClientTest : public ::testing::Test {
 protected:
  FakeJobServer server_;
  Client client_{server_.address(), FastOptions()};
};

TEST_F(ClientTest, SubmitSendsEveryFieldAndReturnsTheJob) {
  v1::SubmitJobRequest request = ChatRequest("hello there");
  request.set_priority(7);
  request.set_max_attempts(5);
  request.set_idempotency_key("key-1");
  (*request.mutable_labels())["team"] = "search";
  request.mutable_timeout()->set_seconds(30);

  absl::StatusOr<v1::Job> job = client_.Submit(request);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_FALSE(job->id().empty());
  EXPECT_EQ(job->type(), "chat");
  EXPECT_EQ(job->state(), v1::QUEUED);
  EXPECT_EQ(job->priority(), 7);
  EXPECT_EQ(job->max_attempts(), 5);
  EXPECT_EQ(job->idempotency_key(), "key-1");
  EXPECT_EQ(job->labels().at("team"), "search");
  EXPECT_EQ(job->timeout().seconds(), 30);
  EXPECT_TRUE(MessageDifferencer::Equals(job->input(), request.input()));

  std::vector<v1::SubmitJobRequest> seen = server_.service().submit_requests();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_TRUE(MessageDifferencer::Equals(seen[0], request));
}

TEST_F(ClientTest, SubmitErrorKeepsCodeAndMessage) {
  v1::SubmitJobRequest request;  // no type
  absl::StatusOr<v1::Job> job = client_.Submit(request);
  EXPECT_EQ(job.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(job.status().message(), "type must not be empty");
}

TEST_F(ClientTest, GetReturnsStoredJobAndNotFoundForUnknownId) {
  v1::Job stored = MakeJob("job-a", v1::RUNNING);
  server_.service().PutJob(stored);
  absl::StatusOr<v1::Job> job = client_.Get("job-a");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_TRUE(MessageDifferencer::Equals(*job, stored));

  absl::StatusOr<v1::Job> missing = client_.Get("nope");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("nope"));
}

TEST_F(ClientTest, CancelSendsReasonAndReturnsCancelledJob) {
  server_.service().PutJob(MakeJob("job-c", v1::QUEUED));
  absl::StatusOr<v1::Job> job = client_.Cancel("job-c", "user changed mind");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->state(), v1::CANCELLED);
  EXPECT_EQ(job->error().message(), "user changed mind");
  ASSERT_EQ(server_.service().cancel_requests().size(), 1u);
  EXPECT_EQ(server_.service().cancel_requests()[0].reason(), "user changed mind");

  // A second cancel is refused by the server; the code reaches the caller unchanged.
  EXPECT_EQ(client_.Cancel("job-c").status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(ClientTest, ListPassesFiltersAndPages) {
  server_.service().PutJob(MakeJob("j1", v1::FAILED));
  server_.service().PutJob(MakeJob("j2", v1::SUCCEEDED));
  server_.service().PutJob(MakeJob("j3", v1::FAILED));
  server_.service().PutJob(MakeJob("j4", v1::FAILED));

  v1::ListJobsRequest request;
  request.set_state(v1::FAILED);
  request.set_type("chat");
  request.set_page_size(2);
  absl::StatusOr<v1::ListJobsResponse> page = client_.List(request);
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->jobs_size(), 2);
  EXPECT_EQ(page->jobs(0).id(), "j1");
  EXPECT_EQ(page->jobs(1).id(), "j3");
  ASSERT_FALSE(page->next_page_token().empty());
  EXPECT_TRUE(MessageDifferencer::Equals(server_.service().list_requests()[0], request));

  request.set_page_token(page->next_page_token());
  page = client_.List(request);
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->jobs_size(), 1);
  EXPECT_EQ(page->jobs(0).id(), "j4");
  EXPECT_TRUE(page->next_page_token().empty());
}

TEST_F(ClientTest, RetryRequeuesFailedJob) {
  v1::Job failed = MakeJob("job-r", v1::FAILED);
  failed.mutable_error()->set_code("SIM_FAILURE");
  server_.service().PutJob(failed);
  absl::StatusOr<v1::Job> job = client_.Retry("job-r");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->state(), v1::QUEUED);
  EXPECT_FALSE(job->has_error());
  EXPECT_EQ(client_.Retry("job-r").status().code(), absl::StatusCode::kFailedPrecondition);
}

// The events of a job that ends SUCCEEDED at seq 6.
std::vector<v1::JobEvent> SixEvents(v1::Job* final_job) {
  *final_job = MakeJob("job-w", v1::SUCCEEDED);
  (*final_job->mutable_result()->mutable_fields())["text"].set_string_value("a b c d");
  return {StateEvent("job-w", 1, v1::RUNNING, 1),
          DeltaEvent("job-w", 2, "a "),
          DeltaEvent("job-w", 3, "b "),
          DeltaEvent("job-w", 4, "c "),
          DeltaEvent("job-w", 5, "d"),
          FinalEvent(6, *final_job)};
}

TEST_F(ClientTest, WatchResumesAfterUnavailableWithoutDuplicatesOrGaps) {
  v1::Job final_job;
  server_.service().PutJob(MakeJob("job-w", v1::RUNNING));
  server_.service().SetEvents("job-w", SixEvents(&final_job));
  server_.service().AddWatchBreak(
      "job-w", {3, grpc::Status(grpc::StatusCode::UNAVAILABLE, "replica going away")});

  std::vector<int64_t> seqs;
  std::string text;
  absl::StatusOr<v1::Job> result = client_.Watch("job-w", 0, [&](const v1::JobEvent& e) {
    seqs.push_back(e.seq());
    if (e.has_output_delta()) text += e.output_delta().text();
    return true;
  });
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->state(), v1::SUCCEEDED);
  EXPECT_EQ(result->result().fields().at("text").string_value(), "a b c d");
  EXPECT_THAT(seqs, ElementsAre(1, 2, 3, 4, 5, 6));
  EXPECT_EQ(text, "a b c d");
  // The second stream asked to resume after the last delivered event.
  EXPECT_THAT(server_.service().watch_after_seqs("job-w"), ElementsAre(0, 3));
}

TEST_F(ClientTest, WatchResumesWhenStreamEndsCleanlyBeforeTheFinalEvent) {
  v1::Job final_job;
  server_.service().PutJob(MakeJob("job-w", v1::RUNNING));
  server_.service().SetEvents("job-w", SixEvents(&final_job));
  server_.service().AddWatchBreak("job-w", {2, grpc::Status::OK});
  server_.service().AddWatchBreak("job-w", {0, grpc::Status::OK});  // nothing new at all

  std::vector<int64_t> seqs;
  absl::StatusOr<v1::Job> result = client_.Watch("job-w", 1, [&](const v1::JobEvent& e) {
    seqs.push_back(e.seq());
    return true;
  });
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->state(), v1::SUCCEEDED);
  EXPECT_THAT(seqs, ElementsAre(2, 3, 4, 5, 6));
  EXPECT_THAT(server_.service().watch_after_seqs("job-w"), ElementsAre(1, 3, 3));
}

TEST_F(ClientTest, WatchOfFinishedJobAfterItsLastSeqReturnsTheJob) {
  v1::Job final_job;
  std::vector<v1::JobEvent> events = SixEvents(&final_job);
  final_job.set_last_seq(6);
  server_.service().PutJob(final_job);
  server_.service().SetEvents("job-w", events);

  int delivered = 0;
  absl::StatusOr<v1::Job> result = client_.Watch("job-w", 6, [&](const v1::JobEvent&) {
    ++delivered;
    return true;
  });
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->state(), v1::SUCCEEDED);
  EXPECT_EQ(delivered, 0);
  EXPECT_THAT(server_.service().watch_after_seqs("job-w"), ElementsAre(6));
}

TEST_F(ClientTest, WatchStopsWhenCallbackReturnsFalse) {
  v1::Job final_job;
  server_.service().PutJob(MakeJob("job-w", v1::RUNNING));
  server_.service().SetEvents("job-w", SixEvents(&final_job));

  std::vector<int64_t> seqs;
  absl::StatusOr<v1::Job> result = client_.Watch("job-w", 0, [&](const v1::JobEvent& e) {
    seqs.push_back(e.seq());
    return e.seq() < 3;
  });
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_THAT(seqs, ElementsAre(1, 2, 3));
  EXPECT_EQ(result->id(), "job-w");
  EXPECT_EQ(result->state(), v1::RUNNING);
  EXPECT_EQ(result->attempt(), 1);
  EXPECT_EQ(result->last_seq(), 3);
}

TEST_F(ClientTest, WatchReturnsNonRetryableErrorAtOnce) {
  absl::StatusOr<v1::Job> result =
      client_.Watch("unknown", 0, [](const v1::JobEvent&) { return true; });
  EXPECT_EQ(result.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(server_.service().rpc_count(), 1);
}

TEST_F(ClientTest, WatchGivesUpAfterMaxConsecutiveFailures) {
  server_.service().PutJob(MakeJob("job-w", v1::RUNNING));
  for (int i = 0; i < 10; ++i) {
    server_.service().AddWatchBreak("job-w",
                                    {0, grpc::Status(grpc::StatusCode::UNAVAILABLE, "down")});
  }
  WatchOptions options;
  options.max_consecutive_failures = 2;
  absl::StatusOr<v1::Job> result = client_.Watch(
      "job-w", 0, [](const v1::JobEvent&) { return true; }, options);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(server_.service().watch_after_seqs("job-w").size(), 3u);
}

TEST_F(ClientTest, WatchHonoursOverallDeadline) {
  server_.service().PutJob(MakeJob("job-w", v1::RUNNING));
  for (int i = 0; i < 1000; ++i) {
    server_.service().AddWatchBreak("job-w",
                                    {0, grpc::Status(grpc::StatusCode::UNAVAILABLE, "down")});
  }
  WatchOptions options;
  options.deadline = absl::Milliseconds(300);
  const absl::Time start = absl::Now();
  absl::StatusOr<v1::Job> result = client_.Watch(
      "job-w", 0, [](const v1::JobEvent&) { return true; }, options);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  EXPECT_GE(server_.service().watch_after_seqs("job-w").size(), 2u);
}

TEST_F(ClientTest, UnaryCallAgainstNoServerFailsUnavailableWithinDeadline) {
  ClientOptions options;
  options.default_deadline = absl::Seconds(2);
  Client nowhere("127.0.0.1:1", options);
  const absl::Time start = absl::Now();
  absl::StatusOr<v1::Job> job = nowhere.Get("x");
  EXPECT_TRUE(job.status().code() == absl::StatusCode::kUnavailable ||
              job.status().code() == absl::StatusCode::kDeadlineExceeded)
      << job.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

TEST_F(ClientTest, SubmitWithIdempotencyKeyIsRetriedThroughAReplicaRestart) {
  server_.service().FailNextSubmits(
      {grpc::Status(grpc::StatusCode::UNAVAILABLE, "connection refused"),
       grpc::Status(grpc::StatusCode::CANCELLED, "server shutting down")});
  v1::SubmitJobRequest request = ChatRequest("retry me");
  request.set_idempotency_key("retry-key");
  absl::StatusOr<v1::Job> job = client_.Submit(request);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->idempotency_key(), "retry-key");
  EXPECT_EQ(server_.service().submit_requests().size(), 3u);
}

TEST_F(ClientTest, SubmitWithoutIdempotencyKeyIsNotRetried) {
  // A retry could create the job twice: the caller gets the error.
  server_.service().FailNextSubmits({grpc::Status(grpc::StatusCode::UNAVAILABLE, "refused")});
  absl::StatusOr<v1::Job> job = client_.Submit(ChatRequest("once"));
  EXPECT_EQ(job.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(server_.service().submit_requests().size(), 1u);
}

TEST_F(ClientTest, SubmitRetriesStopAtMaxTries) {
  ClientOptions options = FastOptions();
  options.submit_max_tries = 2;
  Client client(server_.address(), options);
  server_.service().FailNextSubmits({grpc::Status(grpc::StatusCode::UNAVAILABLE, "a"),
                                     grpc::Status(grpc::StatusCode::UNAVAILABLE, "b"),
                                     grpc::Status(grpc::StatusCode::UNAVAILABLE, "c")});
  v1::SubmitJobRequest request = ChatRequest("bounded");
  request.set_idempotency_key("bounded-key");
  absl::StatusOr<v1::Job> job = client.Submit(request);
  EXPECT_EQ(job.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(job.status().message(), "b");
  EXPECT_EQ(server_.service().submit_requests().size(), 2u);
}

TEST(ClientFailoverTest, AListOfReplicasSkipsTheOneThatIsDown) {
  std::string down;
  {
    FakeJobServer gone;  // its port is closed once it is destroyed
    down = gone.address();
  }
  FakeJobServer up;
  Client client(absl::StrCat(down, ",", up.address()), FastOptions());
  for (int i = 0; i < 10; ++i) {
    absl::StatusOr<v1::Job> job = client.Submit(ChatRequest("failover"));
    ASSERT_TRUE(job.ok()) << i << ": " << job.status();
  }
  EXPECT_EQ(up.service().submit_requests().size(), 10u);
}

TEST_F(ClientTest, ConcurrentSubmitsFromManyThreadsAllSucceed) {
  constexpr int kThreads = 8;
  constexpr int kPerThread = 20;
  std::vector<std::vector<std::string>> ids(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        absl::StatusOr<v1::Job> job = client_.Submit(ChatRequest("hi"));
        if (job.ok()) ids[t].push_back(job->id());
      }
    });
  }
  for (std::thread& t : threads) t.join();
  std::set<std::string> unique;
  for (const auto& v : ids) unique.insert(v.begin(), v.end());
  EXPECT_EQ(unique.size(), static_cast<size_t>(kThreads * kPerThread));
}

TEST(ChatInputTest, BuildsOneUserMessage) {
  google::protobuf::Struct input = ChatInput("what is 2+2?");
  const auto& messages = input.fields().at("messages").list_value();
  ASSERT_EQ(messages.values_size(), 1);
  const auto& message = messages.values(0).struct_value().fields();
  EXPECT_EQ(message.at("role").string_value(), "user");
  EXPECT_EQ(message.at("content").string_value(), "what is 2+2?");
  EXPECT_EQ(input.fields().size(), 1u);
  EXPECT_EQ(message.size(), 2u);
}

}  // namespace
}  // namespace aijobs
