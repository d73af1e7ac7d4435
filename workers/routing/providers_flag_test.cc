// Runs the aijobs-worker binary (from $AIJOBS_BIN_DIR, set by ctest) with --providers: a bad
// file stops start-up with exit code 2 and a message naming the field; a good one routes jobs
// over its model groups and advertises its response-cache opt-ins in hello.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/time_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/fixtures/process.h"
#include "workers/fake_scheduler.h"
#include "workers/test_util.h"

namespace aijobs::worker {
namespace {

using testing::FakeServer;
using ::testing::HasSubstr;
using testing::JsonStruct;
using testing::kWait;

std::string TempPath(const std::string& suffix) {
  static int counter = 0;
  return absl::StrCat(::testing::TempDir(), "/providers_flag_", getpid(), "_", counter++, suffix);
}

// Starts aijobs-worker (from $AIJOBS_BIN_DIR) with `args`, stderr in its own log; the
// Process kills it if the test ends early.
std::unique_ptr<aijobs::testing::Process> StartWorker(std::vector<std::string> args) {
  absl::StatusOr<std::unique_ptr<aijobs::testing::Process>> p = aijobs::testing::Process::Start(
      {aijobs::testing::BinPath("aijobs-worker"), std::move(args), {}, true, ""});
  EXPECT_TRUE(p.ok()) << p.status();
  return p.ok() ? std::move(*p) : nullptr;
}

// The exit code (128 + signal for a signal death), or -1 when it did not end in time.
int ExitCode(aijobs::testing::Process* p) {
  absl::StatusOr<int> code = p->Wait(kWait);
  return code.ok() ? *code : -1;
}

std::string WriteConfig(const std::string& text, const std::string& suffix) {
  std::string path = TempPath(suffix);
  std::ofstream(path) << text;
  return path;
}

// Runs the worker with `config`; returns {exit code, stderr}.
std::pair<int, std::string> RunWithConfig(const std::string& config, const std::string& suffix) {
  std::string path = WriteConfig(config, suffix);
  auto worker = StartWorker({"--scheduler=127.0.0.1:1", absl::StrCat("--providers=", path)});
  std::pair<int, std::string> out{-1, ""};
  if (worker != nullptr) out = {ExitCode(worker.get()), worker->ReadStderr()};
  std::remove(path.c_str());
  return out;
}

TEST(ProvidersFlagTest, BadTextConfigExitsTwoNamingTheField) {
  auto [code, err] = RunWithConfig(
      R"pb(
        deployments { name: "local" provider: "sim" }
        deployments { name: "cloud" provider: "openai" base_url: "api.openai.com" model: "m" }
        model_groups {
          name: "g"
          members { deployment: "local" }
        })pb",
      ".textproto");
  EXPECT_EQ(code, 2);
  EXPECT_THAT(err, HasSubstr("deployments[1].base_url: must start with http:// or https://"));
}

TEST(ProvidersFlagTest, BadJsonConfigExitsTwoNamingTheField) {
  auto [code, err] = RunWithConfig(R"({
    "deployments": [{"name": "local", "provider": "sim"}],
    "modelGroups": [{"name": "g", "members": [{"deployment": "cloud"}]}]})",
                                   ".json");
  EXPECT_EQ(code, 2);
  EXPECT_THAT(err, HasSubstr("model_groups[0].members[0].deployment: unknown deployment "
                             "\"cloud\""));
}

TEST(ProvidersFlagTest, MissingFileExitsTwo) {
  auto worker = StartWorker({"--scheduler=127.0.0.1:1", "--providers=/nonexistent/p.textproto"});
  ASSERT_NE(worker, nullptr);
  EXPECT_EQ(ExitCode(worker.get()), 2);
  EXPECT_THAT(worker->ReadStderr(), HasSubstr("/nonexistent/p.textproto"));
}

TEST(ProvidersFlagTest, RoutesJobsOverModelGroupsAndAdvertisesTheCache) {
  std::string path = WriteConfig(R"pb(
                                   deployments { name: "primary" provider: "sim" }
                                   deployments { name: "backup" provider: "sim" }
                                   model_groups {
                                     name: "assistant"
                                     members { deployment: "primary" }
                                     members { deployment: "backup" priority: 1 }
                                     cache_ttl { seconds: 90 }
                                   })pb",
                                 ".pbtxt");
  FakeServer server(0);
  auto worker = StartWorker({absl::StrCat("--scheduler=127.0.0.1:", server.port),
                             "--worker_id=prov-test", "--job_types=chat", "--sim_ttft_ms=0",
                             "--sim_tokens=3", "--sim_tokens_per_s=0",
                             absl::StrCat("--providers=", path)});
  ASSERT_NE(worker, nullptr);
  ASSERT_TRUE(server.service.WaitFor([](const auto& m) { return !m.empty(); }))
      << "the worker never said hello: " << worker->ReadStderr();
  const auto hello = server.service.received()[0].hello();
  ASSERT_EQ(hello.cache_adverts_size(), 2);  // chat x {"assistant", "" (the default group)}
  EXPECT_EQ(hello.cache_adverts(0).job_type(), "chat");
  EXPECT_EQ(hello.cache_adverts(0).model(), "assistant");
  EXPECT_EQ(hello.cache_adverts(1).model(), "");
  EXPECT_EQ(FromProtoDuration(hello.cache_adverts(1).ttl()), absl::Seconds(90));

  // j1 runs on the group's first member; j2's input.sim (which reaches sim deployments) fails
  // attempt 1 on every member, so it fails retryably with the sim's code once both were tried.
  aijobs::v1::SchedulerMessage assign;
  for (const char* id : {"j1", "j2"}) {
    auto* a = assign.add_assignments();
    a->set_job_id(id);
    a->set_attempt(1);
    a->set_type("chat");
    *a->mutable_input() =
        JsonStruct(std::string(id) == "j1"
                       ? R"({"model": "assistant", "messages": [{"content": "hi"}]})"
                       : R"({"messages": [{"content": "hi"}], "sim": {"fail_attempts": 1}})");
  }
  ASSERT_TRUE(server.service.Send(assign));
  ASSERT_TRUE(server.service.WaitFor([](const auto& m) {
    int ended = 0;
    for (const auto& x : m) ended += x.completions_size() + x.failures_size();
    return ended == 2;
  })) << worker->ReadStderr();
  std::string text;
  for (const auto& m : server.service.received()) {
    for (const auto& o : m.outputs()) {
      if (o.job_id() == "j1") text += o.text();
    }
    for (const auto& c : m.completions()) {
      EXPECT_EQ(c.job_id(), "j1");
      EXPECT_EQ(c.result().fields().at("model").string_value(), "primary");
      EXPECT_EQ(c.result().fields().at("text").string_value(), text);
    }
    for (const auto& f : m.failures()) {
      EXPECT_EQ(f.job_id(), "j2");
      EXPECT_EQ(f.code(), "SIM_FAILURE");
      EXPECT_TRUE(f.retryable());
    }
  }
  EXPECT_FALSE(text.empty());
  ASSERT_TRUE(worker->Signal(SIGTERM).ok());
  EXPECT_EQ(ExitCode(worker.get()), 0);
  std::remove(path.c_str());
}

}  // namespace
}  // namespace aijobs::worker
