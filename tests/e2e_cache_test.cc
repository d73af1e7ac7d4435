// End-to-end: the response cache, with the real aijobs-scheduler and aijobs-worker binaries
// over a private PostgreSQL. A repeated request that opted in is answered at submit,
// SUCCEEDED with cached = true and the original result, with no worker running (the proof
// that no worker was involved); a different prompt, an expired entry or a request wanting
// a fresher answer miss; pre-composed answers (PutCachedResult) and workers' cache adverts
// work; SubmitJob tells the HTTP gateway 202/200 and Location through initial metadata.
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "aijobs/v1/worker_service.grpc.pb.h"
#include "common/time_util.h"
#include "tests/e2e_cluster.h"

namespace aijobs::testing {
namespace {

using aijobs::v1::Job;

// A submit's reply with the initial metadata the gateway maps to HTTP.
struct SubmitReply {
  grpc::Status status;
  Job job;
  std::string http_code;
  std::string location;
};

std::string Metadata(const grpc::ClientContext& ctx, const std::string& key) {
  const auto& md = ctx.GetServerInitialMetadata();
  auto it = md.find(key);
  return it == md.end() ? "" : std::string(it->second.data(), it->second.size());
}

aijobs::v1::SubmitJobRequest Cached(aijobs::v1::SubmitJobRequest req, absl::Duration ttl) {
  *req.mutable_cache()->mutable_ttl() = ToProtoDuration(ttl);
  return req;
}

class E2eCacheTest : public E2eTest {
 protected:
  SubmitReply SubmitWithMetadata(const aijobs::v1::SubmitJobRequest& req) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
    SubmitReply r;
    r.status = stub()->SubmitJob(&ctx, req, &r.job);
    r.http_code = Metadata(ctx, "x-http-code");
    r.location = Metadata(ctx, "x-http-header-location");
    return r;
  }

  // Runs `req` on a worker to SUCCEEDED and returns the finished job.
  Job RunOnWorker(const aijobs::v1::SubmitJobRequest& req) {
    Job job;
    grpc::Status s = Submit(req, &job);
    EXPECT_TRUE(s.ok()) << s.error_message();
    auto done = WaitForState(job.id(), aijobs::v1::SUCCEEDED);
    EXPECT_TRUE(done.ok()) << done.status();
    return done.ok() ? *done : Job();
  }

  // Kills every worker: from now on only the cache can finish a job.
  void StopWorkers() {
    for (auto& w : workers_) w->Kill();
    workers_.clear();
  }

  grpc::Status Put(const aijobs::v1::PutCachedResultRequest& req,
                   aijobs::v1::PutCachedResultResponse* resp) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
    return stub()->PutCachedResult(&ctx, req, resp);
  }
};

TEST_F(E2eCacheTest, RepeatedRequestIsAnsweredFromTheCacheWithoutAWorker) {
  ASSERT_NO_FATAL_FAILURE(StartScheduler());
  ASSERT_NE(StartWorker("w1"), nullptr);
  const auto request =
      Cached(ChatRequest("What is a durable queue?", R"({"tokens": 9})"), absl::Minutes(5));

  SubmitReply first = SubmitWithMetadata(request);
  ASSERT_TRUE(first.status.ok()) << first.status.error_message();
  EXPECT_EQ(first.job.state(), aijobs::v1::QUEUED);
  EXPECT_FALSE(first.job.cached());
  // What the gateway turns into "202 Accepted" + "Location: /v1/jobs/<id>".
  EXPECT_EQ(first.http_code, "202");
  EXPECT_EQ(first.location, "/v1/jobs/" + first.job.id());
  auto ran = WaitForState(first.job.id(), aijobs::v1::SUCCEEDED);
  ASSERT_TRUE(ran.ok()) << ran.status();
  EXPECT_FALSE(ran->cached());
  EXPECT_EQ(ran->attempt(), 1);
  const std::string text = ResultText(*ran);
  ASSERT_FALSE(text.empty());

  StopWorkers();  // without a worker, only the cache can answer

  SubmitReply second = SubmitWithMetadata(request);
  ASSERT_TRUE(second.status.ok()) << second.status.error_message();
  const Job& hit = second.job;
  EXPECT_NE(hit.id(), first.job.id());
  EXPECT_EQ(hit.state(), aijobs::v1::SUCCEEDED) << hit.ShortDebugString();
  EXPECT_TRUE(hit.cached());
  EXPECT_EQ(hit.attempt(), 0);
  EXPECT_EQ(ResultText(hit), text);
  // The result is the original one, unchanged (cached is on the Job, not in the result).
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(hit.result(), ran->result()))
      << hit.result().ShortDebugString() << " vs " << ran->result().ShortDebugString();
  EXPECT_EQ(second.http_code, "200");
  EXPECT_EQ(second.location, "/v1/jobs/" + hit.id());

  // Watching it ends at once with the final job.
  absl::Time watch_start = absl::Now();
  WatchResult w = WatchToEnd(hit.id(), 0, absl::Seconds(10));
  EXPECT_TRUE(w.status.ok()) << w.status.error_message();
  EXPECT_LT(absl::Now() - watch_start, absl::Seconds(5));
  ASSERT_FALSE(w.events.empty());
  EXPECT_EQ(w.events.front().state_change().state(), aijobs::v1::QUEUED);
  ASSERT_TRUE(w.events.back().has_final_job());
  EXPECT_TRUE(w.events.back().final_job().cached());
  EXPECT_EQ(w.events.back().final_job().state(), aijobs::v1::SUCCEEDED);
  EXPECT_EQ(ResultText(w.events.back().final_job()), text);

  Job got;
  ASSERT_TRUE(Get(hit.id(), &got).ok());
  EXPECT_TRUE(got.cached());
  EXPECT_EQ(ResultText(got), text);

  // A different prompt misses: it waits for a worker.
  Job other;
  ASSERT_TRUE(
      Submit(Cached(ChatRequest("What is a lease?", R"({"tokens": 9})"), absl::Minutes(5)), &other)
          .ok());
  EXPECT_EQ(other.state(), aijobs::v1::QUEUED);
  EXPECT_FALSE(other.cached());
  // So does the same prompt without opting in.
  Job not_opted;
  ASSERT_TRUE(Submit(ChatRequest("What is a durable queue?", R"({"tokens": 9})"), &not_opted).ok());
  EXPECT_EQ(not_opted.state(), aijobs::v1::QUEUED);

  // Idempotency keys keep working for cache hits.
  auto keyed = request;
  keyed.set_idempotency_key("cached-once");
  Job k1, k2;
  ASSERT_TRUE(Submit(keyed, &k1).ok());
  ASSERT_TRUE(Submit(keyed, &k2).ok());
  EXPECT_TRUE(k1.cached());
  EXPECT_EQ(k1.id(), k2.id());
}

TEST_F(E2eCacheTest, ExpiredOrTooOldEntriesMiss) {
  ASSERT_NO_FATAL_FAILURE(StartScheduler());
  ASSERT_NE(StartWorker("w1"), nullptr);
  constexpr absl::Duration kTtl = absl::Seconds(3);
  const auto request = ChatRequest("short-lived", R"({"tokens": 5})");
  Job ran = RunOnWorker(Cached(request, kTtl));
  ASSERT_EQ(ran.state(), aijobs::v1::SUCCEEDED);
  StopWorkers();

  // While live it is served...
  Job hit;
  ASSERT_TRUE(Submit(Cached(request, absl::Minutes(5)), &hit).ok());
  EXPECT_TRUE(hit.cached()) << hit.ShortDebugString();
  // ...but not to a request that wants an answer fresher than the entry's age.
  Job fresher;
  ASSERT_TRUE(Submit(Cached(request, absl::Milliseconds(1)), &fresher).ok());
  EXPECT_EQ(fresher.state(), aijobs::v1::QUEUED);

  // Once the entry's own ttl (from the first job) passed, it misses whatever the request.
  const absl::Time expiry = FromProtoTimestamp(ran.finished_at()) + kTtl;
  ASSERT_TRUE(WaitFor([&] { return absl::Now() > expiry + absl::Milliseconds(50); },
                      absl::Seconds(10), absl::Milliseconds(20)));
  Job expired;
  ASSERT_TRUE(Submit(Cached(request, absl::Minutes(5)), &expired).ok());
  EXPECT_EQ(expired.state(), aijobs::v1::QUEUED) << expired.ShortDebugString();
  EXPECT_FALSE(expired.cached());
}

TEST_F(E2eCacheTest, PreComposedAnswerIsServedWithoutAnyWorker) {
  ASSERT_NO_FATAL_FAILURE(StartScheduler());  // no worker at all

  const auto question = ChatRequest("What are your opening hours?");
  aijobs::v1::PutCachedResultRequest put;
  put.set_type("chat");
  *put.mutable_input() = question.input();
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(
                  R"({"text": "We are open 9 to 5.", "model": "faq"})", put.mutable_result())
                  .ok());
  *put.mutable_ttl() = ToProtoDuration(absl::Minutes(10));
  aijobs::v1::PutCachedResultResponse put_resp;
  grpc::Status s = Put(put, &put_resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(put_resp.key().size(), 64u) << put_resp.key();
  EXPECT_GT(FromProtoTimestamp(put_resp.expires_at()), absl::Now() + absl::Minutes(9));

  SubmitReply reply = SubmitWithMetadata(Cached(question, absl::Seconds(30)));
  ASSERT_TRUE(reply.status.ok()) << reply.status.error_message();
  EXPECT_EQ(reply.job.state(), aijobs::v1::SUCCEEDED);
  EXPECT_TRUE(reply.job.cached());
  EXPECT_EQ(ResultText(reply.job), "We are open 9 to 5.");
  EXPECT_EQ(reply.job.result().fields().at("model").string_value(), "faq");
  EXPECT_EQ(reply.http_code, "200");

  // Key order in the submitted input does not matter.
  auto reordered = RequestFromJson(
      R"({"type": "chat", "input": {"sim": {}, "messages": [{"content":
          "What are your opening hours?", "role": "user"}]}, "cache": {"ttl": "30s"}})");
  Job again;
  ASSERT_TRUE(Submit(reordered, &again).ok());
  EXPECT_TRUE(again.cached()) << "input as sent: " << reordered.input().ShortDebugString()
                              << " vs put: " << put.input().ShortDebugString();

  // Bad requests are rejected, naming the field.
  aijobs::v1::PutCachedResultRequest no_ttl = put;
  no_ttl.clear_ttl();
  s = Put(no_ttl, &put_resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("ttl"), std::string::npos) << s.error_message();
  Job job;
  s = Submit(Cached(question, absl::Hours(24 * 31)), &job);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("cache.ttl"), std::string::npos) << s.error_message();
  s = Submit(Cached(question, absl::Seconds(-1)), &job);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("cache.ttl"), std::string::npos) << s.error_message();
}

TEST_F(E2eCacheTest, WorkerAdvertTurnsCachingOnForItsModelGroup) {
  ASSERT_NO_FATAL_FAILURE(StartScheduler());

  // A worker stream (this test speaking WorkerService directly) that advertises caching of
  // chat jobs for model "faq-model". It offers another job type, so it is never assigned.
  auto channel = CreateTestChannel(scheduler_address());
  auto worker_stub = aijobs::v1::WorkerService::NewStub(channel);
  grpc::ClientContext wctx;
  auto stream = worker_stub->Connect(&wctx);
  aijobs::v1::WorkerMessage hello;
  hello.mutable_hello()->set_worker_id("advertiser");
  hello.mutable_hello()->add_job_types("advert-only");
  hello.mutable_hello()->set_slots(1);
  aijobs::v1::CacheAdvert* advert = hello.mutable_hello()->add_cache_adverts();
  advert->set_job_type("chat");
  advert->set_model("faq-model");
  *advert->mutable_ttl() = ToProtoDuration(absl::Minutes(5));
  ASSERT_TRUE(stream->Write(hello));
  aijobs::v1::SchedulerMessage welcome;
  ASSERT_TRUE(stream->Read(&welcome)) << "no welcome: " << stream->Finish().error_message();
  ASSERT_TRUE(welcome.has_welcome());

  ASSERT_NE(StartWorker("w1"), nullptr);
  auto request = ChatRequest("Where is the station?", R"({"tokens": 6})");
  (*request.mutable_input()->mutable_fields())["model"].set_string_value("faq-model");
  Job ran = RunOnWorker(request);  // no cache policy of its own: the advert applies
  ASSERT_EQ(ran.state(), aijobs::v1::SUCCEEDED);
  StopWorkers();

  Job hit;
  ASSERT_TRUE(Submit(request, &hit).ok());
  EXPECT_EQ(hit.state(), aijobs::v1::SUCCEEDED) << hit.ShortDebugString();
  EXPECT_TRUE(hit.cached());
  EXPECT_EQ(ResultText(hit), ResultText(ran));

  auto other_model = request;
  (*other_model.mutable_input()->mutable_fields())["model"].set_string_value("other-model");
  Job miss;
  ASSERT_TRUE(Submit(other_model, &miss).ok());
  EXPECT_EQ(miss.state(), aijobs::v1::QUEUED);

  // An advert with an invalid ttl is refused, naming the field.
  grpc::ClientContext bad_ctx;
  auto bad = worker_stub->Connect(&bad_ctx);
  aijobs::v1::WorkerMessage bad_hello = hello;
  bad_hello.mutable_hello()->set_worker_id("bad-advertiser");
  bad_hello.mutable_hello()->mutable_cache_adverts(0)->mutable_ttl()->set_seconds(-5);
  ASSERT_TRUE(bad->Write(bad_hello));
  bad->WritesDone();
  aijobs::v1::SchedulerMessage ignored;
  while (bad->Read(&ignored)) {
  }
  grpc::Status refused = bad->Finish();
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(refused.error_message().find("cache_adverts[0].ttl"), std::string::npos)
      << refused.error_message();

  stream->WritesDone();
  wctx.TryCancel();
  (void)stream->Finish();
}

}  // namespace
}  // namespace aijobs::testing
