#include "workers/openai/openai_provider.h"

#include <google/protobuf/util/json_util.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "aijobs/v1/openai.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/fake_openai/fake_openai_server.h"

namespace aijobs::openai {
namespace {

using fake_openai::FakeOpenAiServer;
using fake_openai::FakeToken;
using fake_openai::ParseBehavior;
using ::testing::HasSubstr;
using worker::ChatRequest;
using worker::ProviderError;

fake_openai::Behavior B(const std::string& directive) {
  absl::StatusOr<fake_openai::Behavior> b = ParseBehavior(directive);
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? *b : fake_openai::Behavior();
}

std::string ExpectedText(int tokens) {
  std::string t;
  for (int i = 0; i < tokens; ++i) t += FakeToken(i);
  return t;
}

// Records one chat call; optionally cancels its own call from inside the n-th OnDelta.
class ChatRecorder : public worker::ChatSink {
 public:
  void OnDelta(const std::string& text) override {
    absl::MutexLock lock(&mu_);
    if (finished_ || cancelled_) ++after_end_;
    deltas_.push_back(text);
    if (cancel_at_ > 0 && static_cast<int>(deltas_.size()) == cancel_at_) {
      auto has_call = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return call_ != nullptr; };
      mu_.AwaitWithTimeout(absl::Condition(&has_call), absl::Seconds(5));
      worker::LlmCall* call = call_;
      cancelled_ = true;
      mu_.Unlock();
      call->Cancel();  // from inside our own callback
      mu_.Lock();
    }
  }
  void OnDone(const worker::Usage& usage, const std::string& model) override {
    absl::MutexLock lock(&mu_);
    if (finished_ || cancelled_) ++after_end_;
    finished_ = true;
    usage_ = usage;
    model_ = model;
  }
  void OnError(const ProviderError& error) override {
    absl::MutexLock lock(&mu_);
    if (finished_ || cancelled_) ++after_end_;
    finished_ = true;
    error_ = error;
  }
  bool WaitFinished(absl::Duration timeout = absl::Seconds(20)) {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(absl::Condition(&finished_), timeout);
  }
  bool WaitDeltas(size_t n, absl::Duration timeout = absl::Seconds(20)) {
    absl::MutexLock lock(&mu_);
    auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return deltas_.size() >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), timeout);
  }
  void CancelAt(int n) {
    absl::MutexLock lock(&mu_);
    cancel_at_ = n;
  }
  void SetCall(worker::LlmCall* call) {
    absl::MutexLock lock(&mu_);
    call_ = call;
  }
  std::string text() {
    absl::MutexLock lock(&mu_);
    std::string t;
    for (const auto& d : deltas_) t += d;
    return t;
  }
  size_t delta_count() {
    absl::MutexLock lock(&mu_);
    return deltas_.size();
  }
  std::optional<ProviderError> error() {
    absl::MutexLock lock(&mu_);
    return error_;
  }
  bool finished() {
    absl::MutexLock lock(&mu_);
    return finished_;
  }

  absl::Mutex mu_;
  std::vector<std::string> deltas_ ABSL_GUARDED_BY(mu_);
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  int after_end_ ABSL_GUARDED_BY(mu_) = 0;
  int cancel_at_ ABSL_GUARDED_BY(mu_) = 0;
  worker::LlmCall* call_ ABSL_GUARDED_BY(mu_) = nullptr;
  worker::Usage usage_ ABSL_GUARDED_BY(mu_);
  std::string model_ ABSL_GUARDED_BY(mu_);
  std::optional<ProviderError> error_ ABSL_GUARDED_BY(mu_);
};

class EmbedRecorder : public worker::EmbedSink {
 public:
  void OnDone(std::vector<std::vector<float>> vectors, const worker::Usage& usage,
              const std::string& model) override {
    absl::MutexLock lock(&mu_);
    finished_ = true;
    vectors_ = std::move(vectors);
    usage_ = usage;
  }
  void OnError(const ProviderError& error) override {
    absl::MutexLock lock(&mu_);
    finished_ = true;
    error_ = error;
  }
  bool WaitFinished() {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(absl::Condition(&finished_), absl::Seconds(20));
  }
  absl::Mutex mu_;
  bool finished_ = false;
  std::vector<std::vector<float>> vectors_;
  worker::Usage usage_;
  std::optional<ProviderError> error_;
};

class RecordingObserver : public worker::RateLimitObserver {
 public:
  void OnRateLimitHeaders(const worker::RateLimitHeaders& h) override {
    absl::MutexLock lock(&mu_);
    seen_.push_back(h);
  }
  std::vector<worker::RateLimitHeaders> seen() {
    absl::MutexLock lock(&mu_);
    return seen_;
  }
  absl::Mutex mu_;
  std::vector<worker::RateLimitHeaders> seen_;
};

ChatRequest Hello(const std::string& text = "say hello to the world") {
  ChatRequest r;
  r.messages = {{"system", "be brief"}, {"user", text}};
  return r;
}

class OpenAiProviderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(server_.Start().ok());
    setenv("AIJOBS_TEST_OPENAI_KEY", "sk-test-123", 1);
  }

  v1::Deployment Config() {
    v1::Deployment d;
    d.set_name("fake");
    d.set_provider("openai");
    d.set_base_url(server_.base_url() + "/");
    d.set_model("gpt-test");
    d.set_api_key_env("AIJOBS_TEST_OPENAI_KEY");
    (*d.mutable_headers())["OpenAI-Organization"] = "org-1";
    d.mutable_retry()->mutable_initial_backoff()->set_nanos(20'000'000);  // 20 ms
    return d;
  }

  std::unique_ptr<OpenAiProvider> Provider(const v1::Deployment& config,
                                           worker::RateLimitObserver* observer = nullptr) {
    auto p = OpenAiProvider::Create(config, &loop_, observer);
    EXPECT_TRUE(p.ok()) << p.status();
    return p.ok() ? *std::move(p) : nullptr;
  }

  // Runs one chat call to its end.
  std::shared_ptr<ChatRecorder> Chat(OpenAiProvider* p, ChatRequest request = Hello()) {
    auto sink = std::make_shared<ChatRecorder>();
    auto call = p->StartChat(request, sink);
    EXPECT_TRUE(sink->WaitFinished());
    return sink;
  }

  FakeOpenAiServer server_;
  CurlLoop loop_;
};

TEST_F(OpenAiProviderTest, StreamsDeltasInOrderAndReportsUsage) {
  server_.Enqueue(B("tokens=6 rate=200"));
  auto p = Provider(Config());
  ChatRequest r = Hello();
  r.max_tokens = 50;
  r.temperature = 0.0;
  auto sink = Chat(p.get(), r);
  absl::MutexLock lock(&sink->mu_);
  ASSERT_FALSE(sink->error_.has_value()) << sink->error_->message;
  ASSERT_EQ(sink->deltas_.size(), 6u);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(sink->deltas_[i], FakeToken(i));
  EXPECT_EQ(sink->usage_.completion_tokens, 6);
  EXPECT_EQ(sink->usage_.prompt_tokens, 7);  // words of both messages
  EXPECT_EQ(sink->model_, "gpt-test");

  ASSERT_EQ(server_.request_count(), 1u);
  fake_openai::RecordedRequest req = server_.requests()[0];
  EXPECT_EQ(req.target, "/v1/chat/completions");
  EXPECT_EQ(req.Header("authorization"), "Bearer sk-test-123");
  EXPECT_EQ(req.Header("openai-organization"), "org-1");
  ChatCompletionRequest body;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(req.body, &body).ok()) << req.body;
  EXPECT_EQ(body.model(), "gpt-test");
  EXPECT_TRUE(body.stream());
  EXPECT_TRUE(body.stream_options().include_usage());
  EXPECT_EQ(body.max_tokens(), 50);
  EXPECT_TRUE(body.has_temperature());  // 0.0 is sent, not dropped as a default
  ASSERT_EQ(body.messages_size(), 2);
  EXPECT_EQ(body.messages(1).content(), "say hello to the world");
  EXPECT_THAT(req.body, HasSubstr("\"include_usage\":true"));
  EXPECT_THAT(req.body, HasSubstr("\"max_tokens\":50"));
}

TEST_F(OpenAiProviderTest, RetryAfterSecondsIsHonoured) {
  server_.Enqueue(B("status=429 retry_after=1"));
  auto p = Provider(Config());
  auto sink = Chat(p.get());
  EXPECT_FALSE(sink->error().has_value());
  EXPECT_EQ(sink->text(), ExpectedText(5));
  auto reqs = server_.requests();
  ASSERT_EQ(reqs.size(), 2u);
  absl::Duration wait = reqs[1].arrival - reqs[0].arrival;
  EXPECT_GE(wait, absl::Milliseconds(990));
  EXPECT_LT(wait, absl::Milliseconds(1800));
}

TEST_F(OpenAiProviderTest, RetryAfterMsWinsOverRetryAfter) {
  server_.Enqueue(B("status=429 retry_after_ms=300 retry_after=30"));
  auto p = Provider(Config());
  auto sink = Chat(p.get());
  EXPECT_FALSE(sink->error().has_value());
  auto reqs = server_.requests();
  ASSERT_EQ(reqs.size(), 2u);
  absl::Duration wait = reqs[1].arrival - reqs[0].arrival;
  EXPECT_GE(wait, absl::Milliseconds(295));
  EXPECT_LT(wait, absl::Milliseconds(1500));
}

TEST_F(OpenAiProviderTest, ServiceUnavailableIsRetriedThenSucceeds) {
  server_.Enqueue(B("status=503"));
  server_.Enqueue(B("status=500"));
  auto p = Provider(Config());
  auto sink = Chat(p.get());
  EXPECT_FALSE(sink->error().has_value());
  EXPECT_EQ(sink->text(), ExpectedText(5));
  EXPECT_EQ(server_.request_count(), 3u);
}

TEST_F(OpenAiProviderTest, MaxRetriesExceededFailsRetryablyWithTheServersHint) {
  server_.SetDefault(B("status=429 retry_after_ms=50"));
  auto p = Provider(Config());
  auto sink = Chat(p.get());
  auto e = sink->error();
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->code, "RATE_LIMITED");
  EXPECT_TRUE(e->retryable);
  EXPECT_EQ(e->retry_after, absl::Milliseconds(50));
  EXPECT_THAT(e->message, HasSubstr("HTTP 429"));
  EXPECT_EQ(server_.request_count(), 3u);  // 1 + max_retries (2)
}

TEST_F(OpenAiProviderTest, ZeroMaxRetriesMakesOneRequest) {
  server_.SetDefault(B("status=503"));
  v1::Deployment c = Config();
  c.mutable_retry()->set_max_retries(0);
  auto p = Provider(c);
  auto e = Chat(p.get())->error();
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->code, "PROVIDER_UNAVAILABLE");
  EXPECT_TRUE(e->retryable);
  EXPECT_EQ(e->retry_after, absl::ZeroDuration());
  EXPECT_EQ(server_.request_count(), 1u);
}

TEST_F(OpenAiProviderTest, BadRequestIsNotRetried) {
  server_.Enqueue(B("status=400 error_message=model_does_not_exist"));
  auto p = Provider(Config());
  auto e = Chat(p.get())->error();
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->code, "PROVIDER_REJECTED");
  EXPECT_FALSE(e->retryable);
  EXPECT_THAT(e->message, HasSubstr("model_does_not_exist"));
  EXPECT_EQ(server_.request_count(), 1u);
}

TEST_F(OpenAiProviderTest, XShouldRetryOverridesTheStatus) {
  server_.Enqueue(B("status=503 should_retry=false"));
  auto p = Provider(Config());
  auto e = Chat(p.get())->error();
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(server_.request_count(), 1u);

  server_.Enqueue(B("status=400 should_retry=true"));
  auto sink = Chat(p.get());
  EXPECT_FALSE(sink->error().has_value());
  EXPECT_EQ(server_.request_count(), 3u);
}

TEST_F(OpenAiProviderTest, StreamCutAfterOutputFailsWithoutInCallRetry) {
  server_.Enqueue(B("tokens=10 cut_after=3"));
  auto p = Provider(Config());
  auto sink = Chat(p.get());
  EXPECT_EQ(sink->text(), ExpectedText(3));
  auto e = sink->error();
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->code, "PROVIDER_ERROR");
  EXPECT_TRUE(e->retryable);
  EXPECT_EQ(server_.request_count(), 1u);
}

TEST_F(OpenAiProviderTest, StreamCutBeforeOutputIsRetried) {
  server_.Enqueue(B("tokens=10 cut_after=0"));
  auto p = Provider(Config());
  auto sink = Chat(p.get());
  EXPECT_FALSE(sink->error().has_value());
  EXPECT_EQ(sink->text(), ExpectedText(5));
  EXPECT_EQ(server_.request_count(), 2u);
}

TEST_F(OpenAiProviderTest, MalformedChunkFailsRetryably) {
  server_.Enqueue(B("tokens=10 malformed_after=2"));
  auto p = Provider(Config());
  auto sink = Chat(p.get());
  EXPECT_EQ(sink->text(), ExpectedText(2));
  auto e = sink->error();
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->code, "PROVIDER_ERROR");
  EXPECT_TRUE(e->retryable);
  EXPECT_THAT(e->message, HasSubstr("malformed"));
  EXPECT_EQ(server_.request_count(), 1u);
}

TEST_F(OpenAiProviderTest, ErrorChunkMidStream) {
  server_.Enqueue(B("tokens=10 error_after=2 error_message=overloaded"));
  auto p = Provider(Config());
  auto sink = Chat(p.get());
  EXPECT_EQ(sink->text(), ExpectedText(2));
  auto e = sink->error();
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->code, "PROVIDER_ERROR");
  EXPECT_TRUE(e->retryable);
  EXPECT_THAT(e->message, HasSubstr("overloaded"));
  EXPECT_EQ(server_.request_count(), 1u);
}

TEST_F(OpenAiProviderTest, InvalidRequestErrorChunkIsNotRetryable) {
  server_.Enqueue(B("tokens=10 error_after=0 error_type=invalid_request_error"));
  auto p = Provider(Config());
  auto e = Chat(p.get())->error();
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->code, "PROVIDER_REJECTED");
  EXPECT_FALSE(e->retryable);
  EXPECT_EQ(server_.request_count(), 1u);
}

TEST_F(OpenAiProviderTest, StalledStreamTimesOutAfterTheIdleTimeout) {
  server_.Enqueue(B("tokens=10 stall_after=2"));
  v1::Deployment c = Config();
  c.mutable_timeouts()->mutable_idle()->set_nanos(300'000'000);
  auto p = Provider(c);
  auto sink = std::make_shared<ChatRecorder>();
  auto call = p->StartChat(Hello(), sink);
  ASSERT_TRUE(sink->WaitDeltas(2));
  absl::Time second_delta = absl::Now();
  ASSERT_TRUE(sink->WaitFinished());
  absl::Duration stalled = absl::Now() - second_delta;
  auto e = sink->error();
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->code, "TIMEOUT");
  EXPECT_TRUE(e->retryable);
  EXPECT_THAT(e->message, HasSubstr("stalled"));
  EXPECT_GE(stalled, absl::Milliseconds(250));
  EXPECT_LT(stalled, absl::Seconds(3));
  EXPECT_EQ(server_.request_count(), 1u);
}

TEST_F(OpenAiProviderTest, JobDeadlineBoundsTheCall) {
  server_.SetDefault(B("tokens=10 stall_after=0"));
  auto p = Provider(Config());
  ChatRequest r = Hello();
  r.deadline = absl::Now() + absl::Milliseconds(400);
  absl::Time start = absl::Now();
  auto e = Chat(p.get(), r)->error();
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->code, "TIMEOUT");
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
}

TEST_F(OpenAiProviderTest, ConnectionRefusedIsRetriedThenFails) {
  FakeOpenAiServer dead;
  ASSERT_TRUE(dead.Start().ok());
  std::string url = dead.base_url();
  dead.Stop();
  v1::Deployment c = Config();
  c.set_base_url(url);
  auto p = Provider(c);
  auto e = Chat(p.get())->error();
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->code, "PROVIDER_UNAVAILABLE");
  EXPECT_TRUE(e->retryable);
  EXPECT_THAT(e->message, HasSubstr("after 3 requests"));
}

TEST_F(OpenAiProviderTest, EmbeddingsComeBackInInputOrder) {
  auto p = Provider(Config());
  auto embed = [&](std::vector<std::string> texts) {
    worker::EmbedRequest r;
    r.texts = std::move(texts);
    auto sink = std::make_shared<EmbedRecorder>();
    auto call = p->StartEmbed(r, sink);
    EXPECT_TRUE(sink->WaitFinished());
    return sink;
  };
  server_.SetDefault(B("dims=4"));
  auto xy = embed({"x", "y"});
  auto yx = embed({"y", "x"});
  ASSERT_FALSE(xy->error_.has_value()) << xy->error_->message;
  ASSERT_FALSE(yx->error_.has_value()) << yx->error_->message;
  ASSERT_EQ(xy->vectors_.size(), 2u);
  EXPECT_EQ(xy->vectors_[0].size(), 4u);
  EXPECT_NE(xy->vectors_[0], xy->vectors_[1]);
  EXPECT_EQ(xy->vectors_[0], yx->vectors_[1]);
  EXPECT_EQ(xy->vectors_[1], yx->vectors_[0]);
  EXPECT_EQ(xy->usage_.prompt_tokens, 2);
  EXPECT_EQ(server_.requests()[0].target, "/v1/embeddings");
}

TEST_F(OpenAiProviderTest, EmbeddingErrorsAreRetried) {
  server_.Enqueue(B("status=502"));
  auto p = Provider(Config());
  worker::EmbedRequest r;
  r.texts = {"a", "b", "c"};
  auto sink = std::make_shared<EmbedRecorder>();
  auto call = p->StartEmbed(r, sink);
  ASSERT_TRUE(sink->WaitFinished());
  EXPECT_FALSE(sink->error_.has_value());
  EXPECT_EQ(sink->vectors_.size(), 3u);
  EXPECT_EQ(server_.request_count(), 2u);
}

TEST_F(OpenAiProviderTest, RateLimitHeadersReachTheObserver) {
  server_.Enqueue(
      B("x-ratelimit-limit-requests=500 x-ratelimit-limit-tokens=30000 "
        "x-ratelimit-remaining-requests=499 x-ratelimit-remaining-tokens=29000 "
        "x-ratelimit-reset-requests=120ms x-ratelimit-reset-tokens=6m0s"));
  server_.Enqueue(
      B("status=429 x-ratelimit-remaining-requests=0 "
        "x-ratelimit-reset-requests=1h2m3.5s retry_after_ms=10"));
  RecordingObserver observer;
  auto p = Provider(Config(), &observer);
  EXPECT_FALSE(Chat(p.get())->error().has_value());
  EXPECT_FALSE(Chat(p.get())->error().has_value());
  auto seen = observer.seen();
  ASSERT_EQ(seen.size(), 2u);  // the third (default) response has no such headers
  EXPECT_EQ(seen[0].limit_requests, 500);
  EXPECT_EQ(seen[0].limit_tokens, 30000);
  EXPECT_EQ(seen[0].remaining_requests, 499);
  EXPECT_EQ(seen[0].remaining_tokens, 29000);
  EXPECT_EQ(seen[0].reset_requests, absl::Milliseconds(120));
  EXPECT_EQ(seen[0].reset_tokens, absl::Minutes(6));
  EXPECT_EQ(seen[1].remaining_requests, 0);
  EXPECT_FALSE(seen[1].limit_requests.has_value());
  EXPECT_EQ(seen[1].reset_requests, absl::Hours(1) + absl::Minutes(2) + absl::Seconds(3.5));
}

TEST_F(OpenAiProviderTest, TwoHundredConcurrentStreamsOnOneLoop) {
  server_.SetDefault(B("tokens=20 rate=100"));
  auto p = Provider(Config());
  std::vector<std::shared_ptr<ChatRecorder>> sinks;
  std::vector<std::unique_ptr<worker::LlmCall>> calls;
  for (int i = 0; i < 200; ++i) {
    sinks.push_back(std::make_shared<ChatRecorder>());
    calls.push_back(p->StartChat(Hello(), sinks.back()));
  }
  absl::Time start = absl::Now();
  for (auto& s : sinks) {
    ASSERT_TRUE(s->WaitFinished(absl::Seconds(30)));
    ASSERT_FALSE(s->error().has_value()) << s->error()->message;
    EXPECT_EQ(s->text(), ExpectedText(20));
  }
  // 20 tokens at 100/s take 0.2 s; all 200 ran side by side, not one after the other.
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  EXPECT_EQ(server_.request_count(), 200u);
}

TEST_F(OpenAiProviderTest, CancelMidStreamStopsCallbacksAndClosesTheConnection) {
  server_.Enqueue(B("tokens=1000 rate=50"));
  auto p = Provider(Config());
  auto sink = std::make_shared<ChatRecorder>();
  auto call = p->StartChat(Hello(), sink);
  ASSERT_TRUE(sink->WaitDeltas(2));
  call->Cancel();
  size_t after_cancel = sink->delta_count();
  EXPECT_TRUE(server_.WaitForClientDisconnects(1, absl::Seconds(10)));
  EXPECT_EQ(sink->delta_count(), after_cancel);
  EXPECT_FALSE(sink->finished());
  call->Cancel();  // idempotent
  call.reset();
}

TEST_F(OpenAiProviderTest, CancelFromInsideOnDelta) {
  server_.Enqueue(B("tokens=50"));  // all in one write: the next deltas are already parsed
  auto p = Provider(Config());
  auto sink = std::make_shared<ChatRecorder>();
  sink->CancelAt(3);
  auto call = p->StartChat(Hello(), sink);
  sink->SetCall(call.get());
  EXPECT_TRUE(server_.WaitForRequests(1, absl::Seconds(10)));
  // The call ends without OnDone/OnError; wait for the loop to have dropped the transfer.
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (loop_.active_transfers() > 0 && absl::Now() < deadline)
    absl::SleepFor(absl::Milliseconds(5));
  EXPECT_EQ(loop_.active_transfers(), 0u);
  absl::MutexLock lock(&sink->mu_);
  EXPECT_EQ(sink->deltas_.size(), 3u);
  EXPECT_FALSE(sink->finished_);
  EXPECT_EQ(sink->after_end_, 0);
}

TEST_F(OpenAiProviderTest, DestroyingTheCallDuringBackoffCancelsTheRetry) {
  server_.SetDefault(B("status=503 retry_after_ms=300"));
  auto p = Provider(Config());
  auto sink = std::make_shared<ChatRecorder>();
  auto call = p->StartChat(Hello(), sink);
  ASSERT_TRUE(server_.WaitForRequests(1, absl::Seconds(10)));
  call.reset();
  // A retry would arrive 300 ms later; run a second call past that point to be sure.
  server_.SetDefault(B("tokens=1 ttft_ms=600"));
  auto other = Chat(p.get());
  EXPECT_EQ(server_.request_count(), 2u);
  EXPECT_FALSE(sink->finished());
}

// Records whether any callback ran after the test's Cancel() returned; each callback lingers
// a little so that Cancel() from another thread often lands while one is running.
class LateCallbackSink : public worker::ChatSink {
 public:
  void OnDelta(const std::string& text) override { Callback(); }
  void OnDone(const worker::Usage& usage, const std::string& model) override { Callback(); }
  void OnError(const ProviderError& error) override { Callback(); }

  bool WaitFirst() {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(absl::Condition(&any_), absl::Seconds(20));
  }
  std::atomic<bool> cancel_returned{false};
  std::atomic<int> late{0};

 private:
  void Callback() {
    if (cancel_returned.load()) ++late;
    for (int i = 0; i < 200; ++i) std::this_thread::yield();
    if (cancel_returned.load()) ++late;
    absl::MutexLock lock(&mu_);
    any_ = true;
  }
  absl::Mutex mu_;
  bool any_ ABSL_GUARDED_BY(mu_) = false;
};

// Cancel() from other threads while chunks stream in: once it returns no callback runs, and
// neither side deadlocks (the callback runs without the call's lock).
TEST_F(OpenAiProviderTest, CancelFromOtherThreadsWhileChunksArrive) {
  server_.SetDefault(B("tokens=100000 rate=2000"));
  auto p = Provider(Config());
  constexpr int kCalls = 8;
  std::vector<std::shared_ptr<LateCallbackSink>> sinks;
  std::vector<std::unique_ptr<worker::LlmCall>> calls;
  for (int i = 0; i < kCalls; ++i) {
    sinks.push_back(std::make_shared<LateCallbackSink>());
    calls.push_back(p->StartChat(Hello(), sinks.back()));
  }
  for (auto& s : sinks) ASSERT_TRUE(s->WaitFirst());
  std::vector<std::thread> cancellers;
  for (int i = 0; i < kCalls; ++i) {
    cancellers.emplace_back([&, i] {
      for (int k = 0; k < i * 50; ++k) std::this_thread::yield();  // staggered
      calls[i]->Cancel();
      sinks[i]->cancel_returned = true;
    });
  }
  for (auto& t : cancellers) t.join();
  EXPECT_TRUE(server_.WaitForClientDisconnects(kCalls, absl::Seconds(10)));
  calls.clear();
  for (auto& s : sinks) EXPECT_EQ(s->late.load(), 0);
}

TEST(OpenAiSettingsTest, ApiKeyErrorsNameTheField) {
  v1::Deployment d;
  d.set_name("gpt");
  d.set_base_url("https://api.openai.com/v1");
  d.set_api_key_env("AIJOBS_TEST_SURELY_UNSET_KEY");
  unsetenv("AIJOBS_TEST_SURELY_UNSET_KEY");
  absl::StatusOr<OpenAiSettings> s = ResolveSettings(d);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("api_key_env"));
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("AIJOBS_TEST_SURELY_UNSET_KEY"));

  d.clear_api_key_env();
  d.set_api_key_file("/nonexistent/key");
  s = ResolveSettings(d);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("api_key_file"));

  std::string path = ::testing::TempDir() + "/openai_key";
  FILE* f = fopen(path.c_str(), "w");
  ASSERT_NE(f, nullptr);
  fputs("sk-from-file\nsecond line\n", f);
  fclose(f);
  d.set_api_key_file(path);
  s = ResolveSettings(d);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->api_key, "sk-from-file");
  EXPECT_EQ(s->max_retries, 2);
  EXPECT_EQ(s->idle_timeout, absl::Seconds(30));

  d.set_base_url("ftp://x");
  s = ResolveSettings(d);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("base_url"));
}

TEST(OpenAiSettingsTest, KeyNeverAppearsInErrors) {
  setenv("AIJOBS_TEST_SECRET_KEY", "sk-very-secret", 1);
  v1::Deployment d;
  d.set_name("gpt");
  d.set_base_url("https://x/v1");
  d.set_api_key_env("AIJOBS_TEST_SECRET_KEY");
  d.mutable_timeouts()->mutable_idle()->set_seconds(-1);
  absl::StatusOr<OpenAiSettings> s = ResolveSettings(d);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("timeouts.idle"));
  EXPECT_THAT(std::string(s.status().message()), ::testing::Not(HasSubstr("sk-very-secret")));
}

TEST(RetryHintTest, ParsesMillisecondsSecondsAndDates) {
  absl::Time now = absl::FromUnixSeconds(1700000000);
  EXPECT_EQ(ParseRetryHint("250", std::nullopt, now), absl::Milliseconds(250));
  EXPECT_EQ(ParseRetryHint("1.5", "9", now), absl::Microseconds(1500));
  EXPECT_EQ(ParseRetryHint(std::nullopt, "2", now), absl::Seconds(2));
  EXPECT_EQ(ParseRetryHint(std::nullopt, "0", now), std::nullopt);
  EXPECT_EQ(ParseRetryHint(std::nullopt, "soon", now), std::nullopt);
  // 1700000000 is Tue, 14 Nov 2023 22:13:20 GMT.
  EXPECT_EQ(ParseRetryHint(std::nullopt, "Tue, 14 Nov 2023 22:13:25 GMT", now), absl::Seconds(5));
  EXPECT_EQ(ParseRetryHint(std::nullopt, "Tue, 14 Nov 2023 22:13:00 GMT", now), std::nullopt);
}

TEST(RateLimitDurationTest, ParsesGoStyleDurations) {
  EXPECT_EQ(ParseRateLimitDuration("1s"), absl::Seconds(1));
  EXPECT_EQ(ParseRateLimitDuration("6m0s"), absl::Minutes(6));
  EXPECT_EQ(ParseRateLimitDuration("20ms"), absl::Milliseconds(20));
  EXPECT_EQ(ParseRateLimitDuration("1h2m3.5s"),
            absl::Hours(1) + absl::Minutes(2) + absl::Milliseconds(3500));
  EXPECT_EQ(ParseRateLimitDuration("60"), absl::Seconds(60));
  EXPECT_EQ(ParseRateLimitDuration("later"), std::nullopt);
}

}  // namespace
}  // namespace aijobs::openai
