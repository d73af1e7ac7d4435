#include "workers/routing/routed_provider.h"

#include <google/protobuf/text_format.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "workers/routing/fake_provider.h"
#include "workers/routing/openai_factory.h"
#include "workers/test_util.h"

namespace aijobs::worker {
namespace {

using testing::FakeBehavior;
using testing::FakeDeployments;
using ::testing::HasSubstr;
using testing::RecordingChatSink;
using testing::RetryableError;

constexpr absl::Duration kWait = absl::Seconds(10);

v1::ProvidersConfig Config(const std::string& text) {
  v1::ProvidersConfig c;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &c)) << text;
  return c;
}

// Two deployments "a" (priority 0) and "b" (priority 1) in group "g".
constexpr char kTwoTiers[] = R"pb(
  deployments { name: "a" provider: "sim" model: "model-a" }
  deployments { name: "b" provider: "sim" model: "model-b" }
  model_groups {
    name: "g"
    members { deployment: "a" priority: 0 }
    members { deployment: "b" priority: 1 }
  }
  model_groups {
    name: "only-b"
    members { deployment: "b" }
  }
)pb";

ChatRequest Request(const std::string& model = "") {
  ChatRequest r;
  r.model = model;
  r.messages.push_back({"user", "hello"});
  return r;
}

struct Fixture {
  explicit Fixture(const std::string& config, RoutedProviderOptions options = {}) {
    auto p = RoutedProvider::Create(Config(config), fakes.Factory(), std::move(options));
    EXPECT_TRUE(p.ok()) << p.status();
    if (p.ok()) provider = std::move(*p);
  }
  // Runs one chat call to the end.
  std::shared_ptr<RecordingChatSink> Chat(const ChatRequest& r) {
    auto sink = std::make_shared<RecordingChatSink>();
    std::unique_ptr<LlmCall> call = provider->StartChat(r, sink);
    EXPECT_TRUE(sink->WaitFinished(kWait));
    return sink;
  }
  FakeDeployments fakes;
  std::unique_ptr<RoutedProvider> provider;
};

TEST(RoutedProviderTest, RoutesTheModelToItsGroupAndReportsTheDeployment) {
  Fixture f(kTwoTiers);
  auto sink = f.Chat(Request("g"));
  ASSERT_FALSE(sink->error()) << sink->error()->message;
  EXPECT_EQ(sink->text(), "fake answer");
  EXPECT_EQ(sink->model(), "a");
  EXPECT_EQ(f.fakes.at("a")->last_model(), "model-a");  // the deployment's model is sent
  EXPECT_EQ(f.fakes.at("b")->calls(), 0);

  auto only_b = f.Chat(Request("only-b"));
  EXPECT_EQ(only_b->model(), "b");
}

TEST(RoutedProviderTest, EmptyModelUsesTheDefaultGroup) {
  Fixture f(std::string(kTwoTiers) + "default_model_group: \"only-b\"");
  auto sink = f.Chat(Request(""));
  EXPECT_EQ(sink->model(), "b");
}

TEST(RoutedProviderTest, UnknownModelIsAnInvalidInputListingTheModels) {
  Fixture f(kTwoTiers);
  auto sink = f.Chat(Request("gpt-5"));
  ASSERT_TRUE(sink->error());
  EXPECT_EQ(sink->error()->code, "INVALID_INPUT");
  EXPECT_FALSE(sink->error()->retryable);
  EXPECT_THAT(sink->error()->message, HasSubstr("unknown model \"gpt-5\" (known: g, only-b)"));
  EXPECT_EQ(f.fakes.at("a")->calls() + f.fakes.at("b")->calls(), 0);
}

TEST(RoutedProviderTest, FallsBackToTheNextMemberBeforeAnyOutput) {
  Fixture f(kTwoTiers);
  f.fakes.at("a")->SetBehavior({.deltas = {}, .error = RetryableError("a: 503")});
  auto sink = f.Chat(Request("g"));
  ASSERT_FALSE(sink->error()) << sink->error()->message;
  EXPECT_EQ(sink->text(), "fake answer");
  EXPECT_EQ(sink->model(), "b");
  EXPECT_EQ(f.fakes.at("a")->calls(), 1);
  EXPECT_EQ(f.fakes.at("b")->calls(), 1);
}

TEST(RoutedProviderTest, NoFallbackOnceOutputStreamed) {
  Fixture f(kTwoTiers);
  f.fakes.at("a")->SetBehavior({.deltas = {"partial"}, .error = RetryableError("cut")});
  auto sink = f.Chat(Request("g"));
  ASSERT_TRUE(sink->error());
  EXPECT_TRUE(sink->error()->retryable);
  EXPECT_EQ(sink->error()->message, "cut");
  EXPECT_EQ(sink->text(), "partial");  // only a's text, never mixed with b's
  EXPECT_EQ(f.fakes.at("b")->calls(), 0);
  EXPECT_EQ(sink->events_after_finish(), 0);
}

TEST(RoutedProviderTest, NonRetryableErrorIsReportedWithoutFallback) {
  Fixture f(kTwoTiers);
  f.fakes.at("a")->SetBehavior(
      {.deltas = {}, .error = ProviderError{"INVALID_INPUT", "bad messages", false, {}}});
  auto sink = f.Chat(Request("g"));
  ASSERT_TRUE(sink->error());
  EXPECT_EQ(sink->error()->code, "INVALID_INPUT");
  EXPECT_FALSE(sink->error()->retryable);
  EXPECT_EQ(f.fakes.at("b")->calls(), 0);
}

TEST(RoutedProviderTest, AllMembersFailingReportsTheLastErrorAndSmallestHint) {
  Fixture f(kTwoTiers);
  f.fakes.at("a")->SetBehavior({.deltas = {}, .error = RetryableError("a: 429", absl::Seconds(2))});
  f.fakes.at("b")->SetBehavior({.deltas = {}, .error = RetryableError("b: 503", absl::Seconds(5))});
  auto sink = f.Chat(Request("g"));
  ASSERT_TRUE(sink->error());
  EXPECT_EQ(sink->error()->message, "b: 503");
  EXPECT_TRUE(sink->error()->retryable);
  EXPECT_EQ(sink->error()->retry_after, absl::Seconds(2));
}

TEST(RoutedProviderTest, EmbedFallsBackAndReportsTheDeployment) {
  Fixture f(kTwoTiers);
  f.fakes.at("a")->SetBehavior({.error = RetryableError("a down")});
  struct Sink : EmbedSink {
    absl::Mutex mu;
    bool done = false;
    std::string model;
    size_t vectors = 0;
    std::optional<ProviderError> error;
    void OnDone(std::vector<std::vector<float>> v, const Usage&, const std::string& m) override {
      absl::MutexLock l(&mu);
      done = true;
      model = m;
      vectors = v.size();
    }
    void OnError(const ProviderError& e) override {
      absl::MutexLock l(&mu);
      done = true;
      error = e;
    }
  };
  auto sink = std::make_shared<Sink>();
  EmbedRequest r;
  r.model = "g";
  r.texts = {"x", "y"};
  auto call = f.provider->StartEmbed(r, sink);
  absl::MutexLock l(&sink->mu);
  ASSERT_TRUE(sink->mu.AwaitWithTimeout(absl::Condition(&sink->done), kWait));
  EXPECT_FALSE(sink->error);
  EXPECT_EQ(sink->model, "b");
  EXPECT_EQ(sink->vectors, 2u);
}

constexpr char kBreakerConfig[] = R"pb(
  deployments {
    name: "a"
    provider: "sim"
    breaker {
      failure_rate: 0.5
      min_requests: 2
      window { seconds: 60 }
      open_duration { seconds: 30 }
    }
  }
  deployments {
    name: "b"
    provider: "sim"
    breaker {
      failure_rate: 0.5
      min_requests: 1
      window { seconds: 60 }
      open_duration { seconds: 40 }
    }
  }
  model_groups {
    name: "g"
    members { deployment: "a" priority: 0 }
    members { deployment: "b" priority: 1 }
  }
)pb";

struct ManualClock {
  absl::Mutex mu;
  absl::Time now = absl::Now();
  Clock fn() {
    return [this] {
      absl::MutexLock l(&mu);
      return now;
    };
  }
  void Advance(absl::Duration d) {
    absl::MutexLock l(&mu);
    now += d;
  }
};

TEST(RoutedProviderTest, OpenBreakerSkipsTheDeploymentThenOneProbeClosesIt) {
  ManualClock clock;
  RoutedProviderOptions options;
  options.clock = clock.fn();
  Fixture f(kBreakerConfig, options);
  f.fakes.at("a")->SetBehavior({.deltas = {}, .error = RetryableError("a: 503")});
  for (int i = 0; i < 2; ++i) EXPECT_EQ(f.Chat(Request())->model(), "b");  // fell back
  ASSERT_EQ(f.provider->breaker("a")->state(), CircuitBreaker::State::kOpen);
  EXPECT_EQ(f.fakes.at("a")->calls(), 2);

  EXPECT_EQ(f.Chat(Request())->model(), "b");
  EXPECT_EQ(f.fakes.at("a")->calls(), 2) << "an open breaker's deployment is skipped";

  // After open_duration a single probe goes to a; it succeeds and closes the breaker.
  f.fakes.at("a")->SetBehavior({.delay = absl::Milliseconds(200)});
  clock.Advance(absl::Seconds(30));
  auto probe_sink = std::make_shared<RecordingChatSink>();
  auto probe = f.provider->StartChat(Request(), probe_sink);
  // While the probe is out, other calls go to b.
  EXPECT_EQ(f.Chat(Request())->model(), "b");
  ASSERT_TRUE(probe_sink->WaitFinished(kWait));
  EXPECT_EQ(probe_sink->model(), "a");
  EXPECT_EQ(f.provider->breaker("a")->state(), CircuitBreaker::State::kClosed);
  EXPECT_EQ(f.Chat(Request())->model(), "a");
}

TEST(RoutedProviderTest, EveryBreakerOpenIsProviderUnavailableUntilTheFirstHalfOpens) {
  ManualClock clock;
  RoutedProviderOptions options;
  options.clock = clock.fn();
  Fixture f(kBreakerConfig, options);
  f.fakes.at("a")->SetBehavior({.deltas = {}, .error = RetryableError("a: 503")});
  f.fakes.at("b")->SetBehavior({.deltas = {}, .error = RetryableError("b: 503")});
  for (int i = 0; i < 2; ++i) EXPECT_TRUE(f.Chat(Request())->error());
  ASSERT_EQ(f.provider->breaker("a")->state(), CircuitBreaker::State::kOpen);
  ASSERT_EQ(f.provider->breaker("b")->state(), CircuitBreaker::State::kOpen);
  clock.Advance(absl::Seconds(10));
  auto sink = f.Chat(Request());
  ASSERT_TRUE(sink->error());
  EXPECT_EQ(sink->error()->code, "PROVIDER_UNAVAILABLE");
  EXPECT_TRUE(sink->error()->retryable);
  // Both opened at the same (manual) time; a's open_duration (30s) ends first: 30s - 10s.
  EXPECT_EQ(sink->error()->retry_after, absl::Seconds(20));
  EXPECT_EQ(f.fakes.at("a")->calls() + f.fakes.at("b")->calls(), 3);
}

TEST(RoutedProviderTest, CallerMistakesDoNotOpenTheBreaker) {
  Fixture f(kBreakerConfig);
  f.fakes.at("a")->SetBehavior(
      {.deltas = {}, .error = ProviderError{"INVALID_INPUT", "bad", false, {}}});
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(f.Chat(Request())->error());
  EXPECT_EQ(f.provider->breaker("a")->state(), CircuitBreaker::State::kClosed);
}

TEST(RoutedProviderTest, WeightsShareTheLoadWithinAPriority) {
  RoutedProviderOptions options;
  options.seed = 42;
  Fixture f(R"pb(
              deployments { name: "light" provider: "sim" }
              deployments { name: "heavy" provider: "sim" }
              deployments { name: "backup" provider: "sim" }
              model_groups {
                name: "g"
                members { deployment: "light" weight: 1 }
                members { deployment: "heavy" weight: 3 }
                members { deployment: "backup" weight: 100 priority: 1 }
              })pb",
            options);
  constexpr int kCalls = 2000;
  std::vector<std::shared_ptr<RecordingChatSink>> sinks;
  std::vector<std::unique_ptr<LlmCall>> calls;
  for (int i = 0; i < kCalls; ++i) {
    sinks.push_back(std::make_shared<RecordingChatSink>());
    calls.push_back(f.provider->StartChat(Request(), sinks.back()));
  }
  std::map<std::string, int> served;
  for (auto& s : sinks) {
    ASSERT_TRUE(s->WaitFinished(kWait));
    ++served[s->model()];
  }
  // Expected 500 / 1500; 5 standard deviations is about +-97.
  EXPECT_NEAR(served["light"], 500, 100);
  EXPECT_NEAR(served["heavy"], 1500, 100);
  EXPECT_EQ(served["backup"], 0) << "a lower priority only serves as fallback";
}

TEST(RoutedProviderTest, WeightedFallbackOrderCoversTheWholeTier) {
  RoutedProviderOptions options;
  options.seed = 7;
  Fixture f(R"pb(
              deployments { name: "x" provider: "sim" }
              deployments { name: "y" provider: "sim" }
              model_groups {
                name: "g"
                members { deployment: "x" }
                members { deployment: "y" }
              })pb",
            options);
  f.fakes.at("x")->SetBehavior({.deltas = {}, .error = RetryableError("x down")});
  for (int i = 0; i < 20; ++i) EXPECT_EQ(f.Chat(Request())->model(), "y");
}

TEST(RoutedProviderTest, RateLimitedMemberSpillsToTheNextOne) {
  Fixture f(R"pb(
    deployments {
      name: "a"
      provider: "sim"
      rate_limit { requests_per_minute: 1 }
    }
    deployments { name: "b" provider: "sim" }
    model_groups {
      name: "g"
      members { deployment: "a" }
      members { deployment: "b" priority: 1 }
    })pb");
  EXPECT_EQ(f.Chat(Request())->model(), "a");
  absl::Time start = absl::Now();
  EXPECT_EQ(f.Chat(Request())->model(), "b");
  EXPECT_LT(absl::Now() - start, absl::Seconds(5)) << "it did not wait for a's next slot";
}

TEST(RoutedProviderTest, WaitPastTheDeadlineFailsAtOnceAsRateLimited) {
  Fixture f(R"pb(
    deployments {
      name: "a"
      provider: "sim"
      rate_limit { requests_per_minute: 1 }
    }
    model_groups {
      name: "g"
      members { deployment: "a" }
    })pb");
  EXPECT_EQ(f.Chat(Request())->model(), "a");
  ChatRequest r = Request();
  r.deadline = absl::Now() + absl::Seconds(2);
  auto sink = f.Chat(r);
  ASSERT_TRUE(sink->error());
  EXPECT_EQ(sink->error()->code, "RATE_LIMITED");
  EXPECT_TRUE(sink->error()->retryable);
  EXPECT_GT(sink->error()->retry_after, absl::Seconds(50));
  EXPECT_EQ(f.fakes.at("a")->calls(), 1);
}

// rate_limit.burst sizes a deployment's buckets (rate x burst), replacing the process-wide
// RoutedProviderOptions::rate_burst; without it the buckets hold that default.
TEST(RoutedProviderTest, ConfiguredBurstSizesTheBuckets) {
  Fixture f(R"pb(
    deployments {
      name: "a"
      provider: "sim"
      rate_limit {
        requests_per_minute: 1200
        tokens_per_minute: 60000
        burst { nanos: 500000000 }
      }
    }
    deployments {
      name: "b"
      provider: "sim"
      rate_limit { requests_per_minute: 1200 }
    }
    model_groups {
      name: "g"
      members { deployment: "a" }
      members { deployment: "b" }
    })pb");
  ASSERT_NE(f.provider->request_bucket("a"), nullptr);
  EXPECT_DOUBLE_EQ(f.provider->request_bucket("a")->capacity(), 10);    // 20/s x 0.5 s
  EXPECT_DOUBLE_EQ(f.provider->token_bucket("a")->capacity(), 500);     // 1000/s x 0.5 s
  EXPECT_DOUBLE_EQ(f.provider->request_bucket("b")->capacity(), 1200);  // one minute's worth
}

// 200 concurrent calls against one deployment limited to 3000/min (50/s) with a burst of 10:
// the start times the provider saw never exceed burst + rate x elapsed.
TEST(RoutedProviderTest, RequestRateHoldsAcross200ConcurrentCalls) {
  RoutedProviderOptions options;
  options.rate_burst = absl::Milliseconds(200);  // 50/s x 0.2 s = 10
  Fixture f(R"pb(
              deployments {
                name: "a"
                provider: "sim"
                rate_limit { requests_per_minute: 3000 }
              }
              model_groups {
                name: "g"
                members { deployment: "a" }
              })pb",
            options);
  ASSERT_DOUBLE_EQ(f.provider->request_bucket("a")->capacity(), 10);
  f.fakes.at("a")->SetBehavior({.delay = absl::Milliseconds(20)});
  constexpr int kCalls = 200;
  std::vector<std::shared_ptr<RecordingChatSink>> sinks;
  std::vector<std::unique_ptr<LlmCall>> calls;
  absl::Time begin = absl::Now();
  for (int i = 0; i < kCalls; ++i) {
    sinks.push_back(std::make_shared<RecordingChatSink>());
    calls.push_back(f.provider->StartChat(Request(), sinks.back()));
  }
  for (auto& s : sinks) {
    ASSERT_TRUE(s->WaitFinished(absl::Seconds(30)));
    ASSERT_FALSE(s->error()) << s->error()->message;
  }
  std::vector<absl::Time> starts = f.fakes.at("a")->start_times();
  ASSERT_EQ(starts.size(), static_cast<size_t>(kCalls));
  std::sort(starts.begin(), starts.end());
  // Any run of starts i..j: j-i+1 <= burst + rate x (t_j - t_i). The slack (5 ms, one call)
  // covers the gap between the bucket's decision and the fake recording the start.
  for (int i = 0; i < kCalls; ++i) {
    for (int j = i; j < kCalls; ++j) {
      double allowed =
          10 + 50 * absl::ToDoubleSeconds(starts[j] - starts[i] + absl::Milliseconds(5)) + 1;
      ASSERT_LE(j - i + 1, allowed) << "calls " << i << ".." << j << " started within "
                                    << absl::FormatDuration(starts[j] - starts[i]);
    }
  }
  // ... and it did not crawl either: 190 calls past the burst take about 3.8 s.
  absl::Duration took = starts.back() - begin;
  EXPECT_GE(took, absl::Seconds(3.7));
  EXPECT_LT(took, absl::Seconds(6));
}

TEST(RoutedProviderTest, RateLimitHeadersWithNothingRemainingPauseTheDeployment) {
  Fixture f(R"pb(
    deployments {
      name: "a"
      provider: "sim"
      rate_limit { requests_per_minute: 6000 }
    }
    model_groups {
      name: "g"
      members { deployment: "a" }
    })pb");
  RateLimitHeaders h;
  h.remaining_requests = 0;
  h.reset_requests = absl::Milliseconds(500);
  f.fakes.at("a")->observer->OnRateLimitHeaders(h);
  absl::Time start = absl::Now();
  auto sink = f.Chat(Request());
  EXPECT_FALSE(sink->error());
  ASSERT_EQ(f.fakes.at("a")->calls(), 1);
  EXPECT_GE(f.fakes.at("a")->start_times()[0] - start, absl::Milliseconds(450));
}

TEST(RoutedProviderTest, TokenEstimateIsCorrectedWithTheReportedUsage) {
  ManualClock clock;  // frozen: no refill during the test
  RoutedProviderOptions options;
  options.clock = clock.fn();
  Fixture f(R"pb(
              deployments {
                name: "a"
                provider: "sim"
                rate_limit { tokens_per_minute: 10000 }
              }
              model_groups {
                name: "g"
                members { deployment: "a" }
              })pb",
            options);
  f.fakes.at("a")->SetBehavior({.usage = {40, 60}});
  ChatRequest r = Request();
  r.max_tokens = 1000;
  auto call_sink = std::make_shared<RecordingChatSink>();
  f.fakes.at("a")->SetBehavior({.hang = true});
  auto call = f.provider->StartChat(r, call_sink);
  // While running, the estimate (prompt chars / 4 + max_tokens) is held.
  EXPECT_NEAR(f.provider->token_bucket("a")->available(), 10000 - 1000 - 9.0 / 4, 1e-6);
  call.reset();  // cancelled: the estimate stays spent (the provider may have counted it)
  f.fakes.at("a")->SetBehavior({.usage = {40, 60}});
  double before = f.provider->token_bucket("a")->available();
  EXPECT_FALSE(f.Chat(r)->error());
  EXPECT_NEAR(f.provider->token_bucket("a")->available(), before - 100, 1e-6);
}

TEST(RoutedProviderTest, ProviderOptionsReachOnlyDeploymentsOfThatProvider) {
  Fixture f(R"pb(
    deployments { name: "s" provider: "sim" }
    deployments { name: "o" provider: "openai" base_url: "http://127.0.0.1:1/v1" model: "m" }
    model_groups {
      name: "sim"
      members { deployment: "s" }
    }
    model_groups {
      name: "oai"
      members { deployment: "o" }
    })pb");
  ChatRequest r = Request("sim");
  r.provider_options = testing::JsonStruct(R"({"ttft_ms": 5})");
  f.Chat(r);
  EXPECT_EQ(f.fakes.at("s")->last_options().fields_size(), 1);
  r.model = "oai";
  f.Chat(r);
  EXPECT_EQ(f.fakes.at("o")->last_options().fields_size(), 0);
}

TEST(RoutedProviderTest, CancelStopsTheInnerCallAndEveryCallback) {
  Fixture f(kTwoTiers);
  f.fakes.at("a")->SetBehavior({.hang = true});
  auto sink = std::make_shared<RecordingChatSink>();
  auto call = f.provider->StartChat(Request("g"), sink);
  ASSERT_EQ(f.fakes.at("a")->calls(), 1);
  call->Cancel();
  EXPECT_EQ(f.fakes.at("a")->cancels(), 1);
  call->Cancel();  // idempotent
  call.reset();
  EXPECT_FALSE(sink->finished());
  EXPECT_EQ(f.fakes.at("b")->calls(), 0);
}

TEST(RoutedProviderTest, CancelWhileWaitingForTheRateLimitGivesTheSlotBack) {
  Fixture f(R"pb(
    deployments {
      name: "a"
      provider: "sim"
      rate_limit { requests_per_minute: 1 }
    }
    model_groups {
      name: "g"
      members { deployment: "a" }
    })pb");
  EXPECT_EQ(f.Chat(Request())->model(), "a");
  double before = f.provider->request_bucket("a")->available();
  auto sink = std::make_shared<RecordingChatSink>();
  auto call = f.provider->StartChat(Request(), sink);  // waits about a minute
  EXPECT_LT(f.provider->request_bucket("a")->available(), before - 0.5);
  call->Cancel();
  EXPECT_NEAR(f.provider->request_bucket("a")->available(), before, 0.01);
  EXPECT_FALSE(sink->finished());
  EXPECT_EQ(f.fakes.at("a")->calls(), 1);
}

// Cancels its own call from inside the first OnDelta.
class CancellingSink : public RecordingChatSink {
 public:
  void OnDelta(const std::string& text) override {
    RecordingChatSink::OnDelta(text);
    LlmCall* c = call.load();
    if (c != nullptr) c->Cancel();
  }
  std::atomic<LlmCall*> call{nullptr};
};

TEST(RoutedProviderTest, CancelFromInsideACallbackEndsTheCall) {
  Fixture f(kTwoTiers);
  f.fakes.at("a")->SetBehavior(
      {.deltas = {"one", " two", " three"}, .delay = absl::Milliseconds(100)});
  auto sink = std::make_shared<CancellingSink>();
  auto call = f.provider->StartChat(Request("g"), sink);
  sink->call.store(call.get());
  ASSERT_TRUE(sink->WaitDeltas(1, kWait));
  // The fake's timer step has returned once its cancels count is visible.
  absl::Time until = absl::Now() + kWait;
  while (f.fakes.at("a")->cancels() == 0 && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  EXPECT_EQ(f.fakes.at("a")->cancels(), 1);
  EXPECT_EQ(sink->deltas(), std::vector<std::string>{"one"});
  EXPECT_FALSE(sink->finished());
  call.reset();
}

TEST(RoutedProviderTest, FactoryErrorNamesTheDeployment) {
  auto p = RoutedProvider::Create(
      Config(R"pb(deployments { name: "s" provider: "sim" }
                  deployments {
                    name: "o"
                    provider: "openai"
                    base_url: "http://x/v1"
                    model: "m"
                    api_key_env: "AIJOBS_TEST_KEY_THAT_IS_NEVER_SET"
                  }
                  model_groups {
                    name: "g"
                    members { deployment: "s" }
                  })pb"),
      StandardDeploymentFactory(SimOptions{}));
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(p.status().message()), HasSubstr("deployments[1] (\"o\""));
  EXPECT_THAT(std::string(p.status().message()), HasSubstr("AIJOBS_TEST_KEY_THAT_IS_NEVER_SET"));
}

TEST(RoutedProviderTest, SimDeploymentsServeThroughTheStandardFactory) {
  auto p =
      RoutedProvider::Create(Config(R"pb(deployments { name: "s" provider: "sim" }
                                         model_groups {
                                           name: "g"
                                           members { deployment: "s" }
                                         })pb"),
                             StandardDeploymentFactory(SimOptions{
                                 .ttft = absl::ZeroDuration(), .tokens_per_s = 0, .tokens = 3}));
  ASSERT_TRUE(p.ok()) << p.status();
  auto sink = std::make_shared<RecordingChatSink>();
  ChatRequest r = Request();
  r.provider_options = testing::JsonStruct(R"({"tokens": 5})");  // input.sim still applies
  auto call = (*p)->StartChat(r, sink);
  ASSERT_TRUE(sink->WaitFinished(kWait));
  EXPECT_FALSE(sink->error());
  EXPECT_EQ(sink->deltas().size(), 5u);
  EXPECT_EQ(sink->model(), "s");
}

// Counts deltas and any callback that runs after the test's Cancel() returned; cancels its
// own call at delta `cancel_at` (0: never). Each callback lingers a little so that a
// Cancel() from another thread often lands while one is running.
class RaceSink : public ChatSink {
 public:
  explicit RaceSink(int cancel_at = 0) : cancel_at_(cancel_at) {}
  void OnDelta(const std::string& text) override {
    Linger();
    int n = ++deltas;
    if (n == cancel_at_) {
      LlmCall* c;
      while ((c = call.load()) == nullptr) std::this_thread::yield();  // stored just after Start
      c->Cancel();
    }
  }
  void OnDone(const Usage& usage, const std::string& model) override {
    Linger();
    finished = true;
  }
  void OnError(const ProviderError& error) override {
    Linger();
    finished = true;
  }
  bool WaitDeltas(int n) {
    absl::Time until = absl::Now() + kWait;
    while (deltas.load() < n && !finished.load() && absl::Now() < until) {
      absl::SleepFor(absl::Microseconds(200));
    }
    return deltas.load() >= n;
  }

  std::atomic<LlmCall*> call{nullptr};
  std::atomic<bool> cancel_returned{false};
  std::atomic<int> late{0};
  std::atomic<int> deltas{0};
  std::atomic<bool> finished{false};

 private:
  void Linger() {
    if (cancel_returned.load()) ++late;
    for (int i = 0; i < 100; ++i) std::this_thread::yield();
    if (cancel_returned.load()) ++late;
  }
  const int cancel_at_;
};

// Every call falls back from "a" to "b" and streams from "b" while it is cancelled, half of
// them from another thread and half from inside their own OnDelta: no callback after
// Cancel() returns, none after a callback cancelled its own call, and no deadlock.
TEST(RoutedProviderTest, CancelRacesStreamingAfterAFallback) {
  Fixture f(kTwoTiers);
  f.fakes.at("a")->SetBehavior({.deltas = {}, .error = RetryableError("a down")});
  f.fakes.at("b")->SetBehavior({.deltas = std::vector<std::string>(3000, "x")});
  constexpr int kCalls = 12;
  std::vector<std::shared_ptr<RaceSink>> sinks;
  std::vector<std::unique_ptr<LlmCall>> calls;
  for (int i = 0; i < kCalls; ++i) {
    sinks.push_back(std::make_shared<RaceSink>(i % 2 == 1 ? 3 + i : 0));
    calls.push_back(f.provider->StartChat(Request("g"), sinks.back()));
    sinks.back()->call.store(calls.back().get());
  }
  std::vector<std::thread> cancellers;
  for (int i = 0; i < kCalls; i += 2) {
    cancellers.emplace_back([&, i] {
      EXPECT_TRUE(sinks[i]->WaitDeltas(1 + i));
      calls[i]->Cancel();
      sinks[i]->cancel_returned = true;
    });
  }
  for (int i = 1; i < kCalls; i += 2) {
    EXPECT_TRUE(sinks[i]->WaitDeltas(3 + i));
  }
  for (auto& t : cancellers) t.join();
  // "b" runs one call's whole stream per timer step, one step at a time: once a later call
  // on "b" has finished, every earlier stream has ended (cancelled, or drained unheard when
  // a self-cancel came while its handle was still being stored).
  f.fakes.at("b")->SetBehavior({});
  EXPECT_FALSE(f.Chat(Request("only-b"))->error());
  for (int i = 0; i < kCalls; ++i) {
    if (i % 2 == 1) {
      sinks[i]->cancel_returned = true;  // it returned long ago; from here nothing may arrive
      EXPECT_EQ(sinks[i]->deltas.load(), 3 + i) << "call " << i;
    }
  }
  calls.clear();
  for (int i = 0; i < kCalls; ++i) {
    EXPECT_EQ(sinks[i]->late.load(), 0) << "call " << i;
    EXPECT_FALSE(sinks[i]->finished.load()) << "call " << i;
  }
  // Each call went to "b", after "a" failed (until a's breaker opened).
  EXPECT_EQ(f.fakes.at("b")->calls(), kCalls + 1);
}

// From inside the final callback of one call, destroys that call and starts the next one on
// the same provider: nothing is locked while the caller's sink runs.
class ChainingSink : public ChatSink {
 public:
  ChainingSink(RoutedProvider* provider, int remaining, std::atomic<int>* finished)
      : provider_(provider), remaining_(remaining), finished_(finished) {}
  void Start(std::shared_ptr<ChainingSink> self) {
    absl::MutexLock lock(&mu_);
    call_ = provider_->StartChat(Request("g"), std::move(self));
  }
  void OnDelta(const std::string& text) override {}
  void OnDone(const Usage& usage, const std::string& model) override { Next(); }
  void OnError(const ProviderError& error) override { Next(); }

 private:
  void Next() {
    std::unique_ptr<LlmCall> own;
    {
      absl::MutexLock lock(&mu_);
      own = std::move(call_);
    }
    own.reset();  // destroys this very call from inside its callback
    ++*finished_;
    if (remaining_ > 0) {
      auto next = std::make_shared<ChainingSink>(provider_, remaining_ - 1, finished_);
      next->Start(next);
      absl::MutexLock lock(&mu_);
      next_ = std::move(next);
    }
  }
  RoutedProvider* const provider_;
  const int remaining_;
  std::atomic<int>* const finished_;
  absl::Mutex mu_;
  std::unique_ptr<LlmCall> call_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<ChainingSink> next_ ABSL_GUARDED_BY(mu_);
};

TEST(RoutedProviderTest, ACallbackMayDestroyItsCallAndStartAnother) {
  Fixture f(kTwoTiers);
  f.fakes.at("a")->SetBehavior({.deltas = {}, .error = RetryableError("a down")});
  std::atomic<int> finished{0};
  auto first = std::make_shared<ChainingSink>(f.provider.get(), 9, &finished);
  first->Start(first);
  absl::Time until = absl::Now() + kWait;
  while (finished.load() < 10 && absl::Now() < until) absl::SleepFor(absl::Milliseconds(1));
  EXPECT_EQ(finished.load(), 10);
  EXPECT_EQ(f.fakes.at("b")->calls(), 10);  // each fell back from "a"
}

}  // namespace
}  // namespace aijobs::worker
