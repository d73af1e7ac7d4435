// End-to-end: aijobsctl against the real scheduler and worker.
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/uuid.h"
#include "tests/e2e_cluster.h"

namespace aijobs::testing {
namespace {

using aijobs::v1::Job;

class E2eCliTest : public E2eTest {
 protected:
  absl::StatusOr<CommandResult> Ctl(std::vector<std::string> args) {
    args.insert(args.begin(), {"--server", scheduler_address()});
    return RunCommand(BinPath("aijobsctl"), args, absl::Seconds(60));
  }
};

TEST_F(E2eCliTest, SubmitWatchWaitPrintsStreamAndFinalJobJson) {
  ASSERT_NO_FATAL_FAILURE(StartScheduler());
  ASSERT_NE(StartWorker("w1", {"--sim_tokens", "16"}), nullptr);

  auto r = Ctl({"submit", "--type", "chat", "--prompt", "What is polymorphism?", "--watch",
                "--wait", "--json"});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->exit_code, 0) << "stdout:\n" << r->out << "\nstderr:\n" << r->err;

  std::vector<std::string> lines = absl::StrSplit(absl::StripTrailingAsciiWhitespace(r->out), '\n');
  ASSERT_FALSE(lines.empty());
  Job job;
  auto parsed = google::protobuf::util::JsonStringToMessage(lines.back(), &job);
  ASSERT_TRUE(parsed.ok()) << parsed.ToString() << "\nlast line: " << lines.back();
  EXPECT_EQ(job.state(), aijobs::v1::SUCCEEDED);
  EXPECT_EQ(job.type(), "chat");
  const std::string text = ResultText(job);
  ASSERT_FALSE(text.empty());
  // The streamed text precedes the JSON line.
  std::string before_json = r->out.substr(0, r->out.rfind(lines.back()));
  EXPECT_NE(before_json.find(text), std::string::npos)
      << "streamed output does not contain the result text\nstdout:\n"
      << r->out;

  // The CLI talked to the same scheduler: the job is there.
  Job got;
  ASSERT_TRUE(Get(job.id(), &got).ok());
  EXPECT_EQ(got.state(), aijobs::v1::SUCCEEDED);
}

// Regression (issue 10): `--help` on the scheduler and the gateway printed "No flags
// matched" instead of their flags.
TEST(BinaryHelpTest, HelpListsEachBinarysOwnFlags) {
  for (const auto& [binary, flag] : std::vector<std::pair<std::string, std::string>>{
           {"aijobs-scheduler", "--database_url"},
           {"aijobs-gateway", "--cors_allowed_origins"},
           {"aijobs-worker", "--drain_timeout_ms"}}) {
    auto r = RunCommand(BinPath(binary), {"--help"}, absl::Seconds(30));
    ASSERT_TRUE(r.ok()) << binary << ": " << r.status();
    std::string text = r->out + r->err;
    EXPECT_EQ(text.find("No flags matched"), std::string::npos) << binary << ":\n" << text;
    EXPECT_NE(text.find(flag), std::string::npos) << binary << ":\n" << text;
  }
}

TEST_F(E2eCliTest, GetUnknownJobFailsWithNotFound) {
  ASSERT_NO_FATAL_FAILURE(StartScheduler());
  auto r = Ctl({"get", NewUuid()});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_NE(r->exit_code, 0);
  EXPECT_NE(r->err.find("NOT_FOUND"), std::string::npos) << "stderr:\n" << r->err;
}

}  // namespace
}  // namespace aijobs::testing
