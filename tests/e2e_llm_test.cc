// End-to-end: the worker calling a real (fake) OpenAI-compatible HTTP server. The real
// aijobs-scheduler and aijobs-worker binaries run against a private PostgreSQL; the worker
// gets a --providers file whose openai deployments point at FakeOpenAiServer instances
// running inside this test process, whose request records (arrival times, bodies, headers)
// are the evidence of what the worker did on the wire. Faults are chosen per request by a
// `[fake ...]` directive at the start of the user message, or by a server's default.
// Proves: streamed deltas reach a watcher in order; Retry-After is honoured inside the call;
// fallback to the next deployment before output but never after; the circuit breaker opens
// and recovers; the token bucket holds the request rate across 200 concurrent jobs; a cache
// hit makes no HTTP call; a stalled stream times out and the job retries; a bad deployment
// fails start-up naming the field.
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "aijobs/v1/openai.pb.h"
#include "common/time_util.h"
#include "tests/e2e_cluster.h"
#include "tests/fake_openai/fake_openai_server.h"

namespace aijobs::testing {
namespace {

using aijobs::fake_openai::Behavior;
using aijobs::fake_openai::FakeOpenAiServer;
using aijobs::fake_openai::FakeToken;
using aijobs::fake_openai::RecordedRequest;
using aijobs::v1::Job;
using aijobs::v1::JobEvent;

Behavior Fake(const std::string& directive) {
  absl::StatusOr<Behavior> b = aijobs::fake_openai::ParseBehavior(directive);
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? *b : Behavior();
}

// The text of the fake's first `n` tokens: "tok0 tok1 ...".
std::string Tokens(int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s += FakeToken(i);
  return s;
}

// A chat job for model group `model` with one user message (test text: no JSON escaping).
aijobs::v1::SubmitJobRequest LlmChat(const std::string& model, const std::string& content) {
  return RequestFromJson(absl::StrCat(R"({"type": "chat", "input": {"model": ")", model,
                                      R"(", "messages": [{"role": "user", "content": ")", content,
                                      R"("}]}})"));
}

std::string ResultModel(const Job& job) {
  auto it = job.result().fields().find("model");
  return it == job.result().fields().end() ? "" : it->second.string_value();
}

double ResultUsage(const Job& job, const std::string& key) {
  auto it = job.result().fields().find("usage");
  if (it == job.result().fields().end()) return -1;
  const auto& u = it->second.struct_value().fields();
  auto v = u.find(key);
  return v == u.end() ? -1 : v->second.number_value();
}

// An openai deployment named `name` on `server`, plus `extra` text-format fields.
std::string OpenAiDeployment(const std::string& name, const FakeOpenAiServer& server,
                             const std::string& extra = "") {
  return absl::StrCat("deployments {\n  name: \"", name,
                      "\"\n  provider: \"openai\"\n  base_url: \"", server.base_url(),
                      "\"\n  model: \"model-", name, "\"\n  ", extra, "\n}\n");
}

// In-call retries with short backoffs, so a wait that is not the server's hint is obvious.
constexpr char kFastRetry[] =
    "retry { initial_backoff { nanos: 20000000 } max_backoff { nanos: 50000000 } }";

// Group `group` over primary (priority 0) and backup (priority 1).
std::string PrimaryBackupGroup(const std::string& group) {
  return absl::StrCat("model_groups {\n  name: \"", group,
                      "\"\n  members { deployment: \"primary\" priority: 0 }\n"
                      "  members { deployment: \"backup\" priority: 1 }\n}\n");
}

std::vector<const JobEvent*> Deltas(const std::vector<JobEvent>& events) {
  std::vector<const JobEvent*> out;
  for (const JobEvent& e : events) {
    if (e.has_output_delta()) out.push_back(&e);
  }
  return out;
}

// The StateChange events of `events` (pointers into it).
std::vector<const aijobs::v1::StateChange*> StateChanges(const std::vector<JobEvent>& events) {
  std::vector<const aijobs::v1::StateChange*> out;
  for (const JobEvent& e : events) {
    if (e.has_state_change()) out.push_back(&e.state_change());
  }
  return out;
}

class E2eLlmTest : public E2eTest {
 protected:
  void TearDown() override {
    E2eTest::TearDown();
    for (const std::string& f : files_) std::remove(f.c_str());
  }

  // Watches `job_id` from the start to its end into `*w`; a fatal failure unless the stream
  // ended OK with the final job (call it under ASSERT_NO_FATAL_FAILURE).
  void WatchToFinalJob(const std::string& job_id, WatchResult* w) {
    *w = WatchToEnd(job_id, 0, absl::Seconds(30));
    ASSERT_TRUE(w->status.ok()) << w->status.error_message();
    ASSERT_TRUE(!w->events.empty() && w->events.back().has_final_job());
  }

  // Writes `config` (text format) to a fresh file and returns its path.
  std::string WriteProviders(const std::string& config) {
    std::string path = absl::StrCat(LogDir(), "/providers-", ++file_counter_, "-",
                                    absl::ToUnixMicros(absl::Now()), ".textproto");
    std::ofstream out(path);
    out << config;
    EXPECT_TRUE(out.good()) << path;
    files_.push_back(path);
    return path;
  }

  // Starts a worker serving `config` (text format) with --providers.
  Process* StartLlmWorker(const std::string& id, const std::string& config,
                          std::vector<std::string> extra_flags = {}) {
    extra_flags.insert(extra_flags.begin(), {"--providers", WriteProviders(config)});
    return StartWorker(id, extra_flags);
  }

  // Submits `req` and waits for SUCCEEDED; an empty Job (and a test failure) otherwise.
  Job RunToSuccess(const aijobs::v1::SubmitJobRequest& req,
                   absl::Duration timeout = absl::Seconds(30)) {
    Job job;
    grpc::Status s = Submit(req, &job);
    EXPECT_TRUE(s.ok()) << s.error_message();
    if (!s.ok()) return Job();
    auto done = WaitForState(job.id(), aijobs::v1::SUCCEEDED, timeout);
    EXPECT_TRUE(done.ok()) << done.status();
    return done.ok() ? *done : Job();
  }

 private:
  int file_counter_ = 0;
  std::vector<std::string> files_;
};

// 1. A streamed answer reaches a WatchJob client delta by delta, in order, as the provider
// sends it; the result carries the text, the deployment and the usage. The API key from the
// environment reaches the provider and never the worker's log.
TEST_F(E2eLlmTest, StreamedDeltasReachAWatcherInOrder) {
  FakeOpenAiServer fake;
  ASSERT_TRUE(fake.Start().ok());
  ASSERT_EQ(setenv("AIJOBS_E2E_LLM_KEY", "sk-e2e-never-logged", 1), 0);
  ASSERT_NO_FATAL_FAILURE(StartScheduler());
  Process* worker =
      StartLlmWorker("w1", OpenAiDeployment("gpt", fake, R"(api_key_env: "AIJOBS_E2E_LLM_KEY")") +
                               R"pb(model_groups {
                                      name: "chat-model"
                                      members { deployment: "gpt" }
                                    })pb");
  ASSERT_NE(worker, nullptr);

  constexpr int kTokens = 20;
  Job job;
  ASSERT_TRUE(Submit(LlmChat("chat-model", "[fake tokens=20 rate=25] Tell me a story"), &job).ok());
  EventCollector watcher(stub(), job.id());
  WatchResult w = watcher.Finish(absl::Seconds(30));
  ASSERT_TRUE(w.status.ok()) << w.status.error_message();

  std::vector<const JobEvent*> deltas = Deltas(w.events);
  std::string streamed;
  for (const JobEvent* d : deltas) {
    EXPECT_EQ(d->output_delta().attempt(), 1);
    streamed += d->output_delta().text();
  }
  EXPECT_EQ(streamed, Tokens(kTokens));
  for (size_t i = 1; i < w.events.size(); ++i) {
    EXPECT_GT(w.events[i].seq(), w.events[i - 1].seq()) << "event " << i;
  }
  // Streamed as the provider produced it (20 tokens over ~0.8 s), not one blob at the end.
  ASSERT_GE(deltas.size(), 5u) << "the answer did not arrive as a stream";
  absl::Duration span =
      FromProtoTimestamp(deltas.back()->time()) - FromProtoTimestamp(deltas.front()->time());
  EXPECT_GE(span, absl::Milliseconds(400)) << "deltas were not relayed as they came";

  ASSERT_FALSE(w.events.empty());
  ASSERT_TRUE(w.events.back().has_final_job());
  const Job& done = w.events.back().final_job();
  EXPECT_EQ(done.state(), aijobs::v1::SUCCEEDED) << done.ShortDebugString();
  EXPECT_EQ(done.attempt(), 1);
  EXPECT_EQ(ResultText(done), Tokens(kTokens));
  EXPECT_EQ(ResultModel(done), "gpt");
  EXPECT_EQ(ResultUsage(done, "completion_tokens"), kTokens);
  EXPECT_GT(ResultUsage(done, "prompt_tokens"), 0);

  // What went over the wire.
  ASSERT_EQ(fake.request_count(), 1u);
  RecordedRequest r = fake.requests()[0];
  EXPECT_EQ(r.method, "POST");
  EXPECT_EQ(r.target, "/v1/chat/completions");
  EXPECT_EQ(r.Header("authorization"), "Bearer sk-e2e-never-logged");
  aijobs::openai::ChatCompletionRequest body;
  google::protobuf::util::JsonParseOptions lenient;
  lenient.ignore_unknown_fields = true;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(r.body, &body, lenient).ok()) << r.body;
  EXPECT_EQ(body.model(), "model-gpt");
  EXPECT_TRUE(body.stream());
  EXPECT_TRUE(body.stream_options().include_usage());
  ASSERT_EQ(body.messages_size(), 1);
  EXPECT_EQ(body.messages(0).content(), "[fake tokens=20 rate=25] Tell me a story");
  EXPECT_FALSE(absl::StrContains(worker->ReadStdout(), "sk-e2e-never-logged"));
}

// 2. A 429 with Retry-After: 1 is retried inside the call after the server's one second
// (the configured backoff is 20 ms), so the job succeeds on its first attempt.
TEST_F(E2eLlmTest, RetryAfterIsHonouredInsideTheCall) {
  FakeOpenAiServer fake;
  ASSERT_TRUE(fake.Start().ok());
  ASSERT_NO_FATAL_FAILURE(StartScheduler());
  ASSERT_NE(StartLlmWorker("w1", OpenAiDeployment("gpt", fake, kFastRetry) +
                                     R"pb(model_groups {
                                            name: "m"
                                            members { deployment: "gpt" }
                                          })pb"),
            nullptr);

  Job job = RunToSuccess(LlmChat("m", "[fake status=429 retry_after=1 times=1] hello"));
  EXPECT_EQ(job.attempt(), 1) << "the 429 went to a job-level retry instead of an in-call one";
  EXPECT_EQ(ResultText(job), Tokens(5));
  std::vector<RecordedRequest> reqs = fake.requests();
  ASSERT_EQ(reqs.size(), 2u);
  absl::Duration gap = reqs[1].arrival - reqs[0].arrival;
  EXPECT_GE(gap, absl::Milliseconds(950)) << "Retry-After: 1 was not honoured";
  EXPECT_LT(gap, absl::Seconds(3));
}

// 3. A primary that answers 503 (after its own in-call retry) falls back to the backup
// before any output: the job succeeds on attempt 1 with the backup's answer.
TEST_F(E2eLlmTest, FallsBackToTheSecondDeploymentBeforeOutput) {
  FakeOpenAiServer primary(Fake("status=503"));
  FakeOpenAiServer backup(Fake("tokens=7"));
  ASSERT_TRUE(primary.Start().ok());
  ASSERT_TRUE(backup.Start().ok());
  ASSERT_NO_FATAL_FAILURE(StartScheduler());
  ASSERT_NE(StartLlmWorker("w1", OpenAiDeployment("primary", primary,
                                                  "retry { max_retries: 1 initial_backoff { nanos: "
                                                  "20000000 } }") +
                                     OpenAiDeployment("backup", backup) + PrimaryBackupGroup("g")),
            nullptr);

  Job job;
  ASSERT_TRUE(Submit(LlmChat("g", "Which deployment answers?"), &job).ok());
  WatchResult w;
  ASSERT_NO_FATAL_FAILURE(WatchToFinalJob(job.id(), &w));
  const Job& done = w.events.back().final_job();
  EXPECT_EQ(done.state(), aijobs::v1::SUCCEEDED) << done.ShortDebugString();
  EXPECT_EQ(done.attempt(), 1);
  EXPECT_EQ(ResultModel(done), "backup");
  EXPECT_EQ(ResultText(done), Tokens(7));
  EXPECT_EQ(AssembleText(w.events), Tokens(7));
  // The primary was tried first (once plus its one in-call retry), then the backup.
  std::vector<RecordedRequest> p = primary.requests();
  std::vector<RecordedRequest> b = backup.requests();
  ASSERT_EQ(p.size(), 2u);
  ASSERT_EQ(b.size(), 1u);
  EXPECT_GE(b[0].arrival, p[1].arrival);
}

// 4. A primary that cuts its stream after 3 tokens: the attempt fails retryably with no
// fallback (the backup's text must never follow the primary's), watchers are told to
// discard attempt 1's output, and the final text is one deployment's whole answer.
TEST_F(E2eLlmTest, NoFallbackOnceOutputHasStreamed) {
  FakeOpenAiServer primary(Fake("tokens=10"));
  FakeOpenAiServer backup(Fake("tokens=6"));
  ASSERT_TRUE(primary.Start().ok());
  ASSERT_TRUE(backup.Start().ok());
  primary.Enqueue(Fake("tokens=10 cut_after=3"));  // its first request only
  ASSERT_NO_FATAL_FAILURE(StartScheduler());
  // In-call retries stay on (default 2): they too must not run once output has streamed.
  ASSERT_NE(StartLlmWorker("w1", OpenAiDeployment("primary", primary, kFastRetry) +
                                     OpenAiDeployment("backup", backup) + PrimaryBackupGroup("g")),
            nullptr);

  Job job;
  ASSERT_TRUE(Submit(LlmChat("g", "Cut me off"), &job).ok());
  WatchResult w;
  ASSERT_NO_FATAL_FAILURE(WatchToFinalJob(job.id(), &w));
  const Job& done = w.events.back().final_job();
  EXPECT_EQ(done.state(), aijobs::v1::SUCCEEDED) << done.ShortDebugString();
  EXPECT_EQ(done.attempt(), 2);
  EXPECT_EQ(ResultModel(done), "primary");
  EXPECT_EQ(ResultText(done), Tokens(10));
  EXPECT_EQ(AssembleText(w.events), Tokens(10));

  std::string attempt1;
  for (const JobEvent* d : Deltas(w.events)) {
    if (d->output_delta().attempt() == 1) attempt1 += d->output_delta().text();
  }
  EXPECT_EQ(attempt1, Tokens(3)) << "attempt 1's partial output was not streamed";
  bool failed_retryably = false, discarded = false;
  for (const auto* sc : StateChanges(w.events)) {
    if (sc->state() == aijobs::v1::QUEUED && sc->attempt() == 1 && sc->has_error()) {
      failed_retryably = true;
      EXPECT_EQ(sc->error().code(), "PROVIDER_ERROR") << sc->ShortDebugString();
      EXPECT_TRUE(sc->error().retryable());
    }
    if (sc->state() == aijobs::v1::RUNNING && sc->attempt() == 2) {
      discarded = sc->discard_output();
    }
  }
  EXPECT_TRUE(failed_retryably) << "no QUEUED event with attempt 1's error";
  EXPECT_TRUE(discarded) << "attempt 2 did not tell watchers to discard attempt 1's output";
  // Attempt 1 was neither retried in the call nor handed to the backup.
  EXPECT_EQ(backup.request_count(), 0u);
  EXPECT_EQ(primary.request_count(), 2u);
}

// 5. The breaker: three 503s (min_requests 3) open it; while open, jobs go straight to the
// backup although the primary is healthy again; after open_duration a probe reaches the
// primary, succeeds and closes the breaker.
TEST_F(E2eLlmTest, BreakerOpensSkipsThePrimaryAndRecovers) {
  FakeOpenAiServer primary(Fake("status=503"));
  FakeOpenAiServer backup(Fake("tokens=6"));
  ASSERT_TRUE(primary.Start().ok());
  ASSERT_TRUE(backup.Start().ok());
  ASSERT_NO_FATAL_FAILURE(StartScheduler());
  const absl::Duration kOpen = absl::Milliseconds(1500);
  ASSERT_NE(StartLlmWorker(
                "w1", OpenAiDeployment("primary", primary,
                                       "retry { max_retries: 0 } breaker { failure_rate: 0.5 "
                                       "min_requests: 3 window { seconds: 10 } open_duration { "
                                       "seconds: 1 nanos: 500000000 } }") +
                          OpenAiDeployment("backup", backup) + PrimaryBackupGroup("g")),
            nullptr);

  for (int i = 0; i < 3; ++i) {
    Job job = RunToSuccess(LlmChat("g", absl::StrCat("failing primary ", i)));
    EXPECT_EQ(ResultModel(job), "backup");
    EXPECT_EQ(job.attempt(), 1);
  }
  ASSERT_EQ(primary.request_count(), 3u);
  const absl::Time opened = primary.requests()[2].arrival;  // the failure that opened it

  // Healthy from now on: only the breaker keeps jobs away from it.
  primary.SetDefault(Fake("tokens=4"));
  int backup_while_open = 0;
  Job probe;
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (absl::Now() < deadline) {
    Job job = RunToSuccess(LlmChat("g", "breaker open?"));
    ASSERT_FALSE(job.id().empty());
    if (ResultModel(job) == "primary") {
      probe = job;
      break;
    }
    EXPECT_EQ(ResultModel(job), "backup");
    ++backup_while_open;
  }
  ASSERT_FALSE(probe.id().empty()) << "the primary never got a probe";
  EXPECT_GE(backup_while_open, 2) << "jobs did not go to the backup while the breaker was open";
  EXPECT_EQ(ResultText(probe), Tokens(4));
  std::vector<RecordedRequest> p = primary.requests();
  ASSERT_EQ(p.size(), 4u) << "the primary was called while its breaker was open";
  EXPECT_GE(p[3].arrival - opened, kOpen - absl::Milliseconds(50))
      << "the probe came before open_duration";
  // Closed again: the primary serves the next jobs.
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(ResultModel(RunToSuccess(LlmChat("g", absl::StrCat("closed ", i)))), "primary");
  }
  EXPECT_EQ(primary.request_count(), 6u);
}

// 6. 200 jobs at once against one deployment limited to 1200/min with a 1 s burst (20 at
// once, then 20/s): the request arrivals at the provider never exceed burst + rate x time.
TEST_F(E2eLlmTest, TokenBucketHoldsTheRequestRateAcross200ConcurrentJobs) {
  FakeOpenAiServer fake(Fake("tokens=2"));
  ASSERT_TRUE(fake.Start().ok());
  ASSERT_NO_FATAL_FAILURE(StartScheduler());
  constexpr int kJobs = 200;
  constexpr double kBurst = 20, kPerSecond = 20;
  ASSERT_NE(StartLlmWorker("w1",
                           OpenAiDeployment("gpt", fake,
                                            "rate_limit { requests_per_minute: 1200 burst { "
                                            "seconds: 1 } }") +
                               R"pb(model_groups {
                                      name: "m"
                                      members { deployment: "gpt" }
                                    })pb",
                           {"--slots", "256"}),
            nullptr);

  // Submit from 8 threads, so the jobs are all queued within a moment.
  std::atomic<int> submitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = t; i < kJobs; i += 8) {
        Job job;
        if (Submit(LlmChat("m", absl::StrCat("job ", i)), &job).ok()) ++submitted;
      }
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_EQ(submitted.load(), kJobs);

  ASSERT_TRUE(fake.WaitForRequests(kJobs, absl::Seconds(40)))
      << "only " << fake.request_count() << " requests arrived";
  bool all_done = WaitFor(
      [&] {
        auto done = ListAll(aijobs::v1::SUCCEEDED);
        return done.ok() && done->size() == static_cast<size_t>(kJobs);
      },
      absl::Seconds(20), absl::Milliseconds(250));
  EXPECT_TRUE(all_done);

  std::vector<absl::Time> t;
  for (const RecordedRequest& r : fake.requests()) t.push_back(r.arrival);
  ASSERT_EQ(t.size(), static_cast<size_t>(kJobs)) << "a request was made twice";
  std::sort(t.begin(), t.end());
  // Any run of arrivals i..j: j-i+1 <= burst + rate x (t_j - t_i), with a slack of two
  // requests for the loopback/HTTP jitter between the worker's start and the arrival.
  double worst_excess = -1e9;
  std::string worst;
  for (size_t i = 0; i < t.size(); ++i) {
    for (size_t j = i; j < t.size(); ++j) {
      double allowed = kBurst + kPerSecond * absl::ToDoubleSeconds(t[j] - t[i]);
      double excess = static_cast<double>(j - i + 1) - allowed;
      if (excess > worst_excess) {
        worst_excess = excess;
        worst = absl::StrCat(j - i + 1, " requests in ", absl::FormatDuration(t[j] - t[i]),
                             " (allowed ", allowed, ")");
      }
    }
  }
  EXPECT_LE(worst_excess, 2) << "the rate limit was exceeded: " << worst;
  // 180 requests past the burst at 20/s take 9 s; and the limiter did not crawl.
  absl::Duration span = t.back() - t.front();
  EXPECT_GE(span, absl::Milliseconds(8500));
  EXPECT_LE(span, absl::Seconds(15));
}

// 7. A model group with cache_ttl: the worker advertises it, the first answer fills the
// cache, and the identical second job is SUCCEEDED at submit, cached, with no HTTP call.
// A job's own cache.ttl does the same on a group without one.
TEST_F(E2eLlmTest, CacheHitMakesNoHttpCall) {
  FakeOpenAiServer fake(Fake("tokens=6"));
  ASSERT_TRUE(fake.Start().ok());
  ASSERT_NO_FATAL_FAILURE(StartScheduler());
  ASSERT_NE(StartLlmWorker("w1", OpenAiDeployment("gpt", fake) + R"pb(
              model_groups {
                name: "cached"
                members { deployment: "gpt" }
                cache_ttl { seconds: 300 }
              }
              model_groups {
                name: "plain"
                members { deployment: "gpt" }
              })pb"),
            nullptr);
  // A finished job proves the worker's hello (and its cache adverts) reached the scheduler.
  RunToSuccess(LlmChat("plain", "warm up"));
  ASSERT_EQ(fake.request_count(), 1u);

  Job first = RunToSuccess(LlmChat("cached", "What is a lease?"));
  EXPECT_FALSE(first.cached());
  EXPECT_EQ(ResultText(first), Tokens(6));
  ASSERT_EQ(fake.request_count(), 2u);

  Job hit;
  ASSERT_TRUE(Submit(LlmChat("cached", "What is a lease?"), &hit).ok());
  EXPECT_NE(hit.id(), first.id());
  EXPECT_EQ(hit.state(), aijobs::v1::SUCCEEDED) << hit.ShortDebugString();
  EXPECT_TRUE(hit.cached());
  EXPECT_EQ(ResultText(hit), Tokens(6));
  EXPECT_EQ(ResultModel(hit), "gpt");

  // Per-job opt-in on the uncached group.
  auto per_job = LlmChat("plain", "Per-job caching");
  *per_job.mutable_cache()->mutable_ttl() = ToProtoDuration(absl::Minutes(5));
  Job filled = RunToSuccess(per_job);
  EXPECT_FALSE(filled.cached());
  ASSERT_EQ(fake.request_count(), 3u);
  Job hit2;
  ASSERT_TRUE(Submit(per_job, &hit2).ok());
  EXPECT_EQ(hit2.state(), aijobs::v1::SUCCEEDED) << hit2.ShortDebugString();
  EXPECT_TRUE(hit2.cached());
  // The same prompt without opting in is not cached on "plain".
  Job uncached = RunToSuccess(LlmChat("plain", "Per-job caching"));
  EXPECT_FALSE(uncached.cached());

  // Every call the worker made, after a last job that ran: the hits made none.
  EXPECT_EQ(fake.request_count(), 4u);
}

// 8. A stream that stalls after 2 tokens is aborted by the idle timeout (500 ms); with no
// in-call retries the attempt fails with TIMEOUT and the job succeeds on attempt 2.
TEST_F(E2eLlmTest, StalledStreamTimesOutAndTheJobRetries) {
  FakeOpenAiServer fake;
  ASSERT_TRUE(fake.Start().ok());
  ASSERT_NO_FATAL_FAILURE(StartScheduler());
  ASSERT_NE(StartLlmWorker("w1", OpenAiDeployment("gpt", fake,
                                                  "timeouts { idle { nanos: 500000000 } } retry { "
                                                  "max_retries: 0 }") +
                                     R"pb(model_groups {
                                            name: "m"
                                            members { deployment: "gpt" }
                                          })pb"),
            nullptr);

  Job job;
  ASSERT_TRUE(
      Submit(LlmChat("m", "[fake tokens=6 stall_after=2 times=1] Are you there"), &job).ok());
  WatchResult w;
  ASSERT_NO_FATAL_FAILURE(WatchToFinalJob(job.id(), &w));
  const Job& done = w.events.back().final_job();
  EXPECT_EQ(done.state(), aijobs::v1::SUCCEEDED) << done.ShortDebugString();
  EXPECT_EQ(done.attempt(), 2);
  EXPECT_EQ(ResultText(done), Tokens(5));  // attempt 2: the server's default answer
  EXPECT_EQ(AssembleText(w.events), Tokens(5));

  bool timed_out = false;
  for (const auto* sc : StateChanges(w.events)) {
    if (sc->state() == aijobs::v1::QUEUED && sc->attempt() == 1 && sc->has_error()) {
      timed_out = sc->error().code() == "TIMEOUT" && sc->error().retryable();
      EXPECT_TRUE(timed_out) << sc->ShortDebugString();
    }
  }
  EXPECT_TRUE(timed_out) << "attempt 1 did not fail with TIMEOUT";
  std::vector<RecordedRequest> reqs = fake.requests();
  ASSERT_EQ(reqs.size(), 2u);
  absl::Duration gap = reqs[1].arrival - reqs[0].arrival;
  EXPECT_GE(gap, absl::Milliseconds(500)) << "the stall was not waited out for the idle timeout";
  EXPECT_LT(gap, absl::Seconds(5)) << "the stalled stream was not aborted promptly";
}

// 9. An openai deployment whose api_key_env names an unset variable: the worker exits 2 at
// start-up with a message naming the deployment and the field (validation passes the file;
// the key is resolved when the provider is built).
TEST_F(E2eLlmTest, UnsetApiKeyEnvFailsStartUpNamingTheField) {
  FakeOpenAiServer fake;
  ASSERT_TRUE(fake.Start().ok());
  ASSERT_EQ(unsetenv("AIJOBS_E2E_UNSET_KEY"), 0);
  ASSERT_NO_FATAL_FAILURE(StartScheduler());
  Process* worker = StartLlmWorker(
      "w1", OpenAiDeployment("first", fake) +
                OpenAiDeployment("keyed", fake, R"(api_key_env: "AIJOBS_E2E_UNSET_KEY")") +
                R"pb(model_groups {
                       name: "m"
                       members { deployment: "keyed" }
                     })pb");
  ASSERT_NE(worker, nullptr);
  absl::StatusOr<int> code = worker->Wait(absl::Seconds(15));
  ASSERT_TRUE(code.ok()) << "the worker started despite the bad deployment";
  EXPECT_EQ(*code, 2);
  std::string log = worker->ReadStdout();
  EXPECT_TRUE(absl::StrContains(log, "deployments[1]")) << log;
  EXPECT_TRUE(absl::StrContains(log, "keyed")) << log;
  EXPECT_TRUE(absl::StrContains(log, "api_key_env")) << log;
  EXPECT_TRUE(absl::StrContains(log, "AIJOBS_E2E_UNSET_KEY")) << log;
  EXPECT_EQ(fake.request_count(), 0u);
}

}  // namespace
}  // namespace aijobs::testing
