#include "workers/openai/curl_loop.h"

#include <memory>
#include <string>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "tests/fake_openai/fake_openai_server.h"

namespace aijobs::openai {
namespace {

using fake_openai::FakeOpenAiServer;
using fake_openai::ParseBehavior;

class RecordingHandler : public TransferHandler {
 public:
  void OnStatus(long status) override {
    absl::MutexLock lock(&mu_);
    statuses_.push_back(status);
  }
  void OnHeader(absl::string_view name, absl::string_view value) override {
    absl::MutexLock lock(&mu_);
    headers_ += absl::StrCat(name, "=", value, ";");
  }
  bool OnData(absl::string_view bytes) override {
    absl::MutexLock lock(&mu_);
    body_.append(bytes.data(), bytes.size());
    ++data_calls_;
    return true;
  }
  void OnComplete(const TransferResult& result) override {
    absl::MutexLock lock(&mu_);
    result_ = result;
    ++completions_;
  }
  bool WaitDone(absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return completions_ > 0; };
    return mu_.AwaitWithTimeout(absl::Condition(&done), timeout);
  }
  bool WaitData(absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto some = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return data_calls_ > 0; };
    return mu_.AwaitWithTimeout(absl::Condition(&some), timeout);
  }

  absl::Mutex mu_;
  std::vector<long> statuses_;
  std::string headers_;
  std::string body_;
  int data_calls_ = 0;
  int completions_ = 0;
  TransferResult result_;
};

HttpRequest ChatRequest(const FakeOpenAiServer& server, const std::string& directive) {
  HttpRequest r;
  r.url = server.base_url() + "/chat/completions";
  r.headers = {"Content-Type: application/json", "X-Fake-Behavior: " + directive};
  r.body = R"({"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]})";
  return r;
}

class CurlLoopTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(server_.Start().ok()); }
  FakeOpenAiServer server_;
  CurlLoop loop_;
};

TEST_F(CurlLoopTest, StreamsBodyAndReportsStatusAndHeaders) {
  auto h = std::make_shared<RecordingHandler>();
  loop_.Start(ChatRequest(server_, "tokens=3 x-test=yes"), h);
  ASSERT_TRUE(h->WaitDone(absl::Seconds(10)));
  absl::MutexLock lock(&h->mu_);
  EXPECT_EQ(h->result_.code, CURLE_OK) << h->result_.error;
  EXPECT_EQ(h->result_.http_status, 200);
  EXPECT_EQ(h->statuses_, std::vector<long>{200});
  EXPECT_NE(h->headers_.find("x-test=yes;"), std::string::npos) << h->headers_;
  EXPECT_NE(h->body_.find("tok2"), std::string::npos);
  EXPECT_NE(h->body_.find("data: [DONE]"), std::string::npos);
}

TEST_F(CurlLoopTest, IdleTimeoutAbortsAStalledStream) {
  auto h = std::make_shared<RecordingHandler>();
  HttpRequest r = ChatRequest(server_, "tokens=5 stall_after=1");
  r.idle_timeout = absl::Milliseconds(300);
  absl::Time start = absl::Now();
  loop_.Start(std::move(r), h);
  ASSERT_TRUE(h->WaitDone(absl::Seconds(10)));
  absl::Duration took = absl::Now() - start;
  absl::MutexLock lock(&h->mu_);
  EXPECT_EQ(h->result_.code, CURLE_OPERATION_TIMEDOUT);
  EXPECT_EQ(h->result_.timeout, TransferTimeout::kIdle);
  EXPECT_GE(took, absl::Milliseconds(290));
  EXPECT_LT(took, absl::Seconds(3));
}

TEST_F(CurlLoopTest, FirstByteTimeout) {
  auto h = std::make_shared<RecordingHandler>();
  HttpRequest r = ChatRequest(server_, "tokens=5 ttft_ms=5000");
  r.first_byte_timeout = absl::Milliseconds(200);
  loop_.Start(std::move(r), h);
  ASSERT_TRUE(h->WaitDone(absl::Seconds(10)));
  absl::MutexLock lock(&h->mu_);
  EXPECT_EQ(h->result_.timeout, TransferTimeout::kFirstByte);
}

TEST_F(CurlLoopTest, CancelStopsCallbacksAndClosesTheConnection) {
  auto h = std::make_shared<RecordingHandler>();
  CurlLoop::TransferId id = loop_.Start(ChatRequest(server_, "tokens=1000 rate=50"), h);
  ASSERT_TRUE(h->WaitData(absl::Seconds(10)));
  loop_.Cancel(id);
  EXPECT_TRUE(server_.WaitForClientDisconnects(1, absl::Seconds(10)));
  absl::MutexLock lock(&h->mu_);
  EXPECT_EQ(h->completions_, 0);
}

TEST_F(CurlLoopTest, ConnectionRefusedCompletesWithError) {
  auto h = std::make_shared<RecordingHandler>();
  FakeOpenAiServer stopped;
  ASSERT_TRUE(stopped.Start().ok());
  int port = stopped.port();
  stopped.Stop();
  HttpRequest r;
  r.url = absl::StrCat("http://127.0.0.1:", port, "/v1/chat/completions");
  loop_.Start(std::move(r), h);
  ASSERT_TRUE(h->WaitDone(absl::Seconds(10)));
  absl::MutexLock lock(&h->mu_);
  EXPECT_EQ(h->result_.code, CURLE_COULDNT_CONNECT) << h->result_.error;
}

TEST_F(CurlLoopTest, TimersRunInOrderAndCanBeCancelled) {
  absl::Mutex mu;
  std::vector<int> ran;
  absl::Time now = absl::Now();
  loop_.RunAt(now + absl::Milliseconds(60), [&] {
    absl::MutexLock l(&mu);
    ran.push_back(2);
  });
  loop_.RunAt(now + absl::Milliseconds(20), [&] {
    absl::MutexLock l(&mu);
    ran.push_back(1);
  });
  CurlLoop::TimerId dropped = loop_.RunAt(now + absl::Milliseconds(40), [&] {
    absl::MutexLock l(&mu);
    ran.push_back(9);
  });
  EXPECT_TRUE(loop_.CancelTimer(dropped));
  absl::MutexLock lock(&mu);
  auto two = [&] { return ran.size() >= 2; };
  ASSERT_TRUE(mu.AwaitWithTimeout(absl::Condition(&two), absl::Seconds(5)));
  EXPECT_EQ(ran, (std::vector<int>{1, 2}));
  EXPECT_GE(absl::Now() - now, absl::Milliseconds(59));
}

}  // namespace
}  // namespace aijobs::openai
