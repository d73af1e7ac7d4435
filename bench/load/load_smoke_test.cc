// bench-smoke: runs the aijobs-load binary against a real PostgreSQL + aijobs-scheduler + one
// aijobs-worker (over gRPC, and over HTTP through a real aijobs-gateway) and checks the exit
// status and both reports.
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>
#include <sstream>

#include "bench/bench_util.h"
#include "bench/http_client.h"
#include "tests/fixtures/process.h"

namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(LoadSmokeTest, RunsAgainstRealClusterAndWritesReports) {
  std::string error;
  aijobs::bench::Cluster* cluster = aijobs::bench::Cluster::Get(&error);
  ASSERT_NE(cluster, nullptr) << error;
  ASSERT_TRUE(cluster->StartWorkers(1, 16).ok());

  std::string dir = aijobs::testing::LogDir();
  std::string json_path = dir + "/load-report.json";
  std::string md_path = dir + "/load-report.md";
  auto run = aijobs::testing::RunCommand(
      aijobs::testing::BinPath("aijobs-load"),
      {"--target", "grpc://" + cluster->address(), "--users", "3", "--duration", "3s", "--sim",
       R"({"ttft_ms":0,"tokens":2})", "--report-json", json_path, "--report-md", md_path},
      absl::Seconds(60));
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_EQ(run->exit_code, 0) << run->err;
  EXPECT_NE(run->err.find("completed="), std::string::npos) << run->err;  // progress line

  std::string json = ReadAll(json_path);
  ASSERT_FALSE(json.empty());
  google::protobuf::Struct report;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(json, &report).ok()) << json;
  EXPECT_GT(report.fields().at("completed").number_value(), 0) << json;
  EXPECT_EQ(report.fields().at("success_rate").number_value(), 1.0) << json;
  EXPECT_GT(report.fields().at("health").struct_value().fields().at("checks").number_value(), 0);
  EXPECT_GT(report.fields().at("queue_depth").list_value().values_size(), 0);

  std::string md = ReadAll(md_path);
  EXPECT_NE(md.find("# aijobs-load report"), std::string::npos);
  EXPECT_NE(md.find("success rate | 1.0000"), std::string::npos) << md;
}

TEST(LoadSmokeTest, UnreachableTargetExits1AndUsageErrorsExit2) {
  int port = aijobs::testing::FreePort();
  auto run = aijobs::testing::RunCommand(
      aijobs::testing::BinPath("aijobs-load"),
      {"--target", "127.0.0.1:" + std::to_string(port), "--duration", "1s", "--no-progress"},
      absl::Seconds(30));
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 1) << run->err;

  // Nothing listens there: the HTTP transport reports the target unreachable too.
  run = aijobs::testing::RunCommand(
      aijobs::testing::BinPath("aijobs-load"),
      {"--target", "http://127.0.0.1:" + std::to_string(port), "--duration", "1s", "--no-progress"},
      absl::Seconds(30));
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 1) << run->err;

  run = aijobs::testing::RunCommand(aijobs::testing::BinPath("aijobs-load"),
                                    {"--target", "https://127.0.0.1:8443"}, absl::Seconds(30));
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 2);
  EXPECT_NE(run->err.find("https"), std::string::npos) << run->err;

  run = aijobs::testing::RunCommand(aijobs::testing::BinPath("aijobs-load"),
                                    {"--target", "http://10.1.2.3:8080"}, absl::Seconds(30));
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 2);
  EXPECT_NE(run->err.find("--allow-remote"), std::string::npos) << run->err;

  run = aijobs::testing::RunCommand(aijobs::testing::BinPath("aijobs-load"), {"--users", "2001"},
                                    absl::Seconds(30));
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 2);
}

// The HTTP transport: submits with POST /v1/jobs and follows each job's Server-Sent Events
// through a real aijobs-gateway; health is GET /healthz.
TEST(LoadSmokeTest, RunsThroughTheHttpGateway) {
  std::string error;
  aijobs::bench::Cluster* cluster = aijobs::bench::Cluster::Get(&error);
  ASSERT_NE(cluster, nullptr) << error;
  ASSERT_TRUE(cluster->StartWorkers(1, 16).ok());
  std::unique_ptr<aijobs::testing::Process> gateway;
  int port = 0;
  for (int attempt = 0; attempt < 3 && gateway == nullptr; ++attempt) {
    port = aijobs::testing::FreePort();
    aijobs::testing::ProcessOptions opts;
    opts.path = aijobs::testing::BinPath("aijobs-gateway");
    // Every simulated user comes from 127.0.0.1: no per-address limits.
    opts.args = {"--listen",
                 "127.0.0.1:" + std::to_string(port),
                 "--scheduler",
                 cluster->address(),
                 "--anonymous_requests_per_minute=0",
                 "--max_streams_per_ip=0",
                 "--max_connections_per_ip=0"};
    auto proc = aijobs::testing::Process::Start(opts);
    ASSERT_TRUE(proc.ok()) << proc.status();
    bool up = aijobs::testing::WaitFor(
        [&] {
          if (!(*proc)->IsRunning()) return true;
          auto conn = aijobs::bench::HttpConnection::Connect("127.0.0.1", port, absl::Seconds(1));
          if (!conn.ok()) return false;
          auto r = (*conn)->RoundTrip(
              aijobs::bench::HttpRequestText("GET", "/healthz", "127.0.0.1"), absl::Seconds(1));
          return r.ok() && r->status == 200;
        },
        absl::Seconds(20));
    if (up && (*proc)->IsRunning()) gateway = std::move(*proc);
  }
  ASSERT_NE(gateway, nullptr) << "aijobs-gateway did not come up";

  std::string dir = aijobs::testing::LogDir();
  std::string json_path = dir + "/load-http-report.json";
  std::string md_path = dir + "/load-http-report.md";
  // Several tokens at a finite rate, so the jobs stream deltas over SSE before finishing.
  auto run = aijobs::testing::RunCommand(
      aijobs::testing::BinPath("aijobs-load"),
      {"--target", "http://127.0.0.1:" + std::to_string(port), "--users", "3", "--duration", "3s",
       "--sim", R"({"ttft_ms":0,"tokens":5,"tokens_per_s":200})", "--report-json", json_path,
       "--report-md", md_path},
      absl::Seconds(60));
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_EQ(run->exit_code, 0) << run->err << gateway->LogTail();
  EXPECT_NE(run->err.find("completed="), std::string::npos) << run->err;

  std::string json = ReadAll(json_path);
  google::protobuf::Struct report;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(json, &report).ok()) << json;
  EXPECT_EQ(report.fields().at("transport").string_value(), "http") << json;
  EXPECT_GT(report.fields().at("completed").number_value(), 0) << json;
  EXPECT_EQ(report.fields().at("success_rate").number_value(), 1.0) << json;
  const auto& health = report.fields().at("health").struct_value().fields();
  EXPECT_GT(health.at("checks").number_value(), 0) << json;
  EXPECT_EQ(health.at("failures").number_value(), 0) << json;
  const auto& queue = report.fields().at("queue_depth").list_value();
  ASSERT_GT(queue.values_size(), 0);
  EXPECT_FALSE(queue.values(0).struct_value().fields().at("error").bool_value()) << json;

  std::string md = ReadAll(md_path);
  EXPECT_NE(md.find("HTTP/JSON + SSE through the gateway"), std::string::npos) << md;
  EXPECT_NE(md.find("GET /healthz"), std::string::npos) << md;
  EXPECT_NE(md.find("success rate | 1.0000"), std::string::npos) << md;
}

TEST(LoadSmokeTest, SigtermStopsSubmittingDrainsAndReports) {
  std::string error;
  aijobs::bench::Cluster* cluster = aijobs::bench::Cluster::Get(&error);
  ASSERT_NE(cluster, nullptr) << error;
  ASSERT_TRUE(cluster->StartWorkers(1, 16).ok());
  std::string json_path = aijobs::testing::LogDir() + "/load-sigterm.json";
  aijobs::testing::ProcessOptions opts;
  opts.path = aijobs::testing::BinPath("aijobs-load");
  opts.args = {"--target",      cluster->address(),
               "--users",       "2",
               "--duration",    "120s",
               "--sim",         R"({"ttft_ms":0,"tokens":2})",
               "--report-json", json_path,
               "--report-md",   aijobs::testing::LogDir() + "/load-sigterm.md"};
  auto proc = aijobs::testing::Process::Start(opts);
  ASSERT_TRUE(proc.ok()) << proc.status();
  ASSERT_TRUE(aijobs::testing::WaitFor(
      [&] { return (*proc)->ReadStdout().find("completed=") != std::string::npos; },
      absl::Seconds(20)))
      << (*proc)->LogTail();
  ASSERT_TRUE((*proc)->Signal(SIGTERM).ok());
  absl::StatusOr<int> code = (*proc)->Wait(absl::Seconds(20));
  ASSERT_TRUE(code.ok()) << "did not stop after SIGTERM: " << (*proc)->LogTail();
  EXPECT_EQ(*code, 0) << (*proc)->LogTail();
  google::protobuf::Struct report;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(ReadAll(json_path), &report).ok());
  EXPECT_TRUE(report.fields().at("interrupted").bool_value());
  EXPECT_GT(report.fields().at("completed").number_value(), 0);
}

}  // namespace
