// The HTTP gateway end to end: real aijobs-gateway in front of a real scheduler, worker and
// PostgreSQL, spoken to over HTTP/1.1 on loopback.
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <thread>

#include "absl/strings/numbers.h"
#include "absl/synchronization/notification.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "aijobs/v1/job.pb.h"
#include "aijobs/v1/job_service.pb.h"
#include "tests/e2e_cluster.h"
#include "tests/fixtures/http_client.h"

namespace aijobs::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using v1::Job;

template <typename M>
M FromJson(const std::string& json) {
  M m;
  auto st = google::protobuf::util::JsonStringToMessage(json, &m);
  EXPECT_TRUE(st.ok()) << st << " in " << json;
  return m;
}

google::protobuf::Struct JsonObject(const std::string& json) {
  return FromJson<google::protobuf::Struct>(json);
}

std::string ChatBody(const std::string& prompt, const std::string& sim = "{}") {
  return absl::StrCat(R"({"type":"chat","input":{"messages":[{"role":"user","content":")",
                      prompt, R"("}],"sim":)", sim, "}}");
}

class GatewayTest : public E2eTest {
 protected:
  void Up(const std::vector<std::string>& gateway_flags = {}) {
    ASSERT_NO_FATAL_FAILURE(StartScheduler());
    ASSERT_NE(StartWorker("w1"), nullptr);
    base_ = StartGateway(gateway_flags);
    ASSERT_FALSE(base_.empty());
  }

  HttpResult Call(const std::string& method, const std::string& path, const std::string& body = "",
                  std::vector<std::pair<std::string, std::string>> headers = {}) {
    return HttpCall(method, base_ + path, body, std::move(headers));
  }

  Job SubmitOverHttp(const std::string& body) {
    HttpResult r = Call("POST", "/v1/jobs", body);
    EXPECT_EQ(r.status, 202) << r.error << r.body;
    return FromJson<Job>(r.body);
  }

  Job WaitOverHttp(const std::string& id, v1::JobState state) {
    Job job;
    WaitFor(
        [&] {
          HttpResult r = Call("GET", "/v1/jobs/" + id);
          if (r.status != 200) return false;
          job = FromJson<Job>(r.body);
          return job.state() == state;
        },
        absl::Seconds(30));
    EXPECT_EQ(v1::JobState_Name(job.state()), v1::JobState_Name(state));
    return job;
  }

  int64_t OpenStreams() {
    HttpResult r = Call("GET", "/metrics");
    for (absl::string_view line : absl::StrSplit(r.body, '\n')) {
      if (absl::ConsumePrefix(&line, "aijobs_gateway_open_streams ")) {
        int64_t n = -1;
        if (absl::SimpleAtoi(line, &n)) return n;
      }
    }
    return -1;
  }

  std::string base_;
};

TEST_F(GatewayTest, SubmitAnswers202WithLocationThenGetAndListSeeTheJob) {
  ASSERT_NO_FATAL_FAILURE(Up());
  HttpResult r = Call("POST", "/v1/jobs", ChatBody("hello gateway"), {{"X-Request-Id", "req-42"}});
  ASSERT_EQ(r.status, 202) << r.error << r.body;
  Job job = FromJson<Job>(r.body);
  ASSERT_FALSE(job.id().empty());
  EXPECT_EQ(r.Header("Location"), "/v1/jobs/" + job.id());
  EXPECT_EQ(r.Header("X-Request-Id"), "req-42");
  EXPECT_THAT(r.Header("Content-Type"), StartsWith("application/json"));

  Job done = WaitOverHttp(job.id(), v1::SUCCEEDED);
  EXPECT_FALSE(done.result().fields().at("text").string_value().empty());

  // Query parameters: an enum by name, an int by json name.
  HttpResult list = Call("GET", "/v1/jobs?state=SUCCEEDED&pageSize=10");
  ASSERT_EQ(list.status, 200) << list.body;
  auto jobs = FromJson<v1::ListJobsResponse>(list.body);
  ASSERT_EQ(jobs.jobs_size(), 1);
  EXPECT_EQ(jobs.jobs(0).id(), job.id());
  // A request id is generated when the caller sends none.
  EXPECT_FALSE(list.Header("X-Request-Id").empty());
}

TEST_F(GatewayTest, CancelAndRetryThroughCustomVerbs) {
  ASSERT_NO_FATAL_FAILURE(Up());
  Job job = SubmitOverHttp(ChatBody("slow one", R"({"tokens": 400, "tokens_per_s": 20})"));
  WaitOverHttp(job.id(), v1::RUNNING);
  HttpResult c = Call("POST", "/v1/jobs/" + job.id() + ":cancel", R"({"reason":"user"})");
  ASSERT_EQ(c.status, 200) << c.body;
  EXPECT_EQ(FromJson<Job>(c.body).state(), v1::CANCELLED);
  HttpResult again = Call("POST", "/v1/jobs/" + job.id() + ":retry", "{}");
  ASSERT_EQ(again.status, 200) << again.body;
  EXPECT_EQ(FromJson<Job>(again.body).state(), v1::QUEUED);
}

TEST_F(GatewayTest, PreComposedAnswerIsServedAtSubmitWith200) {
  ASSERT_NO_FATAL_FAILURE(Up());
  const std::string input = R"({"messages":[{"role":"user","content":"opening hours?"}]})";
  HttpResult put = Call("POST", "/v1/cache",
                        absl::StrCat(R"({"type":"chat","input":)", input,
                                     R"(,"result":{"text":"9 to 5"},"ttl":"3600s"})"));
  ASSERT_EQ(put.status, 200) << put.body;
  EXPECT_FALSE(JsonObject(put.body).fields().at("key").string_value().empty());
  HttpResult r = Call("POST", "/v1/jobs",
                      absl::StrCat(R"({"type":"chat","input":)", input,
                                   R"(,"cache":{"ttl":"60s"}})"));
  // Already finished: 200, not 202; still with its Location.
  ASSERT_EQ(r.status, 200) << r.body;
  Job job = FromJson<Job>(r.body);
  EXPECT_EQ(r.Header("Location"), "/v1/jobs/" + job.id());
  EXPECT_EQ(job.state(), v1::SUCCEEDED);
  EXPECT_TRUE(job.cached());
  EXPECT_EQ(job.result().fields().at("text").string_value(), "9 to 5");
  HttpResult bad = Call("POST", "/v1/cache", R"({"type":"chat","input":{},"result":{}})");
  EXPECT_EQ(bad.status, 400);
  EXPECT_THAT(bad.body, HasSubstr("ttl"));
}

TEST_F(GatewayTest, ErrorsUseStatusMappingAndGoogleRpcStatusBodies) {
  ASSERT_NO_FATAL_FAILURE(Up());
  // NOT_FOUND from the scheduler.
  HttpResult nf = Call("GET", "/v1/jobs/7d0b3c1e-1b7e-4d8e-9a51-0c8a3a8f2a11");
  EXPECT_EQ(nf.status, 404);
  auto body = JsonObject(nf.body);
  EXPECT_EQ(body.fields().at("code").number_value(), 5);
  EXPECT_FALSE(body.fields().at("message").string_value().empty());
  EXPECT_TRUE(body.fields().contains("details"));
  // INVALID_ARGUMENT from the scheduler's validation.
  HttpResult bad_type = Call("POST", "/v1/jobs", R"({"type":"","input":{}})");
  EXPECT_EQ(bad_type.status, 400);
  EXPECT_EQ(JsonObject(bad_type.body).fields().at("code").number_value(), 3);
  // Unknown JSON field: rejected by the gateway, naming the field.
  HttpResult unknown = Call("POST", "/v1/jobs", R"({"type":"chat","colour":"red"})");
  EXPECT_EQ(unknown.status, 400);
  EXPECT_THAT(unknown.body, HasSubstr("colour"));
  // Malformed JSON: the parser's reason.
  HttpResult malformed = Call("POST", "/v1/jobs", R"({"type": "chat",)");
  EXPECT_EQ(malformed.status, 400);
  EXPECT_EQ(JsonObject(malformed.body).fields().at("code").number_value(), 3);
  // Unknown query parameter.
  HttpResult q = Call("GET", "/v1/jobs?colour=red");
  EXPECT_EQ(q.status, 400);
  EXPECT_THAT(q.body, HasSubstr("colour"));
  // No route at all, and a known path with the wrong method.
  HttpResult none = Call("GET", "/v2/nothing");
  EXPECT_EQ(none.status, 404);
  EXPECT_EQ(JsonObject(none.body).fields().at("code").number_value(), 5);
  HttpResult wrong = Call("DELETE", "/v1/jobs/abc");
  EXPECT_EQ(wrong.status, 405);
  EXPECT_THAT(wrong.Header("Allow"), HasSubstr("GET"));
  HttpResult wrong2 = Call("PUT", "/v1/jobs");
  EXPECT_EQ(wrong2.status, 405);
  EXPECT_THAT(wrong2.Header("Allow"), HasSubstr("POST"));
  EXPECT_THAT(wrong2.Header("Allow"), HasSubstr("GET"));
  // A deadline from Grpc-Timeout that cannot be met: 504. (The scheduler is paused: with a
  // running one even a 1 ns deadline can lose the race against a fast loopback answer.)
  ASSERT_TRUE(scheduler()->Signal(SIGSTOP).ok());
  HttpResult late = Call("GET", "/v1/jobs?pageSize=5", "", {{"Grpc-Timeout", "200m"}});
  ASSERT_TRUE(scheduler()->Signal(SIGCONT).ok());
  EXPECT_EQ(late.status, 504) << late.body;
  HttpResult bad_timeout = Call("GET", "/v1/jobs", "", {{"Grpc-Timeout", "soon"}});
  EXPECT_EQ(bad_timeout.status, 400);
  EXPECT_THAT(bad_timeout.body, HasSubstr("Grpc-Timeout"));
}

TEST_F(GatewayTest, OversizedBodyIs413AndNothingIsSubmitted) {
  ASSERT_NO_FATAL_FAILURE(Up({"--max_body_bytes", "2000"}));
  HttpResult big = Call("POST", "/v1/jobs", ChatBody(std::string(5000, 'x')));
  EXPECT_EQ(big.status, 413) << big.body;
  HttpResult list = Call("GET", "/v1/jobs");
  ASSERT_EQ(list.status, 200);
  EXPECT_EQ(FromJson<v1::ListJobsResponse>(list.body).jobs_size(), 0);
}

TEST_F(GatewayTest, CorsPreflightAndHeadersFollowTheAllowList) {
  ASSERT_NO_FATAL_FAILURE(Up({"--cors_allowed_origins", "http://app.example"}));
  HttpResult pre = Call("OPTIONS", "/v1/jobs", "",
                        {{"Origin", "http://app.example"},
                         {"Access-Control-Request-Method", "POST"},
                         {"Access-Control-Request-Headers", "content-type"}});
  EXPECT_EQ(pre.status, 204);
  EXPECT_EQ(pre.Header("Access-Control-Allow-Origin"), "http://app.example");
  EXPECT_THAT(pre.Header("Access-Control-Allow-Methods"), HasSubstr("POST"));
  EXPECT_THAT(pre.Header("Access-Control-Allow-Headers"), HasSubstr("content-type"));
  HttpResult other = Call("OPTIONS", "/v1/jobs", "",
                          {{"Origin", "http://evil.example"},
                           {"Access-Control-Request-Method", "POST"}});
  EXPECT_EQ(other.Header("Access-Control-Allow-Origin"), "");
  HttpResult get = Call("GET", "/v1/jobs", "", {{"Origin", "http://app.example"}});
  EXPECT_EQ(get.Header("Access-Control-Allow-Origin"), "http://app.example");
  EXPECT_THAT(get.Header("Access-Control-Expose-Headers"), HasSubstr("Location"));
}

TEST_F(GatewayTest, ServerSentEventsStreamTheJobAndResumeFromLastEventId) {
  ASSERT_NO_FATAL_FAILURE(Up());
  Job job = SubmitOverHttp(ChatBody("stream me", R"({"tokens": 30, "tokens_per_s": 200})"));
  HttpResult sse = HttpCall("GET", base_ + "/v1/jobs/" + job.id() + "/events", "",
                            {{"Accept", "text/event-stream"}}, absl::Seconds(30));
  ASSERT_EQ(sse.status, 200) << sse.error << sse.body;
  EXPECT_THAT(sse.Header("Content-Type"), StartsWith("text/event-stream"));
  std::vector<SseEvent> events = ParseSseEvents(sse.body);
  ASSERT_GE(events.size(), 3u) << sse.body;
  EXPECT_EQ(events.front().event, "state_change");
  EXPECT_EQ(events.back().event, "final_job");
  std::string text;
  int64_t last = 0;
  for (const SseEvent& e : events) {
    int64_t id = 0;
    ASSERT_TRUE(absl::SimpleAtoi(e.id, &id)) << e.id;
    EXPECT_GT(id, last);
    last = id;
    auto event = FromJson<v1::JobEvent>(e.data);
    EXPECT_EQ(event.seq(), id);
    if (e.event == "output_delta") text += event.output_delta().text();
  }
  Job final_job = FromJson<v1::JobEvent>(events.back().data).final_job();
  EXPECT_EQ(final_job.state(), v1::SUCCEEDED);
  EXPECT_EQ(text, final_job.result().fields().at("text").string_value());

  // Resume after the third event: only later events come, by header or query parameter.
  // (Deltas queued behind a write are merged into one event carrying the last seq, so the
  // count may differ; the text after the resume point may not.)
  const std::string third = events[2].id;
  std::string text_after_third;
  for (size_t i = 3; i < events.size(); ++i) {
    if (events[i].event == "output_delta") {
      text_after_third += FromJson<v1::JobEvent>(events[i].data).output_delta().text();
    }
  }
  for (const auto& [path, headers] :
       std::vector<std::pair<std::string, std::vector<std::pair<std::string, std::string>>>>{
           {"/v1/jobs/" + job.id() + "/events",
            {{"Accept", "text/event-stream"}, {"Last-Event-ID", third}}},
           {"/v1/jobs/" + job.id() + "/events?last_event_id=" + third,
            {{"Accept", "text/event-stream"}}}}) {
    HttpResult resumed = HttpCall("GET", base_ + path, "", headers);
    ASSERT_EQ(resumed.status, 200) << resumed.body;
    std::vector<SseEvent> rest = ParseSseEvents(resumed.body);
    ASSERT_FALSE(rest.empty()) << path;
    std::string rest_text;
    int64_t prev = 0;
    ASSERT_TRUE(absl::SimpleAtoi(third, &prev));
    for (const SseEvent& e : rest) {
      int64_t id = 0;
      ASSERT_TRUE(absl::SimpleAtoi(e.id, &id));
      EXPECT_GT(id, prev) << path;
      prev = id;
      if (e.event == "output_delta") {
        rest_text += FromJson<v1::JobEvent>(e.data).output_delta().text();
      }
    }
    EXPECT_EQ(rest_text, text_after_third) << path;
    EXPECT_EQ(rest.back().event, "final_job");
    EXPECT_EQ(rest.back().id, events.back().id);
  }
  HttpResult bad = HttpCall("GET", base_ + "/v1/jobs/" + job.id() + "/events", "",
                            {{"Last-Event-ID", "yesterday"}});
  EXPECT_EQ(bad.status, 400);
}

TEST_F(GatewayTest, StreamsAreNewlineDelimitedJsonWithoutTheSseAcceptHeader) {
  ASSERT_NO_FATAL_FAILURE(Up());
  Job job = SubmitOverHttp(ChatBody("ndjson"));
  HttpResult r = HttpCall("GET", base_ + "/v1/jobs/" + job.id() + "/events");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_THAT(r.Header("Content-Type"), StartsWith("application/x-ndjson"));
  std::vector<std::string> lines = absl::StrSplit(r.body, '\n', absl::SkipEmpty());
  ASSERT_GE(lines.size(), 2u);
  for (const std::string& line : lines) {
    auto obj = JsonObject(line);
    ASSERT_TRUE(obj.fields().contains("result")) << line;
  }
  // A stream that fails before its first message is an ordinary error response.
  HttpResult missing =
      HttpCall("GET", base_ + "/v1/jobs/7d0b3c1e-1b7e-4d8e-9a51-0c8a3a8f2a11/events", "",
               {{"Accept", "text/event-stream"}});
  EXPECT_EQ(missing.status, 404);
}

TEST_F(GatewayTest, AStreamThatFailsMidwayEndsWithAnErrorLine) {
  ASSERT_NO_FATAL_FAILURE(Up());
  Job job = SubmitOverHttp(ChatBody("long", R"({"tokens": 2000, "tokens_per_s": 20})"));
  WaitOverHttp(job.id(), v1::RUNNING);
  absl::Notification got_result;
  HttpResult r;
  std::thread reader([&] {
    HttpRequestSpec spec;
    spec.url = base_ + "/v1/jobs/" + job.id() + "/events";
    spec.timeout = absl::Seconds(20);
    spec.stop_when = [&](const std::string& body) {
      if (!got_result.HasBeenNotified() && body.find("{\"result\"") != std::string::npos) {
        got_result.Notify();
      }
      return false;
    };
    r = HttpCall(spec);
  });
  ASSERT_TRUE(got_result.WaitForNotificationWithTimeout(absl::Seconds(10)));
  scheduler()->Kill();  // The upstream call breaks while the HTTP stream is open.
  reader.join();
  EXPECT_EQ(r.status, 200);
  std::vector<std::string> lines = absl::StrSplit(r.body, '\n', absl::SkipEmpty());
  ASSERT_GE(lines.size(), 2u) << r.body;
  auto last = JsonObject(lines.back());
  ASSERT_TRUE(last.fields().contains("error")) << lines.back();
  EXPECT_EQ(last.fields().at("error").struct_value().fields().at("code").number_value(),
            static_cast<double>(grpc::StatusCode::UNAVAILABLE));
}

TEST_F(GatewayTest, ClientDisconnectCancelsTheUpstreamStream) {
  ASSERT_NO_FATAL_FAILURE(Up());
  Job job = SubmitOverHttp(ChatBody("long", R"({"tokens": 2000, "tokens_per_s": 20})"));
  HttpRequestSpec spec;
  spec.url = base_ + "/v1/jobs/" + job.id() + "/events";
  spec.headers = {{"Accept", "text/event-stream"}};
  spec.timeout = absl::Seconds(20);
  spec.stop_when = [](const std::string& body) {
    return body.find("event: output_delta") != std::string::npos;
  };
  HttpResult partial = HttpCall(spec);
  EXPECT_THAT(partial.body, HasSubstr("event: output_delta"));
  // The relay (and its upstream WatchJob call) ends as soon as the client is gone, long
  // before the job would end (~100 s of output).
  EXPECT_TRUE(WaitFor([&] { return OpenStreams() == 0; }, absl::Seconds(5)))
      << "open streams: " << OpenStreams();
  HttpResult get = Call("GET", "/v1/jobs/" + job.id());
  EXPECT_EQ(FromJson<Job>(get.body).state(), v1::RUNNING);
}

TEST_F(GatewayTest, IdleEventStreamsGetCommentHeartbeats) {
  ASSERT_NO_FATAL_FAILURE(Up({"--sse_heartbeat_ms", "200"}));
  Job job = SubmitOverHttp(ChatBody("think first", R"({"ttft_ms": 20000, "tokens": 3})"));
  HttpRequestSpec spec;
  spec.url = base_ + "/v1/jobs/" + job.id() + "/events";
  spec.headers = {{"Accept", "text/event-stream"}};
  spec.timeout = absl::Seconds(10);
  spec.stop_when = [](const std::string& body) {
    return body.find(": ping\n\n") != std::string::npos;
  };
  absl::Time start = absl::Now();
  HttpResult r = HttpCall(spec);
  EXPECT_THAT(r.body, HasSubstr(": ping\n\n"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  // Heartbeats are comments: no event is made of them (an unnamed event would be "message").
  for (const SseEvent& e : ParseSseEvents(r.body)) EXPECT_NE(e.event, "message");
}

TEST_F(GatewayTest, OperationalEndpoints) {
  ASSERT_NO_FATAL_FAILURE(Up());
  EXPECT_EQ(Call("GET", "/healthz").status, 200);
  EXPECT_EQ(Call("GET", "/readyz").status, 200);
  Call("GET", "/v1/jobs");
  HttpResult metrics = Call("GET", "/metrics");
  ASSERT_EQ(metrics.status, 200);
  EXPECT_THAT(metrics.body, HasSubstr("aijobs_gateway_requests_total{route=\"GET /v1/jobs\",code=\"200\"}"));
  EXPECT_THAT(metrics.body, HasSubstr("aijobs_gateway_request_duration_seconds_bucket"));
  HttpResult openapi = Call("GET", "/openapi.json");
  ASSERT_EQ(openapi.status, 200);
  auto doc = JsonObject(openapi.body);
  EXPECT_THAT(doc.fields().at("openapi").string_value(), StartsWith("3.1"));
  EXPECT_TRUE(doc.fields().at("paths").struct_value().fields().contains("/v1/jobs/{job_id}"));
  HttpResult page = Call("GET", "/");
  EXPECT_EQ(page.status, 200);
  EXPECT_THAT(page.Header("Content-Type"), StartsWith("text/html"));
  EXPECT_THAT(page.body, HasSubstr("<html"));
  // Regression (issue 10): the page had no CSP, X-Content-Type-Options or X-Frame-Options,
  // and the fixed endpoints sent no X-Request-Id although every response must.
  EXPECT_THAT(page.Header("Content-Security-Policy"), HasSubstr("script-src 'sha256-"));
  EXPECT_EQ(page.Header("X-Content-Type-Options"), "nosniff");
  EXPECT_EQ(page.Header("X-Frame-Options"), "DENY");
  EXPECT_FALSE(page.Header("X-Request-Id").empty());
  EXPECT_EQ(Call("GET", "/healthz", "", {{"X-Request-Id", "ops-7"}}).Header("X-Request-Id"),
            "ops-7");
  EXPECT_FALSE(Call("GET", "/metrics").Header("X-Request-Id").empty());
  EXPECT_EQ(Call("POST", "/healthz", "{}").status, 405);
  EXPECT_EQ(Call("HEAD", "/healthz").status, 405);  // GET only: no body-less variant.

  // Without its upstream the gateway is alive but not ready.
  scheduler()->Kill();
  EXPECT_EQ(Call("GET", "/healthz").status, 200);
  HttpResult ready = Call("GET", "/readyz");
  EXPECT_EQ(ready.status, 503);
  HttpResult get = Call("GET", "/v1/jobs");
  EXPECT_EQ(get.status, 503) << get.body;
}

TEST_F(GatewayTest, KeepAliveServesPipelinedRequestsInOrder) {
  ASSERT_NO_FATAL_FAILURE(Up());
  std::string raw =
      "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
      "GET /v1/jobs/7d0b3c1e-1b7e-4d8e-9a51-0c8a3a8f2a11 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
      "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  std::string out = RawHttpExchange(gateway_port(), raw, 3);
  size_t first = out.find("HTTP/1.1 200");
  size_t second = out.find("HTTP/1.1 404");
  size_t third = out.find("HTTP/1.1 200", first + 1);
  ASSERT_NE(first, std::string::npos) << out;
  ASSERT_NE(second, std::string::npos) << out;
  ASSERT_NE(third, std::string::npos) << out;
  EXPECT_LT(first, second);
  EXPECT_LT(second, third);
  // A malformed request gets 400 and the connection closes.
  std::string garbage = RawHttpExchange(gateway_port(), "NOT HTTP AT ALL\r\n\r\n", 1);
  EXPECT_THAT(garbage, StartsWith("HTTP/1.1 400"));
}

}  // namespace
}  // namespace aijobs::testing
