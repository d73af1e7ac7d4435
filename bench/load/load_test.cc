// Unit tests of aijobs-load's pure logic: percentiles, targets, validation, report figures.
#include "bench/load/load.h"

#include <gmock/gmock.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>

namespace aijobs::load {
namespace {

using ::testing::HasSubstr;

TEST(PercentileTest, NearestRank) {
  std::vector<double> v;
  for (int i = 1; i <= 100; ++i) v.push_back(i);
  EXPECT_EQ(Percentile(v, 50), 50);
  EXPECT_EQ(Percentile(v, 90), 90);
  EXPECT_EQ(Percentile(v, 99), 99);
  EXPECT_EQ(Percentile(v, 100), 100);
  EXPECT_EQ(Percentile(v, 0), 1);
  EXPECT_EQ(Percentile({}, 50), 0);
  EXPECT_EQ(Percentile({7}, 99), 7);
}

TEST(PercentileTest, SummarizeSortsAndTakesMax) {
  LatencySummary s = Summarize({5, 1, 4, 2, 3});
  EXPECT_EQ(s.count, 5u);
  EXPECT_EQ(s.p50_ms, 3);
  EXPECT_EQ(s.p90_ms, 5);
  EXPECT_EQ(s.max_ms, 5);
}

TEST(TargetTest, ParsesGrpcAndPlain) {
  EXPECT_EQ(*ParseTarget("127.0.0.1:50051"), "127.0.0.1:50051");
  EXPECT_EQ(*ParseTarget("grpc://localhost:7"), "localhost:7");
  EXPECT_EQ(*ParseTarget("[::1]:9"), "[::1]:9");
  EXPECT_FALSE(ParseTarget("localhost").ok());
  EXPECT_FALSE(ParseTarget("localhost:0").ok());
  EXPECT_FALSE(ParseTarget("ftp://x:1").ok());
  EXPECT_EQ(*ParseTarget("http://127.0.0.1:8080/"), "127.0.0.1:8080");
  EXPECT_TRUE(IsHttpTarget("HTTP://127.0.0.1:8080"));
  EXPECT_FALSE(IsHttpTarget("grpc://127.0.0.1:8080"));
  EXPECT_FALSE(IsHttpTarget("127.0.0.1:8080"));
  absl::StatusOr<std::string> https = ParseTarget("https://127.0.0.1:8443");
  ASSERT_FALSE(https.ok());
  EXPECT_THAT(std::string(https.status().message()), HasSubstr("http://"));
}

TEST(TargetTest, Loopback) {
  EXPECT_TRUE(IsLoopbackTarget("127.0.0.1:1"));
  EXPECT_TRUE(IsLoopbackTarget("127.3.2.1:1"));
  EXPECT_TRUE(IsLoopbackTarget("localhost:1"));
  EXPECT_TRUE(IsLoopbackTarget("[::1]:1"));
  EXPECT_FALSE(IsLoopbackTarget("10.0.0.1:1"));
  EXPECT_FALSE(IsLoopbackTarget("example.com:1"));
  EXPECT_FALSE(IsLoopbackTarget("[2001:db8::1]:1"));
}

TEST(ValidateTest, RejectsUnsafeOrBadConfigs) {
  LoadConfig c = *ScenarioConfig("quick");
  EXPECT_TRUE(ValidateConfig(c).ok());
  c.users = kMaxUsers + 1;
  EXPECT_THAT(std::string(ValidateConfig(c).message()), HasSubstr("limit"));
  c = *ScenarioConfig("quick");
  c.target = "10.1.2.3:50051";
  EXPECT_THAT(std::string(ValidateConfig(c).message()), HasSubstr("--allow-remote"));
  c.allow_remote = true;
  EXPECT_TRUE(ValidateConfig(c).ok());
  c.sim_json = "{not json";
  EXPECT_FALSE(ValidateConfig(c).ok());
  EXPECT_THAT(std::string(ValidateConfig(*ScenarioConfig("soak")).message()),
              HasSubstr("--duration"));
  EXPECT_FALSE(ScenarioConfig("nope").ok());
  EXPECT_EQ(ScenarioConfig("spike")->users, 500);
  EXPECT_EQ(ScenarioConfig("spike")->ramp, absl::Seconds(5));
}

TEST(ReportTest, FiguresAndJsonRoundTrip) {
  LoadResult r;
  r.config = *ScenarioConfig("quick");
  r.elapsed_s = 4;
  r.succeeded = 6;
  r.failed = 2;
  r.errors["SIM_FAILURE"] = 2;
  r.e2e_ms = {1, 2, 3, 4, 5, 6, 7, 8};
  r.queue.push_back({2.0, kQueueDepthCap, true, false});
  EXPECT_DOUBLE_EQ(Throughput(r), 1.5);
  EXPECT_DOUBLE_EQ(SuccessRate(r), 0.75);

  google::protobuf::Struct s;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(ReportJson(r), &s).ok());
  EXPECT_EQ(s.fields().at("completed").number_value(), 6);
  EXPECT_EQ(s.fields().at("success_rate").number_value(), 0.75);
  EXPECT_EQ(s.fields().at("errors").struct_value().fields().at("SIM_FAILURE").number_value(), 2);
  EXPECT_EQ(s.fields().at("e2e_latency").struct_value().fields().at("p99_ms").number_value(), 8);
  std::string md = ReportMarkdown(r);
  EXPECT_THAT(md, HasSubstr("| SIM_FAILURE | 2 |"));
  EXPECT_THAT(md, HasSubstr(">= 10000"));
}

}  // namespace
}  // namespace aijobs::load
