// bench-smoke: runs the aijobs-load binary against a real PostgreSQL + aijobs-scheduler + one
// aijobs-worker and checks the exit status and both reports.
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>
#include <sstream>

#include "bench/bench_util.h"
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

  run = aijobs::testing::RunCommand(aijobs::testing::BinPath("aijobs-load"),
                                    {"--target", "http://127.0.0.1:8080"}, absl::Seconds(30));
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 2);
  EXPECT_NE(run->err.find("gateway"), std::string::npos) << run->err;

  run = aijobs::testing::RunCommand(aijobs::testing::BinPath("aijobs-load"), {"--users", "2001"},
                                    absl::Seconds(30));
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 2);
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
