#include "workers/chat_handler.h"

#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "workers/sim_provider.h"
#include "workers/test_util.h"

namespace aijobs::worker {
namespace {

using testing::FakeJobContext;
using ::testing::HasSubstr;
using testing::JsonStruct;

constexpr absl::Duration kWait = absl::Seconds(10);

SimOptions Fast() {
  SimOptions o;
  o.ttft = absl::ZeroDuration();
  o.tokens_per_s = 0;
  o.tokens = 7;
  return o;
}

std::string InvalidMessage(const std::string& json) {
  absl::StatusOr<ChatRequest> r = ParseChatInput(JsonStruct(json), "sim");
  EXPECT_FALSE(r.ok()) << json;
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(r.status().message());
}

TEST(ChatHandlerTest, ValidationSaysWhatIsWrong) {
  EXPECT_THAT(InvalidMessage("{}"), HasSubstr("input.messages must be a non-empty list"));
  EXPECT_THAT(InvalidMessage(R"({"messages": []})"),
              HasSubstr("input.messages must be a non-empty list"));
  EXPECT_THAT(InvalidMessage(R"({"messages": "hi"})"),
              HasSubstr("input.messages must be a non-empty list"));
  EXPECT_THAT(InvalidMessage(R"({"messages": ["hi"]})"),
              HasSubstr("input.messages[0] must be an object"));
  EXPECT_THAT(
      InvalidMessage(R"({"messages": [{"role": "user", "content": "a"}, {"role": "user"}]})"),
      HasSubstr("input.messages[1].content must be a string"));
  EXPECT_THAT(InvalidMessage(R"({"messages": [{"content": 5}]})"),
              HasSubstr("input.messages[0].content must be a string"));
  EXPECT_THAT(InvalidMessage(R"({"messages": [{"role": 1, "content": "a"}]})"),
              HasSubstr("input.messages[0].role must be a string"));
  EXPECT_THAT(InvalidMessage(R"({"messages": [{"content": "a"}], "model": 3})"),
              HasSubstr("input.model must be a string"));
  EXPECT_THAT(InvalidMessage(R"({"messages": [{"content": "a"}], "max_tokens": -1})"),
              HasSubstr("input.max_tokens"));
  EXPECT_THAT(InvalidMessage(R"({"messages": [{"content": "a"}], "sim": 1})"),
              HasSubstr("input.sim must be an object"));
}

TEST(ChatHandlerTest, ParsesAllFields) {
  absl::StatusOr<ChatRequest> r =
      ParseChatInput(JsonStruct(R"({"model": "m", "max_tokens": 9, "temperature": 0.5,
                    "messages": [{"content": "hi"}, {"role": "assistant", "content": "yo"}],
                    "sim": {"tokens": 2}})"),
                     "sim");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->model, "m");
  EXPECT_EQ(r->max_tokens, 9);
  EXPECT_EQ(r->temperature, 0.5);
  ASSERT_EQ(r->messages.size(), 2u);
  EXPECT_EQ(r->messages[0].role, "user");  // default role
  EXPECT_EQ(r->messages[1].role, "assistant");
  EXPECT_EQ(r->provider_options.fields().at("tokens").number_value(), 2);
}

TEST(ChatHandlerTest, StreamsDeltasAndResultTextIsTheirConcatenation) {
  SimProvider sim(Fast());
  auto ctx = std::make_shared<FakeJobContext>(
      JsonStruct(R"({"messages": [{"role": "user", "content": "three word prompt"}]})"));
  ChatHandler handler(ctx, &sim);
  handler.Start();
  ASSERT_TRUE(ctx->WaitFinished(kWait));
  ASSERT_FALSE(ctx->failure().has_value()) << ctx->failure()->message;
  std::optional<google::protobuf::Struct> result = ctx->result();
  ASSERT_TRUE(result.has_value());
  const auto& f = result->fields();
  std::string concatenated;
  for (const std::string& d : ctx->deltas()) concatenated += d;
  EXPECT_EQ(ctx->deltas().size(), 7u);
  EXPECT_FALSE(concatenated.empty());
  EXPECT_EQ(f.at("text").string_value(), concatenated);
  EXPECT_EQ(f.at("model").string_value(), "sim-1");
  const auto& usage = f.at("usage").struct_value().fields();
  EXPECT_EQ(usage.at("prompt_tokens").number_value(), 3);
  EXPECT_EQ(usage.at("completion_tokens").number_value(), 7);
  EXPECT_EQ(ctx->reports_after_finish(), 0);
}

TEST(ChatHandlerTest, InvalidInputFailsNonRetryable) {
  SimProvider sim(Fast());
  auto ctx = std::make_shared<FakeJobContext>(JsonStruct(R"({"messages": []})"));
  ChatHandler handler(ctx, &sim);
  handler.Start();
  ASSERT_TRUE(ctx->WaitFinished(kWait));
  ASSERT_TRUE(ctx->failure().has_value());
  EXPECT_EQ(ctx->failure()->code, "INVALID_INPUT");
  EXPECT_FALSE(ctx->failure()->retryable);
  EXPECT_THAT(ctx->failure()->message, HasSubstr("input.messages"));
  EXPECT_TRUE(ctx->deltas().empty());
}

TEST(ChatHandlerTest, ProviderFailureIsReportedWithRetryHint) {
  SimProvider sim(Fast());
  auto ctx = std::make_shared<FakeJobContext>(JsonStruct(R"({"messages": [{"content": "x"}],
                    "sim": {"fail_attempts": 1, "fail_after_tokens": 2, "retry_after_ms": 40}})"),
                                              /*attempt=*/1);
  ChatHandler handler(ctx, &sim);
  handler.Start();
  ASSERT_TRUE(ctx->WaitFinished(kWait));
  ASSERT_TRUE(ctx->failure().has_value());
  EXPECT_EQ(ctx->failure()->code, "SIM_FAILURE");
  EXPECT_TRUE(ctx->failure()->retryable);
  EXPECT_EQ(ctx->failure()->retry_after, absl::Milliseconds(40));
  EXPECT_EQ(ctx->deltas().size(), 2u);

  // The next attempt of the same job succeeds.
  auto retry = std::make_shared<FakeJobContext>(ctx->input(), /*attempt=*/2);
  ChatHandler second(retry, &sim);
  second.Start();
  ASSERT_TRUE(retry->WaitFinished(kWait));
  EXPECT_TRUE(retry->result().has_value());
}

TEST(ChatHandlerTest, CancelStopsTheStream) {
  SimProvider sim(Fast());
  auto ctx = std::make_shared<FakeJobContext>(JsonStruct(
      R"({"messages": [{"content": "x"}], "sim": {"tokens": 100000, "tokens_per_s": 500}})"));
  auto handler = std::make_shared<ChatHandler>(ctx, &sim);
  handler->Start();
  ASSERT_TRUE(ctx->WaitDeltas(2, kWait));
  handler->Cancel();
  size_t after_cancel = ctx->deltas().size();
  // Barrier: a second job that takes several token intervals.
  auto barrier = std::make_shared<FakeJobContext>(
      JsonStruct(R"({"messages": [{"content": "y"}], "sim": {"ttft_ms": 50, "tokens": 1}})"));
  ChatHandler b(barrier, &sim);
  b.Start();
  ASSERT_TRUE(barrier->WaitFinished(kWait));
  EXPECT_EQ(ctx->deltas().size(), after_cancel);
  EXPECT_FALSE(ctx->result().has_value());
  EXPECT_FALSE(ctx->failure().has_value());
}

}  // namespace
}  // namespace aijobs::worker
