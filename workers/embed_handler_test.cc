#include "workers/embed_handler.h"

#include <cmath>
#include <memory>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "workers/sim_provider.h"
#include "workers/test_util.h"

namespace aijobs::worker {
namespace {

using testing::FakeJobContext;
using ::testing::HasSubstr;
using testing::JsonStruct;

SimOptions Fast() {
  SimOptions o;
  o.ttft = absl::ZeroDuration();
  return o;
}

TEST(EmbedHandlerTest, ValidationSaysWhatIsWrong) {
  auto message = [](const std::string& json) {
    absl::StatusOr<EmbedRequest> r = ParseEmbedInput(JsonStruct(json), "sim");
    EXPECT_FALSE(r.ok()) << json;
    return std::string(r.status().message());
  };
  EXPECT_THAT(message("{}"), HasSubstr("input.texts must be a non-empty list of strings"));
  EXPECT_THAT(message(R"({"texts": []})"), HasSubstr("input.texts must be a non-empty list"));
  EXPECT_THAT(message(R"({"texts": ["a", 2]})"), HasSubstr("input.texts[1] must be a string"));
  EXPECT_THAT(message(R"({"texts": ["a"], "model": false})"), HasSubstr("input.model"));
}

TEST(EmbedHandlerTest, ResultHasOneUnitVectorPerText) {
  SimProvider sim(Fast());
  auto ctx = std::make_shared<FakeJobContext>(
      JsonStruct(R"({"texts": ["one", "two"], "sim": {"dims": 4}})"));
  EmbedHandler handler(ctx, &sim);
  handler.Start();
  ASSERT_TRUE(ctx->WaitFinished(absl::Seconds(10)));
  std::optional<google::protobuf::Struct> result = ctx->result();
  ASSERT_TRUE(result.has_value());
  const auto& vectors = result->fields().at("vectors").list_value();
  ASSERT_EQ(vectors.values_size(), 2);
  for (const auto& v : vectors.values()) {
    ASSERT_EQ(v.list_value().values_size(), 4);
    double norm = 0;
    for (const auto& x : v.list_value().values()) norm += x.number_value() * x.number_value();
    EXPECT_NEAR(std::sqrt(norm), 1.0, 1e-4);
  }
  // Same text, same vector, also across calls.
  std::vector<float> expected = SimEmbedding("one", 4);
  for (int i = 0; i < 4; ++i) {
    EXPECT_FLOAT_EQ(vectors.values(0).list_value().values(i).number_value(), expected[i]);
  }
}

TEST(EmbedHandlerTest, DefaultDimsIsEight) {
  SimProvider sim(Fast());
  auto ctx = std::make_shared<FakeJobContext>(JsonStruct(R"({"texts": ["x"]})"));
  EmbedHandler handler(ctx, &sim);
  handler.Start();
  ASSERT_TRUE(ctx->WaitFinished(absl::Seconds(10)));
  ASSERT_TRUE(ctx->result().has_value());
  EXPECT_EQ(ctx->result()->fields().at("vectors").list_value().values(0).list_value().values_size(),
            8);
}

TEST(EmbedHandlerTest, InvalidInputFailsNonRetryable) {
  SimProvider sim(Fast());
  auto ctx = std::make_shared<FakeJobContext>(JsonStruct(R"({"texts": "x"})"));
  EmbedHandler handler(ctx, &sim);
  handler.Start();
  ASSERT_TRUE(ctx->WaitFinished(absl::Seconds(10)));
  ASSERT_TRUE(ctx->failure().has_value());
  EXPECT_EQ(ctx->failure()->code, "INVALID_INPUT");
  EXPECT_FALSE(ctx->failure()->retryable);
}

}  // namespace
}  // namespace aijobs::worker
