// Runs the aijobs-worker binary (from $AIJOBS_BIN_DIR, set by ctest) against an in-process
// fake scheduler: flags, a job end to end, and SIGTERM -> drain -> exit 0.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "workers/fake_scheduler.h"
#include "workers/test_util.h"

extern char** environ;

namespace aijobs::worker {
namespace {

using testing::FakeServer;
using testing::JsonStruct;
using testing::kWait;

std::string WorkerBinary() {
  const char* dir = std::getenv("AIJOBS_BIN_DIR");
  return dir == nullptr ? "" : absl::StrCat(dir, "/aijobs-worker");
}

// Starts the binary; returns its pid (or -1).
pid_t Spawn(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  std::string bin = WorkerBinary();
  argv.push_back(bin.data());
  std::vector<std::string> copy = args;
  for (std::string& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  if (posix_spawn(&pid, bin.c_str(), nullptr, nullptr, argv.data(), environ) != 0) return -1;
  return pid;
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

TEST(WorkerMainTest, MissingSchedulerFlagExitsWithUsageError) {
  ASSERT_FALSE(WorkerBinary().empty()) << "AIJOBS_BIN_DIR is not set: run this test via ctest";
  pid_t pid = Spawn({});
  ASSERT_GT(pid, 0);
  EXPECT_EQ(WaitExit(pid, kWait), 2);
}

TEST(WorkerMainTest, RunsAJobThenDrainsOnSigtermAndExitsZero) {
  ASSERT_FALSE(WorkerBinary().empty()) << "AIJOBS_BIN_DIR is not set: run this test via ctest";
  FakeServer server(0);
  pid_t pid = Spawn({absl::StrCat("--scheduler=127.0.0.1:", server.port), "--worker_id=main-test",
                     "--slots=4", "--job_types=chat", "--sim_ttft_ms=0", "--sim_tokens=4",
                     "--sim_tokens_per_s=0"});
  ASSERT_GT(pid, 0);
  ASSERT_TRUE(server.service.WaitFor([](const auto& m) { return !m.empty(); }))
      << "the worker never said hello";
  const auto hello = server.service.received()[0].hello();
  EXPECT_EQ(hello.worker_id(), "main-test");
  ASSERT_EQ(hello.job_types_size(), 1);
  EXPECT_EQ(hello.job_types(0), "chat");
  EXPECT_EQ(hello.slots(), 4);

  // A job that is still running when SIGTERM arrives must finish before the stream closes.
  aijobs::v1::SchedulerMessage assign;
  auto* a = assign.add_assignments();
  a->set_job_id("j1");
  a->set_attempt(1);
  a->set_type("chat");
  *a->mutable_input() = JsonStruct(R"({"messages": [{"content": "hi"}], "sim": {"ttft_ms": 400}})");
  ASSERT_TRUE(server.service.Send(assign));
  ASSERT_TRUE(server.service.WaitFor([](const auto& m) {
    for (const auto& x : m) {
      for (const auto& r : x.heartbeat().running()) {
        if (r.job_id() == "j1") return true;
      }
    }
    return false;
  }));
  ASSERT_EQ(kill(pid, SIGTERM), 0);
  ASSERT_TRUE(server.service.WaitClosed(1));
  bool draining = false;
  std::string text;
  bool completed = false;
  for (const auto& m : server.service.received()) {
    draining |= m.draining();
    for (const auto& o : m.outputs()) text += o.text();
    for (const auto& c : m.completions()) {
      completed = true;
      EXPECT_EQ(c.result().fields().at("text").string_value(), text);
    }
  }
  EXPECT_TRUE(draining);
  EXPECT_TRUE(completed);
  EXPECT_EQ(WaitExit(pid, kWait), 0);
}

}  // namespace
}  // namespace aijobs::worker
