#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/message_differencer.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "aijobs/client.h"
#include "client-sdk/cli.h"
#include "client-sdk/fake_job_service.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace aijobs::ctl {
namespace {

using ::aijobs::testing::DeltaEvent;
using ::aijobs::testing::FakeJobServer;
using ::aijobs::testing::FinalEvent;
using ::aijobs::testing::StateEvent;
using ::google::protobuf::util::MessageDifferencer;
using ::testing::ElementsAre;
using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::StartsWith;

struct CliResult {
  int code;
  std::string out;
  std::string err;
};

std::vector<std::string> Lines(const std::string& text) {
  return absl::StrSplit(text, '\n', absl::SkipEmpty());
}

v1::Job ParseJob(const std::string& json) {
  v1::Job job;
  EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(json, &job).ok()) << json;
  return job;
}

class CliTest : public ::testing::Test {
 protected:
  CliResult Run(const std::vector<std::string>& args, const std::string& stdin_text = "") {
    std::vector<std::string> full = {"aijobsctl", "--server", server_.address()};
    full.insert(full.end(), args.begin(), args.end());
    std::vector<const char*> argv;
    for (const std::string& a : full) argv.push_back(a.c_str());
    std::ostringstream out, err;
    std::istringstream in(stdin_text);
    int code = RunCli(static_cast<int>(argv.size()), argv.data(), out, err, in);
    return {code, out.str(), err.str()};
  }

  v1::SubmitJobRequest LastSubmit() {
    std::vector<v1::SubmitJobRequest> requests = server_.service().submit_requests();
    EXPECT_FALSE(requests.empty());
    return requests.empty() ? v1::SubmitJobRequest() : requests.back();
  }

  // Every submitted job streams "Hello world" and ends in final_state.
  void ScriptJobsEndingIn(v1::JobState final_state) {
    server_.service().SetSubmitScript([final_state](const v1::Job& queued) {
      v1::Job done = queued;
      done.set_state(final_state);
      done.set_attempt(1);
      if (final_state == v1::SUCCEEDED) {
        (*done.mutable_result()->mutable_fields())["text"].set_string_value("Hello world");
      } else {
        done.mutable_error()->set_code("SIM_FAILURE");
        done.mutable_error()->set_message("injected");
      }
      return std::vector<v1::JobEvent>{StateEvent(queued.id(), 1, v1::RUNNING, 1),
                                       DeltaEvent(queued.id(), 2, "Hello"),
                                       DeltaEvent(queued.id(), 3, " world"), FinalEvent(4, done)};
    });
  }

  FakeJobServer server_;
};

TEST_F(CliTest, SubmitPromptBuildsChatInputAndPrintsId) {
  CliResult r = Run({"submit", "--type", "chat", "--prompt", "hi there"});
  ASSERT_EQ(r.code, 0) << r.err;
  v1::SubmitJobRequest request = LastSubmit();
  EXPECT_EQ(request.type(), "chat");
  EXPECT_TRUE(MessageDifferencer::Equals(request.input(), ChatInput("hi there")));
  // Only the id is printed, so scripts can capture it; it names the submitted job.
  ASSERT_EQ(Lines(r.out).size(), 1u) << r.out;
  CliResult get = Run({"get", Lines(r.out)[0], "--json"});
  ASSERT_EQ(get.code, 0) << get.err;
  EXPECT_TRUE(MessageDifferencer::Equals(ParseJob(get.out).input(), ChatInput("hi there")));
}

TEST_F(CliTest, SubmitPassesAllOptionalFields) {
  CliResult r = Run({"submit", "--type=embed", "--input", R"({"texts":["a"]})", "--priority", "-2",
                     "--max-attempts", "5", "--idempotency_key", "k1", "--label", "a=b", "--label",
                     "team=x=y", "--timeout_ms", "1500", "--cache_ttl_s", "3600"});
  ASSERT_EQ(r.code, 0) << r.err;
  v1::SubmitJobRequest request = LastSubmit();
  EXPECT_EQ(request.type(), "embed");
  EXPECT_EQ(request.input().fields().at("texts").list_value().values(0).string_value(), "a");
  EXPECT_EQ(request.priority(), -2);
  EXPECT_EQ(request.max_attempts(), 5);
  EXPECT_EQ(request.idempotency_key(), "k1");
  EXPECT_EQ(request.labels().at("a"), "b");
  EXPECT_EQ(request.labels().at("team"), "x=y");
  EXPECT_EQ(request.timeout().seconds(), 1);
  EXPECT_EQ(request.timeout().nanos(), 500000000);
  EXPECT_EQ(request.cache().ttl().seconds(), 3600);
}

TEST_F(CliTest, SubmitRejectsANonPositiveCacheTtl) {
  CliResult r = Run({"submit", "--type", "chat", "--prompt", "hi", "--cache_ttl_s", "0"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("cache_ttl_s"), std::string::npos) << r.err;
}

TEST_F(CliTest, SubmitReadsInputFromFile) {
  const std::string path = ::testing::TempDir() + "/aijobsctl_input.json";
  {
    std::ofstream file(path);
    file << R"({"messages": [{"role": "user", "content": "from file"}]})"
         << "\n";
  }
  CliResult r = Run({"submit", "--type", "chat", "--input", "@" + path});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(MessageDifferencer::Equals(LastSubmit().input(), ChatInput("from file")));

  CliResult missing = Run({"submit", "--type", "chat", "--input", "@" + path + ".missing"});
  EXPECT_EQ(missing.code, 2);
  EXPECT_THAT(missing.err, HasSubstr("cannot read --input file"));
  EXPECT_EQ(server_.service().submit_requests().size(), 1u);
}

TEST_F(CliTest, SubmitReadsInputFromStdin) {
  CliResult r = Run({"submit", "--type", "chat", "--input", "-"},
                    R"({"messages":[{"role":"user","content":"from stdin"}]})");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(MessageDifferencer::Equals(LastSubmit().input(), ChatInput("from stdin")));
}

TEST_F(CliTest, InvalidJsonInputIsRejectedBeforeAnyRpc) {
  CliResult r = Run({"submit", "--type", "chat", "--input", R"({"messages": [)"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, StartsWith("aijobsctl: invalid --input JSON from --input: "));
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;

  CliResult not_object = Run({"submit", "--type", "chat", "--input", "-"}, "[1, 2]");
  EXPECT_EQ(not_object.code, 2);
  EXPECT_THAT(not_object.err, HasSubstr("expected a JSON object"));
  EXPECT_EQ(server_.service().rpc_count(), 0);
}

TEST_F(CliTest, MissingTypeIsAUsageError) {
  CliResult r = Run({"submit", "--prompt", "hi"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, StartsWith("aijobsctl: --type is required\nusage: aijobsctl submit"));
  EXPECT_EQ(server_.service().rpc_count(), 0);
}

TEST_F(CliTest, OtherUsageErrors) {
  EXPECT_EQ(Run({}).code, 2);
  EXPECT_EQ(Run({"frobnicate"}).code, 2);
  EXPECT_EQ(Run({"get"}).code, 2);
  EXPECT_EQ(Run({"submit", "--type", "chat"}).code, 2);  // no input
  EXPECT_EQ(Run({"submit", "--type", "chat", "--prompt", "a", "--input", "{}"}).code, 2);
  EXPECT_EQ(Run({"submit", "--type", "chat", "--prompt", "a", "--priority", "high"}).code, 2);
  EXPECT_EQ(Run({"submit", "--type", "chat", "--prompt", "a", "--label", "novalue"}).code, 2);
  EXPECT_EQ(Run({"submit", "--type", "chat", "--prompt", "a", "--bogus"}).code, 2);
  EXPECT_EQ(Run({"list", "--state", "sleeping"}).code, 2);
  EXPECT_EQ(Run({"--timeout", "soon", "get", "x"}).code, 2);
  EXPECT_EQ(server_.service().rpc_count(), 0);
}

TEST_F(CliTest, SubmitWatchPrintsDeltasThenJobJsonOnLastLine) {
  ScriptJobsEndingIn(v1::SUCCEEDED);
  CliResult r = Run({"submit", "--type", "chat", "--prompt", "hi", "--watch", "--wait", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  std::vector<std::string> lines = absl::StrSplit(r.out, '\n');
  ASSERT_EQ(lines.size(), 3u) << r.out;  // text, JSON, "" after the final newline
  EXPECT_EQ(lines[0], "Hello world");
  v1::Job job = ParseJob(lines[1]);
  EXPECT_EQ(job.state(), v1::SUCCEEDED);
  EXPECT_EQ(job.result().fields().at("text").string_value(), "Hello world");
  EXPECT_EQ(lines[2], "");
}

TEST_F(CliTest, SubmitWatchMarksRestartedAttemptOnStderr) {
  server_.service().SetSubmitScript([](const v1::Job& queued) {
    v1::Job done = queued;
    done.set_state(v1::SUCCEEDED);
    done.set_attempt(2);
    return std::vector<v1::JobEvent>{
        StateEvent(queued.id(), 1, v1::RUNNING, 1),
        DeltaEvent(queued.id(), 2, "Hel", 1),
        StateEvent(queued.id(), 3, v1::QUEUED, 1),
        StateEvent(queued.id(), 4, v1::RUNNING, 2, /*discard_output=*/true),
        DeltaEvent(queued.id(), 5, "Hello", 2),
        FinalEvent(6, done)};
  });
  CliResult r = Run({"submit", "--type", "chat", "--prompt", "hi", "--watch"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("[attempt 2: restarting output]"));
  std::vector<std::string> lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 3u) << r.out;
  EXPECT_EQ(lines[0], "Hel");
  EXPECT_EQ(lines[1], "Hello");
  EXPECT_THAT(lines[2], EndsWith(" SUCCEEDED"));
}

TEST_F(CliTest, WaitExitCodeReflectsFailedJob) {
  ScriptJobsEndingIn(v1::FAILED);
  CliResult waited = Run({"submit", "--type", "chat", "--prompt", "hi", "--wait"});
  EXPECT_EQ(waited.code, 1);
  EXPECT_THAT(waited.out, HasSubstr(" FAILED (SIM_FAILURE: injected)"));
  EXPECT_EQ(waited.out.find("Hello"), std::string::npos);  // --wait alone prints no text

  CliResult watched = Run({"submit", "--type", "chat", "--prompt", "hi", "--watch", "--json"});
  EXPECT_EQ(watched.code, 1);
  EXPECT_EQ(ParseJob(Lines(watched.out).back()).state(), v1::FAILED);

  CliResult accepted = Run({"submit", "--type", "chat", "--prompt", "hi"});
  EXPECT_EQ(accepted.code, 0) << accepted.err;
}

TEST_F(CliTest, GetUnknownIdPrintsCodeNameAndMessage) {
  CliResult r = Run({"get", "no-such-job"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "aijobsctl: NOT_FOUND: job no-such-job not found\n");
  EXPECT_EQ(r.out, "");
}

TEST_F(CliTest, UnreachableServerIsAnRpcError) {
  std::vector<const char*> argv = {"aijobsctl", "--server", "127.0.0.1:1", "--timeout", "2s",
                                   "get",       "x"};
  std::ostringstream out, err;
  std::istringstream in;
  EXPECT_EQ(RunCli(static_cast<int>(argv.size()), argv.data(), out, err, in), 1);
  EXPECT_THAT(err.str(), StartsWith("aijobsctl: UNAVAILABLE: "));
}

TEST_F(CliTest, GetJsonAndHumanForms) {
  v1::Job job;
  job.set_id("job-1");
  job.set_type("chat");
  job.set_state(v1::FAILED);
  job.set_attempt(3);
  job.set_max_attempts(3);
  job.mutable_error()->set_code("TIMEOUT");
  job.mutable_error()->set_message("attempt deadline passed");
  server_.service().PutJob(job);

  CliResult json = Run({"get", "job-1", "--json"});
  ASSERT_EQ(json.code, 0) << json.err;
  EXPECT_EQ(Lines(json.out).size(), 1u);
  EXPECT_TRUE(MessageDifferencer::Equals(ParseJob(json.out), job));

  CliResult human = Run({"get", "job-1"});
  ASSERT_EQ(human.code, 0) << human.err;
  EXPECT_THAT(human.out, HasSubstr("state:     FAILED"));
  EXPECT_THAT(human.out, HasSubstr("attempt:   3/3"));
  EXPECT_THAT(human.out, HasSubstr("TIMEOUT: attempt deadline passed"));
}

TEST_F(CliTest, WatchCommandPrintsEventsAsJsonLinesFromAfterSeq) {
  ScriptJobsEndingIn(v1::SUCCEEDED);
  const std::string id = Lines(Run({"submit", "--type", "chat", "--prompt", "x"}).out)[0];
  CliResult r = Run({"watch", id, "--after", "2", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  std::vector<int64_t> seqs;
  for (const std::string& line : Lines(r.out)) {
    v1::JobEvent event;
    ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(line, &event).ok()) << line;
    seqs.push_back(event.seq());
  }
  EXPECT_THAT(seqs, ElementsAre(3, 4));
  EXPECT_THAT(server_.service().watch_after_seqs(id), ElementsAre(2));

  CliResult text = Run({"watch", id});
  ASSERT_EQ(text.code, 0) << text.err;
  EXPECT_THAT(text.out, StartsWith("Hello world\n" + id + " SUCCEEDED"));
}

TEST_F(CliTest, CancelAndRetry) {
  const std::string id = Lines(Run({"submit", "--type", "chat", "--prompt", "x"}).out)[0];
  CliResult cancelled = Run({"cancel", id, "--reason", "not needed"});
  ASSERT_EQ(cancelled.code, 0) << cancelled.err;
  EXPECT_THAT(cancelled.out, StartsWith(id + " CANCELLED"));
  EXPECT_EQ(server_.service().cancel_requests().back().reason(), "not needed");

  CliResult again = Run({"cancel", id});
  EXPECT_EQ(again.code, 1);
  EXPECT_THAT(again.err, StartsWith("aijobsctl: FAILED_PRECONDITION: "));

  CliResult retried = Run({"retry", id, "--json"});
  ASSERT_EQ(retried.code, 0) << retried.err;
  EXPECT_EQ(ParseJob(retried.out).state(), v1::QUEUED);
}

TEST_F(CliTest, ListFiltersByCaseInsensitiveStateAndPages) {
  for (int i = 0; i < 3; ++i) Run({"submit", "--type", "chat", "--prompt", "x"});
  CliResult r = Run({"list", "--state", "queued", "--type", "chat", "--page_size", "2", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  const v1::ListJobsRequest request = server_.service().list_requests().back();
  EXPECT_EQ(request.state(), v1::QUEUED);
  EXPECT_EQ(request.type(), "chat");
  EXPECT_EQ(request.page_size(), 2);
  v1::ListJobsResponse page;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(r.out, &page).ok()) << r.out;
  EXPECT_EQ(page.jobs_size(), 2);
  ASSERT_FALSE(page.next_page_token().empty());

  CliResult next = Run({"list", "--page_token", page.next_page_token(), "--page_size", "2"});
  ASSERT_EQ(next.code, 0) << next.err;
  EXPECT_EQ(Lines(next.out).size(), 1u) << next.out;
  EXPECT_EQ(server_.service().list_requests().back().page_token(), page.next_page_token());
}

}  // namespace
}  // namespace aijobs::ctl
