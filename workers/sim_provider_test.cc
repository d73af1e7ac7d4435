#include "workers/sim_provider.h"

#include <atomic>
#include <cmath>
#include <memory>
#include <thread>
#include <vector>

#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "workers/test_util.h"

namespace aijobs::worker {
namespace {

using ::testing::HasSubstr;
using testing::JsonStruct;
using testing::RecordingChatSink;

constexpr absl::Duration kWait = absl::Seconds(10);

SimOptions Fast() {
  SimOptions o;
  o.ttft = absl::ZeroDuration();
  o.tokens_per_s = 0;
  o.tokens = 12;
  return o;
}

ChatRequest Prompt(const std::string& text, int attempt = 1) {
  ChatRequest r;
  r.messages.push_back({"user", text});
  r.attempt = attempt;
  return r;
}

// Runs one chat call to its end and returns the sink.
std::shared_ptr<RecordingChatSink> RunChat(SimProvider& sim, const ChatRequest& request) {
  auto sink = std::make_shared<RecordingChatSink>();
  auto call = sim.StartChat(request, sink);
  EXPECT_TRUE(sink->WaitFinished(kWait));
  return sink;
}

TEST(SimProviderTest, SamePromptGivesSameTextAndTokenCount) {
  SimProvider sim(Fast());
  auto a = RunChat(sim, Prompt("Tell me about durable queues"));
  auto b = RunChat(sim, Prompt("Tell me about durable queues"));
  auto c = RunChat(sim, Prompt("Something else entirely"));

  ASSERT_FALSE(a->error().has_value());
  EXPECT_EQ(a->deltas().size(), 12u);
  EXPECT_EQ(a->text(), b->text());
  EXPECT_NE(a->text(), c->text());
  // Words separated by single spaces: 12 tokens are 12 words.
  std::vector<std::string> words = absl::StrSplit(a->text(), ' ');
  EXPECT_EQ(words.size(), 12u);
  for (const std::string& w : words) EXPECT_FALSE(w.empty());
  EXPECT_EQ(a->usage().completion_tokens, 12);
  EXPECT_EQ(a->usage().prompt_tokens, 5);
  EXPECT_EQ(a->model(), "sim-1");
  // The helpers tell the same story as the provider.
  std::vector<ChatMessage> messages = {{"user", "Tell me about durable queues"}};
  EXPECT_EQ(absl::StrJoin(SimTokens(SimPromptSeed(messages), 12), ""), a->text());
}

TEST(SimProviderTest, OverridesAndMaxTokensSetLength) {
  SimProvider sim(Fast());
  ChatRequest r = Prompt("hello");
  r.provider_options = JsonStruct(R"({"tokens": 3})");
  EXPECT_EQ(RunChat(sim, r)->deltas().size(), 3u);

  ChatRequest capped = Prompt("hello");
  capped.max_tokens = 5;
  capped.model = "my-model";
  auto sink = RunChat(sim, capped);
  EXPECT_EQ(sink->deltas().size(), 5u);
  EXPECT_EQ(sink->model(), "my-model");
}

TEST(SimProviderTest, FailAttemptsFailsEarlyAttemptsOnly) {
  SimProvider sim(Fast());
  for (int attempt = 1; attempt <= 3; ++attempt) {
    ChatRequest r = Prompt("flaky", attempt);
    r.provider_options = JsonStruct(R"({"fail_attempts": 2, "tokens": 4})");
    auto sink = RunChat(sim, r);
    if (attempt <= 2) {
      ASSERT_TRUE(sink->error().has_value()) << "attempt " << attempt;
      EXPECT_EQ(sink->error()->code, "SIM_FAILURE");
      EXPECT_TRUE(sink->error()->retryable);
      EXPECT_TRUE(sink->deltas().empty());
    } else {
      EXPECT_FALSE(sink->error().has_value());
      EXPECT_EQ(sink->deltas().size(), 4u);
    }
  }
}

TEST(SimProviderTest, FailAfterTokensEmitsThatManyThenErrors) {
  SimProvider sim(Fast());
  ChatRequest r = Prompt("partial");
  r.provider_options = JsonStruct(
      R"({"error_rate": 1, "fail_after_tokens": 3, "tokens": 10, "retryable": false,
          "retry_after_ms": 250, "tokens_per_s": 1000})");
  auto sink = RunChat(sim, r);
  EXPECT_EQ(sink->deltas().size(), 3u);
  ASSERT_TRUE(sink->error().has_value());
  EXPECT_EQ(sink->error()->code, "SIM_FAILURE");
  EXPECT_FALSE(sink->error()->retryable);
  EXPECT_EQ(sink->error()->retry_after, absl::Milliseconds(250));
  EXPECT_EQ(sink->events_after_finish(), 0);
}

TEST(SimProviderTest, DefaultErrorRateFromOptions) {
  SimOptions o = Fast();
  o.error_rate = 1;
  SimProvider sim(o);
  auto sink = RunChat(sim, Prompt("x"));
  ASSERT_TRUE(sink->error().has_value());
  EXPECT_EQ(sink->error()->code, "SIM_FAILURE");
}

TEST(SimProviderTest, BadOverridesFailAsInvalidInput) {
  SimProvider sim(Fast());
  ChatRequest r = Prompt("x");
  r.provider_options = JsonStruct(R"({"tokens": "many"})");
  auto sink = RunChat(sim, r);
  ASSERT_TRUE(sink->error().has_value());
  EXPECT_EQ(sink->error()->code, "INVALID_INPUT");
  EXPECT_FALSE(sink->error()->retryable);
  EXPECT_THAT(sink->error()->message, HasSubstr("input.sim.tokens"));

  EXPECT_THAT(
      std::string(ApplySimOverrides(SimOptions{}, JsonStruct(R"({"ttft": 5})")).status().message()),
      HasSubstr("input.sim.ttft is not a sim option"));
  EXPECT_FALSE(ApplySimOverrides(SimOptions{}, JsonStruct(R"({"error_rate": 2})")).ok());
  absl::StatusOr<SimOptions> ok = ApplySimOverrides(
      SimOptions{}, JsonStruct(R"({"ttft_ms": 5, "dims": 3, "retryable": false})"));
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->ttft, absl::Milliseconds(5));
  EXPECT_EQ(ok->dims, 3);
  EXPECT_FALSE(ok->retryable);
}

TEST(SimProviderTest, TtftAndTokenRatePaceTheStream) {
  SimProvider sim(Fast());
  ChatRequest r = Prompt("paced");
  // 50 ms to the first token, then 4 more at 50/s: about 130 ms in all.
  r.provider_options = JsonStruct(R"({"ttft_ms": 50, "tokens_per_s": 50, "tokens": 5})");
  absl::Time start = absl::Now();
  auto sink = RunChat(sim, r);
  absl::Duration took = absl::Now() - start;
  EXPECT_EQ(sink->deltas().size(), 5u);
  EXPECT_GE(took, absl::Milliseconds(100));
  EXPECT_LT(took, absl::Seconds(5));
}

TEST(SimProviderTest, CancelStopsCallbacks) {
  SimProvider sim(Fast());
  ChatRequest r = Prompt("long");
  r.provider_options = JsonStruct(R"({"tokens": 100000, "tokens_per_s": 500})");
  auto sink = std::make_shared<RecordingChatSink>();
  auto call = sim.StartChat(r, sink);
  // Wait for a couple of tokens, then cancel.
  ASSERT_TRUE(sink->WaitDeltas(2, kWait));
  call->Cancel();
  size_t after_cancel = sink->deltas().size();
  // A later call that needs several token intervals serves as the barrier.
  ChatRequest barrier = Prompt("barrier");
  barrier.provider_options = JsonStruct(R"({"ttft_ms": 50, "tokens": 1})");
  RunChat(sim, barrier);
  EXPECT_EQ(sink->deltas().size(), after_cancel);
  EXPECT_FALSE(sink->finished());
}

// A sink that cancels its own call from inside its first OnDelta.
class SelfCancellingSink : public RecordingChatSink {
 public:
  void OnDelta(const std::string& text) override {
    RecordingChatSink::OnDelta(text);
    absl::MutexLock lock(&call_mu_);
    if (call_ != nullptr) call_->Cancel();
  }
  void set_call(LlmCall* call) {
    absl::MutexLock lock(&call_mu_);
    call_ = call;
  }

 private:
  absl::Mutex call_mu_;
  LlmCall* call_ = nullptr;
};

TEST(SimProviderTest, CancelFromInsideCallbackIsSafe) {
  SimProvider sim(Fast());
  ChatRequest r = Prompt("self");
  r.provider_options = JsonStruct(R"({"ttft_ms": 20, "tokens": 10})");
  auto sink = std::make_shared<SelfCancellingSink>();
  auto call = sim.StartChat(r, sink);
  sink->set_call(call.get());
  ChatRequest barrier = Prompt("barrier");
  barrier.provider_options = JsonStruct(R"({"ttft_ms": 100, "tokens": 1})");
  RunChat(sim, barrier);
  EXPECT_EQ(sink->deltas().size(), 1u);
  EXPECT_FALSE(sink->finished());
}

TEST(SimProviderTest, HundredsOfConcurrentCallsShareOneTimerThread) {
  SimProvider sim(Fast());
  std::vector<std::shared_ptr<RecordingChatSink>> sinks;
  std::vector<std::unique_ptr<LlmCall>> calls;
  for (int i = 0; i < 500; ++i) {
    ChatRequest r = Prompt("job " + std::to_string(i));
    r.provider_options = JsonStruct(R"({"ttft_ms": 20, "tokens_per_s": 200, "tokens": 5})");
    sinks.push_back(std::make_shared<RecordingChatSink>());
    calls.push_back(sim.StartChat(r, sinks.back()));
  }
  for (auto& s : sinks) {
    ASSERT_TRUE(s->WaitFinished(kWait));
    EXPECT_EQ(s->deltas().size(), 5u);
  }
}

class RecordingEmbedSink : public EmbedSink {
 public:
  void OnDone(std::vector<std::vector<float>> vectors, const Usage&, const std::string&) override {
    absl::MutexLock lock(&mu_);
    vectors_ = std::move(vectors);
    done_ = true;
  }
  void OnError(const ProviderError& error) override {
    absl::MutexLock lock(&mu_);
    error_ = error;
    done_ = true;
  }
  bool Wait() {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(absl::Condition(&done_), kWait);
  }
  std::vector<std::vector<float>> vectors() {
    absl::MutexLock lock(&mu_);
    return vectors_;
  }
  std::optional<ProviderError> error() {
    absl::MutexLock lock(&mu_);
    return error_;
  }

 private:
  absl::Mutex mu_;
  bool done_ = false;
  std::vector<std::vector<float>> vectors_;
  std::optional<ProviderError> error_;
};

TEST(SimProviderTest, EmbeddingsAreDeterministicUnitVectors) {
  SimProvider sim(Fast());
  EmbedRequest r;
  r.texts = {"alpha", "beta", "alpha"};
  r.provider_options = JsonStruct(R"({"dims": 16})");
  auto sink = std::make_shared<RecordingEmbedSink>();
  auto call = sim.StartEmbed(r, sink);
  ASSERT_TRUE(sink->Wait());
  auto v = sink->vectors();
  ASSERT_EQ(v.size(), 3u);
  for (const auto& vec : v) {
    ASSERT_EQ(vec.size(), 16u);
    double norm = 0;
    for (float x : vec) norm += x * x;
    EXPECT_NEAR(std::sqrt(norm), 1.0, 1e-4);
  }
  EXPECT_EQ(v[0], v[2]);
  EXPECT_NE(v[0], v[1]);

  EmbedRequest failing;
  failing.texts = {"x"};
  failing.provider_options = JsonStruct(R"({"fail_attempts": 1})");
  auto failed = std::make_shared<RecordingEmbedSink>();
  auto call2 = sim.StartEmbed(failing, failed);
  ASSERT_TRUE(failed->Wait());
  ASSERT_TRUE(failed->error().has_value());
  EXPECT_EQ(failed->error()->code, "SIM_FAILURE");
}

// Counts callbacks that run after the test's Cancel() returned; each lingers a little so that
// a Cancel() from another thread often lands while one is running.
class LateCallbackSink : public ChatSink {
 public:
  void OnDelta(const std::string& text) override {
    Linger();
    ++deltas;
  }
  void OnDone(const Usage& usage, const std::string& model) override { Linger(); }
  void OnError(const ProviderError& error) override { Linger(); }
  bool WaitDeltas(int n) {
    absl::Time until = absl::Now() + kWait;
    while (deltas.load() < n && absl::Now() < until) absl::SleepFor(absl::Microseconds(200));
    return deltas.load() >= n;
  }
  std::atomic<bool> cancel_returned{false};
  std::atomic<int> late{0};
  std::atomic<int> deltas{0};

 private:
  void Linger() {
    if (cancel_returned.load()) ++late;
    for (int i = 0; i < 100; ++i) std::this_thread::yield();
    if (cancel_returned.load()) ++late;
  }
};

TEST(SimProviderTest, CancelFromOtherThreadsWhileTokensFlow) {
  SimProvider sim(Fast());
  constexpr int kCalls = 8;
  std::vector<std::shared_ptr<LateCallbackSink>> sinks;
  std::vector<std::unique_ptr<LlmCall>> calls;
  ChatRequest r = Prompt("long");
  r.provider_options = JsonStruct(R"({"tokens": 1000000})");  // all in one timer step
  for (int i = 0; i < kCalls; ++i) {
    sinks.push_back(std::make_shared<LateCallbackSink>());
    calls.push_back(sim.StartChat(r, sinks.back()));
  }
  std::vector<std::thread> cancellers;
  for (int i = 0; i < kCalls; ++i) {
    cancellers.emplace_back([&, i] {
      EXPECT_TRUE(sinks[i]->WaitDeltas(1 + 10 * i));
      calls[i]->Cancel();
      sinks[i]->cancel_returned = true;
    });
  }
  for (auto& t : cancellers) t.join();
  RunChat(sim, Prompt("barrier"));  // the timer thread has left every cancelled step
  calls.clear();
  for (auto& s : sinks) EXPECT_EQ(s->late.load(), 0);
}

// Starts the next call on the same provider from inside OnDone, on the timer thread.
class ChainingSink : public RecordingChatSink {
 public:
  ChainingSink(SimProvider* sim, int remaining) : sim_(sim), remaining_(remaining) {}
  void OnDone(const Usage& usage, const std::string& model) override {
    if (remaining_ > 0) {
      auto next = std::make_shared<ChainingSink>(sim_, remaining_ - 1);
      std::unique_ptr<LlmCall> call = sim_->StartChat(Prompt("next"), next);
      absl::MutexLock lock(&chain_mu_);
      next_ = std::move(next);
      next_call_ = std::move(call);
    }
    RecordingChatSink::OnDone(usage, model);
  }
  // Waits for the end of the whole chain.
  bool WaitChain() {
    if (!WaitFinished(kWait)) return false;
    std::shared_ptr<ChainingSink> next;
    {
      absl::MutexLock lock(&chain_mu_);
      next = next_;
    }
    return next == nullptr || next->WaitChain();
  }

 private:
  SimProvider* const sim_;
  const int remaining_;
  absl::Mutex chain_mu_;
  std::shared_ptr<ChainingSink> next_ ABSL_GUARDED_BY(chain_mu_);
  std::unique_ptr<LlmCall> next_call_ ABSL_GUARDED_BY(chain_mu_);
};

TEST(SimProviderTest, ACallbackMayStartAnotherCall) {
  SimProvider sim(Fast());
  auto first = std::make_shared<ChainingSink>(&sim, 20);
  auto call = sim.StartChat(Prompt("first"), first);
  EXPECT_TRUE(first->WaitChain());
}

}  // namespace
}  // namespace aijobs::worker
