// Runs the aijobs-worker binary (from $AIJOBS_BIN_DIR, set by ctest) with --providers: a bad
// file stops start-up with exit code 2 and a message naming the field; a good one routes jobs
// over its model groups and advertises its response-cache opt-ins in hello.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/time_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "workers/fake_scheduler.h"
#include "workers/test_util.h"

extern char** environ;

namespace aijobs::worker {
namespace {

using testing::FakeServer;
using ::testing::HasSubstr;
using testing::JsonStruct;
using testing::kWait;

std::string WorkerBinary() {
  const char* dir = std::getenv("AIJOBS_BIN_DIR");
  return dir == nullptr ? "" : absl::StrCat(dir, "/aijobs-worker");
}

std::string TempPath(const std::string& suffix) {
  static int counter = 0;
  return absl::StrCat(::testing::TempDir(), "/providers_flag_", getpid(), "_", counter++, suffix);
}

// Starts the binary with stderr going to `stderr_path`; returns its pid (or -1).
pid_t Spawn(const std::vector<std::string>& args, const std::string& stderr_path) {
  std::vector<char*> argv;
  std::string bin = WorkerBinary();
  argv.push_back(bin.data());
  std::vector<std::string> copy = args;
  for (std::string& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 2, stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0644);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, bin.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  return rc == 0 ? pid : -1;
}

// Waits for the process to exit; returns its exit code, or -1 on timeout or a signal death
// (then the process is killed).
int WaitExit(pid_t pid, absl::Duration timeout) {
  absl::Time until = absl::Now() + timeout;
  for (;;) {
    int status = 0;
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (absl::Now() >= until) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return -1;
    }
    absl::SleepFor(absl::Milliseconds(10));  // polling a child's exit; bounded by `until`
  }
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string WriteConfig(const std::string& text, const std::string& suffix) {
  std::string path = TempPath(suffix);
  std::ofstream(path) << text;
  return path;
}

// Runs the worker with `config`; returns {exit code, stderr}.
std::pair<int, std::string> RunWithConfig(const std::string& config, const std::string& suffix) {
  std::string path = WriteConfig(config, suffix);
  std::string err = TempPath(".stderr");
  pid_t pid = Spawn({"--scheduler=127.0.0.1:1", absl::StrCat("--providers=", path)}, err);
  EXPECT_GT(pid, 0);
  int code = pid > 0 ? WaitExit(pid, kWait) : -1;
  std::string text = ReadFile(err);
  std::remove(path.c_str());
  std::remove(err.c_str());
  return {code, text};
}

TEST(ProvidersFlagTest, BadTextConfigExitsTwoNamingTheField) {
  ASSERT_FALSE(WorkerBinary().empty()) << "AIJOBS_BIN_DIR is not set: run this test via ctest";
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
  ASSERT_FALSE(WorkerBinary().empty()) << "AIJOBS_BIN_DIR is not set: run this test via ctest";
  auto [code, err] = RunWithConfig(R"({
    "deployments": [{"name": "local", "provider": "sim"}],
    "modelGroups": [{"name": "g", "members": [{"deployment": "cloud"}]}]})",
                                   ".json");
  EXPECT_EQ(code, 2);
  EXPECT_THAT(err, HasSubstr("model_groups[0].members[0].deployment: unknown deployment "
                             "\"cloud\""));
}

TEST(ProvidersFlagTest, MissingFileExitsTwo) {
  ASSERT_FALSE(WorkerBinary().empty()) << "AIJOBS_BIN_DIR is not set: run this test via ctest";
  std::string err = TempPath(".stderr");
  pid_t pid = Spawn({"--scheduler=127.0.0.1:1", "--providers=/nonexistent/p.textproto"}, err);
  ASSERT_GT(pid, 0);
  EXPECT_EQ(WaitExit(pid, kWait), 2);
  EXPECT_THAT(ReadFile(err), HasSubstr("/nonexistent/p.textproto"));
  std::remove(err.c_str());
}

TEST(ProvidersFlagTest, RoutesJobsOverModelGroupsAndAdvertisesTheCache) {
  ASSERT_FALSE(WorkerBinary().empty()) << "AIJOBS_BIN_DIR is not set: run this test via ctest";
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
  std::string err = TempPath(".stderr");
  FakeServer server(0);
  pid_t pid = Spawn({absl::StrCat("--scheduler=127.0.0.1:", server.port), "--worker_id=prov-test",
                     "--job_types=chat", "--sim_ttft_ms=0", "--sim_tokens=3",
                     "--sim_tokens_per_s=0", absl::StrCat("--providers=", path)},
                    err);
  ASSERT_GT(pid, 0);
  ASSERT_TRUE(server.service.WaitFor([](const auto& m) { return !m.empty(); }))
      << "the worker never said hello: " << ReadFile(err);
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
  })) << ReadFile(err);
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
  ASSERT_EQ(kill(pid, SIGTERM), 0);
  EXPECT_EQ(WaitExit(pid, kWait), 0);
  std::remove(path.c_str());
  std::remove(err.c_str());
}

}  // namespace
}  // namespace aijobs::worker
