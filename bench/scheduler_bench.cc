// End-to-end google-benchmark suites: the real aijobs-scheduler and aijobs-worker binaries
// against a private, durable PostgreSQL (fsync and synchronous_commit on), driven through the
// C++ client SDK. Each benchmark runs one fixed workload per iteration (manual time) and
// reports the user-visible figures as counters: jobs_per_s, p50_ms / p99_ms / max_ms,
// rss_mib. AIJOBS_BENCH_SMOKE=1 shrinks every workload (ctest label bench-smoke).
//
//   build/bench/bench_scheduler --benchmark_filter=BM_Submit_Durable
//   AIJOBS_BENCH_SMOKE=1 build/bench/bench_scheduler --benchmark_min_time=0.01
//   build/bench/bench_scheduler --benchmark_out=build/bench_scheduler.json
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "bench/bench_util.h"
#include "common/auth/jwt.h"
#include "common/time_util.h"

namespace aijobs::bench {
namespace {

// The no-op LLM call of the issue: no time to first token, one token.
constexpr char kNoopSim[] = R"({"ttft_ms":0,"tokens":1})";

Cluster* SetUp(benchmark::State& state) {
  std::string error;
  Cluster* c = Cluster::Get(&error);
  if (c == nullptr) state.SkipWithError(error.c_str());
  return c;
}

bool Check(benchmark::State& state, const absl::Status& s, const char* what) {
  if (s.ok()) return true;
  std::string msg = absl::StrCat(what, ": ", s.ToString());
  state.SkipWithError(msg.c_str());
  return false;
}

double SchedulerRssMiB(Cluster* c) {
  return static_cast<double>(RssKiB(c->scheduler_pid())) / 1024.0;
}

// Closed-loop submitters: `concurrency` threads share the one SDK client and submit until
// `total` jobs were sent, timing every call.
struct SubmitRun {
  std::vector<double> latencies_ms;
  int errors = 0;
  std::string first_error;
  absl::Time start;
  absl::Time end;
};

using OnSubmitted = std::function<void(int index, const v1::Job& job, absl::Time t0)>;

SubmitRun RunSubmitters(aijobs::Client& client, const v1::SubmitJobRequest& request, int total,
                        int concurrency, const OnSubmitted& on_ok = nullptr) {
  SubmitRun run;
  std::atomic<int> next{0};
  absl::Notification go;
  absl::Mutex mu;
  std::vector<std::thread> threads;
  threads.reserve(concurrency);
  for (int t = 0; t < concurrency; ++t) {
    threads.emplace_back([&] {
      std::vector<double> mine;
      int errors = 0;
      std::string first_error;
      go.WaitForNotification();
      for (int i = next.fetch_add(1); i < total; i = next.fetch_add(1)) {
        absl::Time t0 = absl::Now();
        absl::StatusOr<v1::Job> job = client.Submit(request);
        mine.push_back(absl::ToDoubleMilliseconds(absl::Now() - t0));
        if (!job.ok()) {
          if (errors++ == 0) first_error = job.status().ToString();
          continue;
        }
        if (on_ok) on_ok(i, *job, t0);
      }
      absl::MutexLock lock(&mu);
      run.latencies_ms.insert(run.latencies_ms.end(), mine.begin(), mine.end());
      run.errors += errors;
      if (run.first_error.empty()) run.first_error = first_error;
    });
  }
  run.start = absl::Now();
  go.Notify();
  for (auto& t : threads) t.join();
  run.end = absl::Now();
  return run;
}

// Waits until no job is QUEUED or RUNNING, polling ListJobs.
absl::Status WaitAllFinished(Cluster* c, absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  while (true) {
    auto done = c->AllFinished();
    if (!done.ok()) return done.status();
    if (*done) return absl::OkStatus();
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("jobs still queued or running after ", absl::FormatDuration(timeout)));
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
}

// ---------------------------------------------------------------------------------------

void BM_Submit_Durable(benchmark::State& state) {
  const int concurrency = static_cast<int>(state.range(0));
  Cluster* c = SetUp(state);
  if (c == nullptr) return;
  const int total =
      Scaled(std::clamp(concurrency * 200, 2000, 20000), std::min(concurrency * 2, 128));
  const v1::SubmitJobRequest request = SimChatRequest(kNoopSim);
  SubmitRun run;
  CpuUse cpu0, cpu1;
  for (auto _ : state) {
    c->StopWorkers();  // nothing consumes: this measures the durable enqueue alone
    if (!Check(state, c->ResetJobs(), "reset")) return;
    if (!Check(state, c->AllFinished().status(), "warm-up")) return;
    cpu0 = c->Cpu();
    run = RunSubmitters(c->client(), request, total, concurrency);
    cpu1 = c->Cpu();
    state.SetIterationTime(absl::ToDoubleSeconds(run.end - run.start));
  }
  if (run.errors > 0) {
    state.SkipWithError(
        absl::StrCat(run.errors, " submits failed, first: ", run.first_error).c_str());
    return;
  }
  state.counters["jobs"] = total;
  state.counters["jobs_per_s"] = total / absl::ToDoubleSeconds(run.end - run.start);
  ReportLatency(state, "", Summarize(run.latencies_ms));
  state.counters["rss_mib"] = SchedulerRssMiB(c);
  ReportCpu(state, cpu0, cpu1, run.end - run.start);
}

std::string ReadWhole(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// BM_Submit_Durable/64 with authentication on, as production runs: every submit carries a JWT
// (HS256 or ES256) the scheduler verifies, is written to the audit log, and takes its tenant's
// and user's quota tokens (limits high enough never to refuse). Compare with
// BM_Submit_Durable/concurrency:64 run next to it.
void BM_Submit_Authenticated(benchmark::State& state) {
  const bool ec = state.range(0) == 1;
  constexpr int kConcurrency = 64;
  Cluster* c = SetUp(state);
  if (c == nullptr) return;
  const std::string dir = testing::LogDir();
  const std::string keys = dir + "/bench-jwks.json";
  const std::string secret(32, 'k');
  std::string jwks = auth::HmacJwks("h", secret), private_pem;
  if (ec) {
    // A P-256 key made by openssl at run time.
    const std::string pem = dir + "/bench-ec.pem";
    if (system(absl::StrCat("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out '",
                            pem, "' 2>/dev/null && openssl pkey -in '", pem, "' -pubout -out '",
                            pem, ".pub' 2>/dev/null")
                   .c_str()) != 0) {
      state.SkipWithError("openssl could not make an EC key");
      return;
    }
    private_pem = ReadWhole(pem);
    jwks = ReadWhole(pem + ".pub");
  }
  FILE* f = fopen(keys.c_str(), "w");
  fputs(jwks.c_str(), f);
  fclose(f);
  google::protobuf::Struct claims;
  (*claims.mutable_fields())["sub"].set_string_value("bench-user");
  (*claims.mutable_fields())["tenant"].set_string_value("bench");
  (*claims.mutable_fields())["exp"].set_number_value(
      static_cast<double>(absl::ToUnixSeconds(absl::Now() + absl::Hours(1))));
  auto token = ec ? auth::SignJwt(claims, auth::JwtAlg::kES256, private_pem, "")
                  : auth::SignJwt(claims, auth::JwtAlg::kHS256, secret, "h");
  if (!Check(state, token.status(), "token")) return;
  if (!Check(state,
             c->RestartScheduler({"--auth=on", "--jwt_keys", keys, "--user_submit_rate", "1e9",
                                  "--user_submit_burst", "1e9", "--tenant_submit_rate", "1e9",
                                  "--tenant_submit_burst", "1e9"},
                                 *token),
             "authenticated scheduler")) {
    return;
  }
  const int total = Scaled(12800, 128);
  const v1::SubmitJobRequest request = SimChatRequest(kNoopSim);
  SubmitRun run;
  CpuUse cpu0, cpu1;
  for (auto _ : state) {
    if (!Check(state, c->ResetJobs(), "reset")) break;
    cpu0 = c->Cpu();
    run = RunSubmitters(c->client(), request, total, kConcurrency);
    cpu1 = c->Cpu();
    state.SetIterationTime(absl::ToDoubleSeconds(run.end - run.start));
  }
  absl::Status back = c->RestartScheduler();  // the default cluster for the next suites
  if (run.errors > 0) {
    state.SkipWithError(
        absl::StrCat(run.errors, " submits failed, first: ", run.first_error).c_str());
    return;
  }
  if (!Check(state, back, "restart")) return;
  state.counters["jobs"] = total;
  state.counters["jobs_per_s"] = total / absl::ToDoubleSeconds(run.end - run.start);
  ReportLatency(state, "", Summarize(run.latencies_ms));
  ReportCpu(state, cpu0, cpu1, run.end - run.start);
}
BENCHMARK(BM_Submit_Durable)
    ->ArgName("concurrency")
    ->Arg(1)
    ->Arg(16)
    ->Arg(64)
    ->Arg(256)
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Submit_Authenticated)
    ->ArgName("ec256")
    ->Arg(0)
    ->Arg(1)
    ->UseManualTime()
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);

// ---------------------------------------------------------------------------------------

void BM_EndToEnd_NoopLLM(benchmark::State& state) {
  const int workers = static_cast<int>(state.range(0));
  const int slots = static_cast<int>(state.range(1));
  Cluster* c = SetUp(state);
  if (c == nullptr) return;
  const int total = Scaled(20000, 200);
  const int sample_every = std::max(1, total / 200);
  const v1::SubmitJobRequest request = SimChatRequest(kNoopSim);

  struct Sample {
    absl::Time t0;
    absl::Time succeeded = absl::InfinitePast();
  };
  std::vector<Sample> samples(total / sample_every + 1);
  double wall_s = 0;
  SubmitRun run;
  std::vector<double> sched_ms;
  int succeeded = 0;
  CpuUse cpu0, cpu1;
  absl::Time drained;
  for (auto _ : state) {
    c->StopWorkers();
    if (!Check(state, c->ResetJobs(), "reset")) return;
    if (!Check(state, c->StartWorkers(workers, slots), "workers")) return;
    if (!Check(state, c->AllFinished().status(), "warm-up")) return;

    absl::Mutex watchers_mu;
    std::vector<std::unique_ptr<AsyncWatcher>> watchers;
    cpu0 = c->Cpu();
    run = RunSubmitters(
        c->client(), request, total, 64, [&](int index, const v1::Job& job, absl::Time t0) {
          if (index % sample_every != 0) return;
          Sample* sample = &samples[index / sample_every];
          sample->t0 = t0;
          auto w = std::make_unique<AsyncWatcher>(
              c->stub(), job.id(), [sample](const v1::JobEvent& e, absl::Time received) {
                if (e.has_final_job() && e.final_job().state() == v1::SUCCEEDED) {
                  sample->succeeded = received;
                }
              });
          absl::MutexLock lock(&watchers_mu);
          watchers.push_back(std::move(w));
        });
    if (run.errors > 0) {
      state.SkipWithError(absl::StrCat(run.errors, " submits failed: ", run.first_error).c_str());
      return;
    }
    if (!Check(state, WaitAllFinished(c, absl::Seconds(Scaled(600, 60))), "drain")) return;
    cpu1 = c->Cpu();
    drained = absl::Now();
    for (auto& w : watchers) w->WaitDone(absl::Seconds(30));
    watchers.clear();

    // Throughput from the first submit to the last job's finished_at (the scheduler's
    // clock on this same machine), not to when our poll noticed it.
    auto jobs = c->ListAll(v1::SUCCEEDED);
    if (!Check(state, jobs.status(), "list")) return;
    succeeded = static_cast<int>(jobs->size());
    absl::Time last = run.start;
    sched_ms.clear();
    for (const auto& j : *jobs) {
      absl::Time finished = FromProtoTimestamp(j.finished_at());
      last = std::max(last, finished);
      sched_ms.push_back(absl::ToDoubleMilliseconds(finished - FromProtoTimestamp(j.created_at())));
    }
    wall_s = absl::ToDoubleSeconds(last - run.start);
    state.SetIterationTime(wall_s);
    c->StopWorkers();
  }
  if (succeeded != total) {
    state.SkipWithError(absl::StrCat(succeeded, " of ", total, " jobs SUCCEEDED").c_str());
    return;
  }
  std::vector<double> e2e_ms;
  for (const auto& s : samples) {
    if (s.succeeded != absl::InfinitePast())
      e2e_ms.push_back(absl::ToDoubleMilliseconds(s.succeeded - s.t0));
  }
  state.counters["jobs"] = total;
  state.counters["jobs_per_s"] = total / wall_s;
  state.counters["submit_jobs_per_s"] = total / absl::ToDoubleSeconds(run.end - run.start);
  state.counters["watched"] = static_cast<double>(e2e_ms.size());
  ReportLatency(state, "", Summarize(e2e_ms));
  // created_at -> finished_at of every job, as the scheduler recorded them.
  LatencySummary sched = Summarize(sched_ms);
  state.counters["sched_p50_ms"] = sched.p50_ms;
  state.counters["sched_p99_ms"] = sched.p99_ms;
  state.counters["rss_mib"] = SchedulerRssMiB(c);
  ReportCpu(state, cpu0, cpu1, drained - run.start);
}
BENCHMARK(BM_EndToEnd_NoopLLM)
    ->ArgNames({"workers", "slots"})
    ->Args({1, 64})
    ->Args({1, 256})
    ->Args({2, 64})
    ->Args({2, 256})
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

// ---------------------------------------------------------------------------------------
// The real-client pattern (issue 13): `producers` open-loop threads each submit a job with
// one SubmitJob, open its own WatchJob at once (a separate call, as the SDK's --wait, the
// gateway's SSE and a web page do) and go on to the next without waiting; a job counts as
// completed when its watcher has received the final event. 2 workers x 256 slots, no-op
// handler, fresh database, default scheduler flags.

void BM_SubmitAndWatchEveryJob(benchmark::State& state) {
  const int producers = static_cast<int>(state.range(0));
  const int total = Scaled(static_cast<int>(state.range(1)), 200);
  Cluster* c = SetUp(state);
  if (c == nullptr) return;
  const v1::SubmitJobRequest request = SimChatRequest(kNoopSim);

  struct Tracked {
    absl::Time t0;
    absl::Time started = absl::InfinitePast();  // the job's started_at (scheduler clock)
    absl::Time final_seen = absl::InfinitePast();
    bool succeeded = false;
  };
  std::vector<Tracked> tracked(total);
  SubmitRun run;
  CpuUse cpu0, cpu1;
  absl::Time last_seen;
  int completed = 0;
  int watch_retries = 0;
  std::string first_watch_error;
  for (auto _ : state) {
    c->StopWorkers();
    if (!Check(state, c->ResetJobs(), "reset")) return;
    if (!Check(state, c->StartWorkers(2, 256), "workers")) return;
    if (!Check(state, c->AllFinished().status(), "warm-up")) return;

    absl::Mutex mu;
    int finals = 0;
    // Per job: its watcher (null once it ended without the final event: a refused watch is
    // opened again, as a client would).
    std::vector<std::unique_ptr<AsyncWatcher>> watchers(total);
    std::vector<int> opened;  // submitted since the loop below last looked
    std::vector<std::string> ids(total);
    watch_retries = 0;
    auto watch = [&](int index) {
      Tracked* t = &tracked[index];
      return std::make_unique<AsyncWatcher>(
          c->stub(), ids[index], [t, &mu, &finals](const v1::JobEvent& e, absl::Time received) {
            if (!e.has_final_job()) return;
            absl::MutexLock lock(&mu);
            if (t->final_seen != absl::InfinitePast()) return;  // seen by an earlier watch
            t->final_seen = received;
            t->succeeded = e.final_job().state() == v1::SUCCEEDED;
            t->started = FromProtoTimestamp(e.final_job().started_at());
            ++finals;
          });
    };
    if (!Check(state, c->ResetStatementStats(), "pg_stat_statements")) return;
    cpu0 = c->Cpu();
    run = RunSubmitters(
        c->client(), request, total, producers, [&](int index, const v1::Job& job, absl::Time t0) {
          tracked[index].t0 = t0;
          ids[index] = job.id();
          auto w = watch(index);
          absl::MutexLock lock(&mu);
          watchers[index] = std::move(w);
          opened.push_back(index);
        });
    if (run.errors > 0) {
      state.SkipWithError(absl::StrCat(run.errors, " submits failed: ", run.first_error).c_str());
      return;
    }
    // Every 50 ms: release the watchers whose stream is over, and reopen those that ended
    // without the final event. Only watches still open are looked at, so this loop costs the
    // client the same at 200,000 jobs as at 20,000.
    std::vector<int> open;
    const absl::Time deadline = absl::Now() + absl::Seconds(Scaled(900, 60));
    while (absl::Now() < deadline) {
      {
        absl::MutexLock lock(&mu);
        if (finals == total) break;
        open.insert(open.end(), opened.begin(), opened.end());
        opened.clear();
      }
      size_t kept = 0;
      for (int i : open) {
        std::unique_ptr<AsyncWatcher> w;
        bool seen;
        {
          absl::MutexLock lock(&mu);
          seen = tracked[i].final_seen != absl::InfinitePast();
          if (watchers[i]->WaitDone(absl::ZeroDuration())) w = std::move(watchers[i]);
        }
        if (w == nullptr) {  // still streaming
          open[kept++] = i;
          continue;
        }
        if (seen) continue;  // done: `w` is released here
        if (watch_retries++ == 0) first_watch_error = w->status().error_message();
        auto again = watch(i);
        absl::MutexLock lock(&mu);
        watchers[i] = std::move(again);
        open[kept++] = i;
      }
      open.resize(kept);
      absl::SleepFor(absl::Milliseconds(50));
    }
    cpu1 = c->Cpu();
    watchers.clear();
    completed = 0;
    last_seen = run.start;
    for (const Tracked& t : tracked) {
      if (!t.succeeded) continue;
      ++completed;
      last_seen = std::max(last_seen, t.final_seen);
    }
    state.SetIterationTime(absl::ToDoubleSeconds(last_seen - run.start));
    c->StopWorkers();
  }
  if (completed != total) {
    state.SkipWithError(absl::StrCat(completed, " of ", total, " jobs seen SUCCEEDED; ",
                                     watch_retries, " watches reopened, first: ",
                                     first_watch_error)
                            .c_str());
    return;
  }
  // Watches the scheduler refused (RESOURCE_EXHAUSTED) or that failed, and were reopened.
  state.counters["watch_reopened"] = watch_retries;
  if (watch_retries > 0) {
    fprintf(stderr, "BM_SubmitAndWatchEveryJob: %d watches reopened, first error: %s\n",
            watch_retries, first_watch_error.c_str());
  }
  std::vector<double> start_ms, final_ms;
  // Completions per 1-second bucket since the first submit.
  std::vector<int> buckets(static_cast<size_t>(absl::ToDoubleSeconds(last_seen - run.start)) + 1);
  for (const Tracked& t : tracked) {
    start_ms.push_back(absl::ToDoubleMilliseconds(t.started - t.t0));
    final_ms.push_back(absl::ToDoubleMilliseconds(t.final_seen - t.t0));
    ++buckets[static_cast<size_t>(absl::ToDoubleSeconds(t.final_seen - run.start))];
  }
  const double wall_s = absl::ToDoubleSeconds(last_seen - run.start);
  state.counters["jobs"] = total;
  state.counters["jobs_per_s"] = total / wall_s;
  state.counters["submit_jobs_per_s"] = total / absl::ToDoubleSeconds(run.end - run.start);
  LatencySummary submit = Summarize(run.latencies_ms), started = Summarize(start_ms),
                 seen = Summarize(final_ms);
  state.counters["submit_p50_ms"] = submit.p50_ms;
  state.counters["submit_p99_ms"] = submit.p99_ms;
  state.counters["to_start_p50_ms"] = started.p50_ms;
  state.counters["to_start_p99_ms"] = started.p99_ms;
  state.counters["to_final_p50_ms"] = seen.p50_ms;
  state.counters["to_final_p99_ms"] = seen.p99_ms;
  // Flatness: the mean rate of the first and the last 5 full seconds (when the run is long
  // enough to have both), and the whole series on stderr.
  const size_t full = buckets.size() - 1;  // the last bucket is partial
  if (full >= 10) {
    double first = 0, last = 0;
    for (size_t i = 0; i < 5; ++i) {
      first += buckets[i];
      last += buckets[full - 5 + i];
    }
    state.counters["first5s_per_s"] = first / 5;
    state.counters["last5s_per_s"] = last / 5;
    state.counters["last_over_first"] = last / first;
  }
  std::string series;
  for (size_t i = 0; i < buckets.size(); ++i) absl::StrAppend(&series, i ? " " : "", buckets[i]);
  fprintf(stderr, "BM_SubmitAndWatchEveryJob/%d/%d completions per second: %s\n", producers,
          total, series.c_str());
  state.counters["rss_mib"] = SchedulerRssMiB(c);
  ReportCpu(state, cpu0, cpu1, last_seen - run.start);
  if (!SmokeMode()) {
    absl::StatusOr<std::string> top = c->TopStatements(8);
    fprintf(stderr, "BM_SubmitAndWatchEveryJob/%d/%d top statements:\n%s\n", producers, total,
            top.ok() ? top->c_str() : top.status().ToString().c_str());
  }
}
BENCHMARK(BM_SubmitAndWatchEveryJob)
    ->ArgNames({"producers", "jobs"})
    ->Args({64, 20000})
    ->Args({64, 200000})
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

// ---------------------------------------------------------------------------------------

void BM_IdleLatency(benchmark::State& state) {
  Cluster* c = SetUp(state);
  if (c == nullptr) return;
  const int jobs = Scaled(200, 5);
  const v1::SubmitJobRequest request = SimChatRequest(kNoopSim);
  std::vector<double> submit_ms, dispatch_ms, running_seen_ms, succeeded_ms;
  absl::Time start, end;
  for (auto _ : state) {
    c->StopWorkers();
    if (!Check(state, c->ResetJobs(), "reset")) return;
    if (!Check(state, c->StartWorkers(1, 64), "workers")) return;
    if (!Check(state, c->AllFinished().status(), "warm-up")) return;
    start = absl::Now();
    for (int i = 0; i < jobs; ++i) {
      absl::Time t0 = absl::Now();
      auto job = c->client().Submit(request);
      if (!Check(state, job.status(), "submit")) return;
      submit_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - t0));
      bool ok = false;
      WatchOptions wopts;
      wopts.deadline = absl::Seconds(30);
      auto final_job = c->client().Watch(
          job->id(), 0,
          [&](const v1::JobEvent& e) {
            absl::Time now = absl::Now();
            if (e.has_state_change() && e.state_change().state() == v1::RUNNING) {
              dispatch_ms.push_back(absl::ToDoubleMilliseconds(FromProtoTimestamp(e.time()) - t0));
              running_seen_ms.push_back(absl::ToDoubleMilliseconds(now - t0));
            }
            if (e.has_final_job()) {
              ok = e.final_job().state() == v1::SUCCEEDED;
              succeeded_ms.push_back(absl::ToDoubleMilliseconds(now - t0));
              return false;
            }
            return true;
          },
          wopts);
      if (!Check(state, final_job.status(), "watch")) return;
      if (!ok) {
        state.SkipWithError("a job did not SUCCEED");
        return;
      }
    }
    end = absl::Now();
    state.SetIterationTime(absl::ToDoubleSeconds(end - start));
    c->StopWorkers();
  }
  state.counters["jobs"] = jobs;
  ReportLatency(state, "", Summarize(succeeded_ms));
  LatencySummary submit = Summarize(submit_ms), dispatch = Summarize(dispatch_ms),
                 seen = Summarize(running_seen_ms);
  state.counters["submit_p50_ms"] = submit.p50_ms;
  state.counters["submit_p99_ms"] = submit.p99_ms;
  // RUNNING event time (stamped by the scheduler at the claim) minus the client's send time.
  state.counters["dispatch_p50_ms"] = dispatch.p50_ms;
  state.counters["dispatch_p99_ms"] = dispatch.p99_ms;
  // The RUNNING event as the watcher received it.
  state.counters["running_seen_p50_ms"] = seen.p50_ms;
  state.counters["running_seen_p99_ms"] = seen.p99_ms;
  state.counters["rss_mib"] = SchedulerRssMiB(c);
}
BENCHMARK(BM_IdleLatency)->Iterations(1)->UseManualTime()->Unit(benchmark::kMillisecond);

// ---------------------------------------------------------------------------------------
// Streaming load shared by BM_TokenRelay and BM_HealthUnderLoad: `streams` jobs emit tokens
// concurrently, each watched by one WatchJob stream.

struct StreamingResult {
  std::vector<double> relay_ms;
  int deltas = 0;
  int replayed = 0;  // deltas stamped before their watch opened (not relay latency)
  int succeeded = 0;
  double wall_s = 0;
  std::vector<double> health_ms;
  int health_failures = 0;
  CpuUse cpu0, cpu1;
};

absl::Status RunStreaming(Cluster* c, int streams, bool probe_health, StreamingResult* out) {
  const int tokens = Scaled(30, 5);
  const int tokens_per_s = 10;
  // Time for every watcher to attach before the first token (submitting 1,000 jobs takes a
  // while on 2 shared cores).
  const int ttft_ms = streams > 1 ? Scaled(2000, 500) : 300;
  const v1::SubmitJobRequest request =
      SimChatRequest(absl::StrCat(R"({"ttft_ms":)", ttft_ms, R"(,"tokens_per_s":)", tokens_per_s,
                                  R"(,"tokens":)", tokens, "}"));
  c->StopWorkers();
  if (auto s = c->ResetJobs(); !s.ok()) return s;
  int workers = streams > 64 ? 2 : 1;
  int slots = std::max(64, (streams + workers - 1) / workers);
  if (auto s = c->StartWorkers(workers, slots); !s.ok()) return s;
  if (auto s = c->AllFinished().status(); !s.ok()) return s;

  struct PerWatch {
    absl::Time opened;
    std::vector<double> relay_ms;
    int replayed = 0;
    bool succeeded = false;
  };
  std::vector<PerWatch> per(streams);
  absl::Mutex watchers_mu;
  std::vector<std::unique_ptr<AsyncWatcher>> watchers;
  std::unique_ptr<HealthProber> prober;
  if (probe_health) prober = std::make_unique<HealthProber>(c->address(), absl::Milliseconds(10));
  absl::Time start = absl::Now();
  out->cpu0 = c->Cpu();
  SubmitRun run = RunSubmitters(
      c->client(), request, streams, std::min(streams, 64),
      [&](int index, const v1::Job& job, absl::Time) {
        PerWatch* pw = &per[index];
        pw->opened = absl::Now();  // before the call starts: ordered before any callback
        auto w = std::make_unique<AsyncWatcher>(
            c->stub(), job.id(), [pw](const v1::JobEvent& e, absl::Time received) {
              if (e.has_output_delta()) {
                absl::Time sent = FromProtoTimestamp(e.time());
                // A delta stamped before the watch opened was replayed, not relayed.
                if (sent < pw->opened) {
                  ++pw->replayed;
                } else {
                  pw->relay_ms.push_back(absl::ToDoubleMilliseconds(received - sent));
                }
              }
              if (e.has_final_job()) pw->succeeded = e.final_job().state() == v1::SUCCEEDED;
            });
        absl::MutexLock lock(&watchers_mu);
        watchers.push_back(std::move(w));
      });
  if (run.errors > 0) {
    return absl::InternalError(absl::StrCat(run.errors, " submits failed: ", run.first_error));
  }
  absl::Duration budget =
      absl::Milliseconds(ttft_ms) + absl::Seconds(tokens / tokens_per_s) + absl::Seconds(120);
  for (auto& w : watchers) {
    if (!w->WaitDone(budget)) return absl::DeadlineExceededError("a watch did not end");
  }
  out->wall_s = absl::ToDoubleSeconds(absl::Now() - start);
  out->cpu1 = c->Cpu();
  if (prober) out->health_ms = prober->Stop(&out->health_failures);
  for (int i = 0; i < streams; ++i) {
    out->succeeded += per[i].succeeded ? 1 : 0;
    out->replayed += per[i].replayed;
    for (double ms : per[i].relay_ms) {
      ++out->deltas;
      out->relay_ms.push_back(ms);
    }
  }
  watchers.clear();
  c->StopWorkers();
  return absl::OkStatus();
}

void ReportStreaming(benchmark::State& state, Cluster* c, int streams, const StreamingResult& r) {
  state.counters["streams"] = streams;
  state.counters["deltas"] = r.deltas;
  state.counters["deltas_per_s"] = r.deltas / r.wall_s;
  state.counters["replayed"] = r.replayed;
  ReportLatency(state, "", Summarize(r.relay_ms));
  state.counters["rss_mib"] = SchedulerRssMiB(c);
  ReportCpu(state, r.cpu0, r.cpu1, absl::Seconds(r.wall_s));
}

void BM_TokenRelay(benchmark::State& state) {
  Cluster* c = SetUp(state);
  if (c == nullptr) return;
  const int streams =
      Scaled(static_cast<int>(state.range(0)), std::min(static_cast<int>(state.range(0)), 20));
  StreamingResult r;
  for (auto _ : state) {
    r = StreamingResult();
    if (!Check(state, RunStreaming(c, streams, false, &r), "streaming")) return;
    state.SetIterationTime(r.wall_s);
  }
  if (r.succeeded != streams) {
    state.SkipWithError(absl::StrCat(r.succeeded, " of ", streams, " jobs SUCCEEDED").c_str());
    return;
  }
  ReportStreaming(state, c, streams, r);
}
BENCHMARK(BM_TokenRelay)
    ->ArgName("jobs")
    ->Arg(1)
    ->Arg(1000)
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

void BM_HealthUnderLoad(benchmark::State& state) {
  Cluster* c = SetUp(state);
  if (c == nullptr) return;
  const int streams = Scaled(static_cast<int>(state.range(0)), 20);
  StreamingResult r;
  for (auto _ : state) {
    r = StreamingResult();
    if (!Check(state, RunStreaming(c, streams, true, &r), "streaming")) return;
    state.SetIterationTime(r.wall_s);
  }
  if (r.succeeded != streams) {
    state.SkipWithError(absl::StrCat(r.succeeded, " of ", streams, " jobs SUCCEEDED").c_str());
    return;
  }
  LatencySummary h = Summarize(r.health_ms);
  state.counters["checks"] = static_cast<double>(h.count);
  state.counters["check_failures"] = r.health_failures;
  ReportLatency(state, "", h);
  LatencySummary relay = Summarize(r.relay_ms);
  state.counters["relay_p50_ms"] = relay.p50_ms;
  state.counters["relay_p99_ms"] = relay.p99_ms;
  state.counters["rss_mib"] = SchedulerRssMiB(c);
}
BENCHMARK(BM_HealthUnderLoad)
    ->ArgName("streams")
    ->Arg(1000)
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

// ---------------------------------------------------------------------------------------

void BM_WatchFanout(benchmark::State& state) {
  Cluster* c = SetUp(state);
  if (c == nullptr) return;
  const int streams =
      Scaled(static_cast<int>(state.range(0)), static_cast<int>(state.range(0)) / 100);
  const absl::Duration idle_window = absl::Seconds(Scaled(5, 1));
  int64_t before_kib = 0, after_kib = 0;
  double idle_cpu = 0;
  for (auto _ : state) {
    // A fresh scheduler, so earlier suites' heap does not hide or inflate the growth.
    if (!Check(state, c->RestartScheduler(), "restart")) return;
    if (!Check(state, c->ResetJobs(), "reset")) return;
    // Jobs that stay QUEUED (no worker), each watched once.
    std::vector<std::string> ids(streams);
    SubmitRun run =
        RunSubmitters(c->client(), SimChatRequest(kNoopSim), streams, 64,
                      [&](int index, const v1::Job& job, absl::Time) { ids[index] = job.id(); });
    if (run.errors > 0) {
      state.SkipWithError(absl::StrCat(run.errors, " submits failed: ", run.first_error).c_str());
      return;
    }
    std::vector<std::unique_ptr<v1::JobService::Stub>> stubs;
    for (int i = 0; i < (streams + 999) / 1000; ++i) {
      stubs.push_back(v1::JobService::NewStub(NewChannel(c->address(), 100 + i)));
    }
    before_kib = RssKiB(c->scheduler_pid());
    absl::Time t0 = absl::Now();
    std::vector<std::unique_ptr<AsyncWatcher>> watchers;
    watchers.reserve(streams);
    for (int i = 0; i < streams; ++i) {
      watchers.push_back(std::make_unique<AsyncWatcher>(stubs[i / 1000].get(), ids[i], nullptr));
    }
    // Each stream has delivered the job's QUEUED event: the scheduler holds it open.
    for (auto& w : watchers) {
      if (!w->WaitFirstEvent(absl::Seconds(60)) || !w->status().ok()) {
        state.SkipWithError(absl::StrCat("a watch failed: ", w->status().error_message()).c_str());
        return;
      }
    }
    state.SetIterationTime(absl::ToDoubleSeconds(absl::Now() - t0));
    after_kib = RssKiB(c->scheduler_pid());
    // What idle open streams cost the scheduler in CPU (a measuring window, not a wait).
    double cpu0 = CpuSeconds(c->scheduler_pid());
    absl::SleepFor(idle_window);
    idle_cpu = (CpuSeconds(c->scheduler_pid()) - cpu0) / absl::ToDoubleSeconds(idle_window);
    after_kib = std::max(after_kib, RssKiB(c->scheduler_pid()));
    watchers.clear();
  }
  state.counters["streams"] = streams;
  state.counters["rss_before_mib"] = static_cast<double>(before_kib) / 1024.0;
  state.counters["rss_mib"] = static_cast<double>(after_kib) / 1024.0;
  state.counters["rss_per_stream_kib"] =
      static_cast<double>(after_kib - before_kib) / static_cast<double>(streams);
  state.counters["idle_cpu_pct"] = idle_cpu * 100.0;
}
BENCHMARK(BM_WatchFanout)
    ->ArgName("streams")
    ->Arg(1000)
    ->Arg(10000)
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

// ---------------------------------------------------------------------------------------

void BM_LLMBound(benchmark::State& state) {
  Cluster* c = SetUp(state);
  if (c == nullptr) return;
  const int users =
      Scaled(static_cast<int>(state.range(0)), std::min(static_cast<int>(state.range(0)), 5));
  const int questions = Scaled(3, 1);
  const int llm_ms = Scaled(2500, 100);
  const v1::SubmitJobRequest request =
      SimChatRequest(absl::StrCat(R"({"ttft_ms":)", llm_ms, R"(,"tokens":1})"));
  std::vector<double> answer_ms, health_ms;
  int failures = 0, health_failures = 0;
  for (auto _ : state) {
    // The ./dev up deployment: 2 workers with the default 64 slots.
    c->StopWorkers();
    if (!Check(state, c->ResetJobs(), "reset")) return;
    if (!Check(state, c->StartWorkers(2, 64), "workers")) return;
    if (!Check(state, c->AllFinished().status(), "warm-up")) return;
    HealthProber prober(c->address(), absl::Milliseconds(10));
    absl::Mutex mu;
    std::vector<std::thread> threads;
    absl::Time start = absl::Now();
    for (int u = 0; u < users; ++u) {
      threads.emplace_back([&] {
        for (int q = 0; q < questions; ++q) {
          absl::Time t0 = absl::Now();
          bool ok = false;
          auto job = c->client().Submit(request);
          if (job.ok()) {
            WatchOptions wopts;
            wopts.deadline = absl::Seconds(60);
            auto done = c->client().Watch(
                job->id(), 0,
                [&](const v1::JobEvent& e) {
                  if (!e.has_final_job()) return true;
                  ok = e.final_job().state() == v1::SUCCEEDED;
                  return false;
                },
                wopts);
            ok = ok && done.ok();
          }
          double ms = absl::ToDoubleMilliseconds(absl::Now() - t0);
          absl::MutexLock lock(&mu);
          if (ok) {
            answer_ms.push_back(ms);
          } else {
            ++failures;
          }
        }
      });
    }
    for (auto& t : threads) t.join();
    state.SetIterationTime(absl::ToDoubleSeconds(absl::Now() - start));
    health_ms = prober.Stop(&health_failures);
    c->StopWorkers();
  }
  if (failures > 0) {
    state.SkipWithError(absl::StrCat(failures, " questions were not answered").c_str());
    return;
  }
  state.counters["users"] = users;
  state.counters["llm_ms"] = llm_ms;
  ReportLatency(state, "", Summarize(answer_ms), /*with_mean=*/true);
  LatencySummary h = Summarize(health_ms);
  state.counters["health_p50_ms"] = h.p50_ms;
  state.counters["health_p99_ms"] = h.p99_ms;
  state.counters["health_max_ms"] = h.max_ms;
  state.counters["health_failures"] = health_failures;
}
BENCHMARK(BM_LLMBound)
    ->ArgName("users")
    ->Arg(1)
    ->Arg(10)
    ->Arg(25)
    ->Arg(50)
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace aijobs::bench

int main(int argc, char** argv) { return aijobs::bench::RunBenchmarksMain(argc, argv); }
