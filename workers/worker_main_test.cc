// Runs the aijobs-worker binary (from $AIJOBS_BIN_DIR, set by ctest) against an in-process
// fake scheduler: flags, a job end to end, and SIGTERM -> drain -> exit 0.
#include <signal.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/fixtures/process.h"
#include "workers/fake_scheduler.h"
#include "workers/test_util.h"

namespace aijobs::worker {
namespace {

using testing::FakeServer;
using testing::JsonStruct;
using testing::kWait;

// Starts aijobs-worker (from $AIJOBS_BIN_DIR) with `args`; the Process kills it if the test
// ends early.
std::unique_ptr<aijobs::testing::Process> StartWorker(std::vector<std::string> args) {
  absl::StatusOr<std::unique_ptr<aijobs::testing::Process>> p = aijobs::testing::Process::Start(
      {aijobs::testing::BinPath("aijobs-worker"), std::move(args), {}, false, ""});
  EXPECT_TRUE(p.ok()) << p.status();
  return p.ok() ? std::move(*p) : nullptr;
}

// The exit code (128 + signal for a signal death), or -1 when it did not end in time.
int ExitCode(aijobs::testing::Process* p) {
  absl::StatusOr<int> code = p->Wait(kWait);
  return code.ok() ? *code : -1;
}

TEST(WorkerMainTest, MissingSchedulerFlagExitsWithUsageError) {
  auto worker = StartWorker({});
  ASSERT_NE(worker, nullptr);
  EXPECT_EQ(ExitCode(worker.get()), 2);
}

TEST(WorkerMainTest, RunsAJobThenDrainsOnSigtermAndExitsZero) {
  FakeServer server(0);
  auto worker = StartWorker({absl::StrCat("--scheduler=127.0.0.1:", server.port), "--worker_id=main-test",
                     "--slots=4", "--job_types=chat", "--sim_ttft_ms=0", "--sim_tokens=4",
                            "--sim_tokens_per_s=0"});
  ASSERT_NE(worker, nullptr);
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
  ASSERT_TRUE(worker->Signal(SIGTERM).ok());
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
  EXPECT_EQ(ExitCode(worker.get()), 0);
}

}  // namespace
}  // namespace aijobs::worker
