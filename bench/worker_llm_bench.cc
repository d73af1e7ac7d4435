// The worker's cost of calling an OpenAI-compatible LLM (issue 4's benchmark targets): the
// OpenAI provider (workers/openai: one CurlLoop thread, SSE parser, protobuf-JSON chunks)
// against the fake OpenAI server running as a SEPARATE process (fake-openai-server), so the
// server's CPU is never counted as the worker's. CPU is read per thread
// (pthread_getcpuclockid for the CurlLoop thread, CLOCK_THREAD_CPUTIME_ID for the calling
// thread) and per process (getrusage), over the measured window only.
// BM_Worker_500Streams_EndToEnd runs the whole path instead: a real aijobs-worker process
// (--providers: one openai deployment on fake-openai-server) serving 500 jobs of the real
// scheduler (bench_util's Cluster), its CPU read from /proc (the process, and its CurlLoop
// thread "aijobs-curl" = the HTTP/SSE path), tokens counted at WatchJob watchers.
//
//   build/bench/bench_worker_llm --benchmark_filter=BM_OpenAiProvider_CallOverhead
//   build/bench/bench_worker_llm --benchmark_filter=BM_Worker_500Streams_EndToEnd
//   AIJOBS_BENCH_SMOKE=1 build/bench/bench_worker_llm --benchmark_min_time=0.01
//   build/bench/bench_worker_llm --benchmark_out=build/bench_worker_llm.json
//
// Targets: <= 1 ms worker CPU per LLM call; 500 concurrent streams x 50 tokens/s (25,000
// deltas/s) with < 20 % of one core in the HTTP/SSE path (the CurlLoop thread).
#include <benchmark/benchmark.h>
#include <dirent.h>
#include <google/protobuf/util/json_util.h>
#include <pthread.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "bench/bench_util.h"
#include "tests/fixtures/process.h"
#include "workers/llm_provider.h"
#include "workers/openai/curl_loop.h"
#include "workers/openai/openai_provider.h"
#include "workers/routing/routed_provider.h"

namespace aijobs::bench {
namespace {

// ---- CPU clocks ------------------------------------------------------------------------

double ClockSeconds(clockid_t clk) {
  timespec ts{};
  clock_gettime(clk, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

double ProcessCpuSeconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

// The CPU clock of the CurlLoop's own thread (read from any thread).
absl::StatusOr<clockid_t> LoopThreadClock(openai::CurlLoop* loop) {
  clockid_t clk{};
  absl::Notification got;
  int rc = -1;
  loop->RunAt(absl::Now(), [&] {
    rc = pthread_getcpuclockid(pthread_self(), &clk);
    got.Notify();
  });
  if (!got.WaitForNotificationWithTimeout(absl::Seconds(5)) || rc != 0) {
    return absl::InternalError("cannot read the CurlLoop thread's CPU clock");
  }
  return clk;
}

// ---- the fake OpenAI server, a separate process ----------------------------------------

// Started once (from the main thread, as testing::Process requires) and shared by every
// benchmark of the binary. Every request says what to stream in its X-Fake-Behavior header.
struct FakeServer {
  std::unique_ptr<testing::Process> process;
  std::string base_url;
};

FakeServer* GetFakeServer(std::string* error) {
  static FakeServer* server = [&]() -> FakeServer* {
    testing::ProcessOptions opts;
    opts.path = testing::BinPath("fake-openai-server");
    opts.args = {"--port", "0"};
    opts.separate_stderr = true;
    auto proc = testing::Process::Start(opts);
    if (!proc.ok()) {
      *error = proc.status().ToString();
      return nullptr;
    }
    std::string port;
    bool up = testing::WaitFor(
        [&] {
          std::string out = (*proc)->ReadStdout();
          size_t at = out.find("listening on 127.0.0.1:");
          if (at == std::string::npos) return false;
          size_t eol = out.find('\n', at);
          if (eol == std::string::npos) return false;
          port = out.substr(at + 23, eol - at - 23);
          return true;
        },
        absl::Seconds(10), absl::Milliseconds(5));
    if (!up) {
      *error = absl::StrCat("fake-openai-server did not start: ", (*proc)->LogTail());
      return nullptr;
    }
    auto* s = new FakeServer;
    s->process = std::move(*proc);
    s->base_url = absl::StrCat("http://127.0.0.1:", port, "/v1");
    return s;
  }();
  if (server == nullptr && error->empty()) *error = "fake-openai-server failed to start earlier";
  return server;
}

v1::Deployment FakeDeployment(const std::string& base_url, const std::string& behavior) {
  v1::Deployment d;
  d.set_name("fake");
  d.set_provider("openai");
  d.set_base_url(base_url);
  d.set_model("fake-model");
  (*d.mutable_headers())["X-Fake-Behavior"] = behavior;
  // A 500-stream burst of connects on a busy 2-core machine must not trip the defaults.
  d.mutable_timeouts()->mutable_first_byte()->set_seconds(60);
  d.mutable_timeouts()->mutable_idle()->set_seconds(30);
  return d;
}

// ---- sinks -----------------------------------------------------------------------------

// Shared by all calls of one run; the sink work is a counter, so the figures are the
// provider's cost, not the consumer's.
struct RunCounters {
  std::atomic<int64_t> deltas{0};
  std::atomic<int64_t> streaming{0};  // calls that received their first delta
  absl::Mutex mu;
  int64_t finished ABSL_GUARDED_BY(mu) = 0;
  int64_t errors ABSL_GUARDED_BY(mu) = 0;
  std::string first_error ABSL_GUARDED_BY(mu);
};

class CountingSink : public worker::ChatSink {
 public:
  explicit CountingSink(RunCounters* c) : c_(c) {}
  void OnDelta(const std::string& text) override {
    if (!text.empty() && !started_) {
      started_ = true;
      c_->streaming.fetch_add(1, std::memory_order_relaxed);
    }
    c_->deltas.fetch_add(1, std::memory_order_relaxed);
  }
  void OnDone(const worker::Usage&, const std::string&) override {
    absl::MutexLock lock(&c_->mu);
    ++c_->finished;
  }
  void OnError(const worker::ProviderError& e) override {
    absl::MutexLock lock(&c_->mu);
    ++c_->finished;
    if (c_->errors++ == 0) c_->first_error = absl::StrCat(e.code, ": ", e.message);
  }

 private:
  RunCounters* const c_;
  bool started_ = false;  // calls of one LlmCall never overlap
};

worker::ChatRequest Request() {
  worker::ChatRequest r;
  r.messages.push_back({"user", "Say something."});
  r.deadline = absl::Now() + absl::Minutes(5);
  return r;
}

bool WaitFinished(RunCounters* c, int64_t n, absl::Duration timeout) {
  absl::MutexLock lock(&c->mu);
  auto cond = [c, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(c->mu) { return c->finished >= n; };
  return c->mu.AwaitWithTimeout(absl::Condition(&cond), timeout);
}

// The provider a benchmark drives: the OpenAI provider alone, or the worker's real path,
// a RoutedProvider (model group -> deployment, breaker, buckets) over it.
struct ProviderUnderTest {
  std::unique_ptr<openai::CurlLoop> loop;
  std::unique_ptr<worker::LlmProvider> provider;
  clockid_t loop_clock{};
};

absl::StatusOr<ProviderUnderTest> MakeProvider(const std::string& behavior, bool routed) {
  std::string error;
  FakeServer* server = GetFakeServer(&error);
  if (server == nullptr) return absl::UnavailableError(error);
  ProviderUnderTest p;
  p.loop = std::make_unique<openai::CurlLoop>();
  auto clk = LoopThreadClock(p.loop.get());
  if (!clk.ok()) return clk.status();
  p.loop_clock = *clk;
  v1::Deployment d = FakeDeployment(server->base_url, behavior);
  if (!routed) {
    auto provider = openai::OpenAiProvider::Create(d, p.loop.get(), nullptr);
    if (!provider.ok()) return provider.status();
    p.provider = std::move(*provider);
    return p;
  }
  v1::ProvidersConfig config;
  *config.add_deployments() = d;
  auto* group = config.add_model_groups();
  group->set_name("fake-model");
  group->add_members()->set_deployment("fake");
  config.set_default_model_group("fake-model");
  openai::CurlLoop* loop = p.loop.get();
  worker::DeploymentFactory factory = [loop](const v1::Deployment& dep,
                                             worker::RateLimitObserver* observer)
      -> absl::StatusOr<std::unique_ptr<worker::LlmProvider>> {
    auto provider = openai::OpenAiProvider::Create(dep, loop, observer);
    if (!provider.ok()) return provider.status();
    return std::unique_ptr<worker::LlmProvider>(std::move(*provider));
  };
  worker::RoutedProviderOptions options;
  options.name = "openai";
  auto provider = worker::RoutedProvider::Create(config, factory, options);
  if (!provider.ok()) return provider.status();
  p.provider = std::move(*provider);
  return p;
}

// ---- BM_OpenAiProvider_CallOverhead ----------------------------------------------------

// Complete streamed calls of 20 tokens with no rate limit, `concurrency` at a time (waves);
// the worker CPU per call is the CurlLoop thread's plus the calling thread's (StartChat,
// request JSON, handing the call to the loop) — everything the worker spends on one call
// outside the job handler.
void BM_OpenAiProvider_CallOverhead(benchmark::State& state) {
  const int concurrency = static_cast<int>(state.range(0));
  const int tokens = 20;
  const int calls = Scaled(concurrency == 1 ? 2000 : 4000, 20);
  auto p = MakeProvider(absl::StrCat("tokens=", tokens), /*routed=*/false);
  if (!p.ok()) {
    state.SkipWithError(p.status().ToString().c_str());
    return;
  }
  for (auto _ : state) {
    // Warm-up: connections, first-use allocations, protobuf descriptors.
    {
      RunCounters warm;
      std::vector<std::unique_ptr<worker::LlmCall>> handles;
      for (int i = 0; i < concurrency; ++i) {
        handles.push_back(p->provider->StartChat(Request(), std::make_shared<CountingSink>(&warm)));
      }
      if (!WaitFinished(&warm, concurrency, absl::Seconds(30))) {
        state.SkipWithError("warm-up calls did not finish within 30 s");
        return;
      }
    }
    RunCounters c;
    double loop0 = ClockSeconds(p->loop_clock);
    double self0 = ClockSeconds(CLOCK_THREAD_CPUTIME_ID);
    double proc0 = ProcessCpuSeconds();
    double server0 = CpuSeconds(GetFakeServer(nullptr)->process->Pid());
    absl::Time t0 = absl::Now();
    std::vector<std::unique_ptr<worker::LlmCall>> handles;
    handles.reserve(concurrency);
    for (int started = 0; started < calls;) {
      handles.clear();
      int wave = std::min(concurrency, calls - started);
      for (int i = 0; i < wave; ++i) {
        handles.push_back(p->provider->StartChat(Request(), std::make_shared<CountingSink>(&c)));
      }
      started += wave;
      if (!WaitFinished(&c, started, absl::Seconds(30))) {
        state.SkipWithError("calls did not finish within 30 s");
        return;
      }
    }
    handles.clear();
    absl::Duration wall = absl::Now() - t0;
    double loop_cpu = ClockSeconds(p->loop_clock) - loop0;
    double self_cpu = ClockSeconds(CLOCK_THREAD_CPUTIME_ID) - self0;
    double proc_cpu = ProcessCpuSeconds() - proc0;
    double server_cpu = CpuSeconds(GetFakeServer(nullptr)->process->Pid()) - server0;
    state.SetIterationTime(absl::ToDoubleSeconds(wall));
    absl::MutexLock lock(&c.mu);
    if (c.errors > 0) {
      state.SkipWithError(absl::StrCat(c.errors, " calls failed; first: ", c.first_error).c_str());
      return;
    }
    if (c.deltas.load() != static_cast<int64_t>(calls) * tokens) {
      state.SkipWithError(
          absl::StrCat("expected ", calls * tokens, " deltas, got ", c.deltas.load()).c_str());
      return;
    }
    double secs = absl::ToDoubleSeconds(wall);
    state.counters["calls"] = calls;
    state.counters["calls_per_s"] = calls / secs;
    state.counters["cpu_ms_per_call"] = (loop_cpu + self_cpu) * 1e3 / calls;
    state.counters["loop_cpu_ms_per_call"] = loop_cpu * 1e3 / calls;
    state.counters["caller_cpu_ms_per_call"] = self_cpu * 1e3 / calls;
    state.counters["process_cpu_ms_per_call"] = proc_cpu * 1e3 / calls;
    state.counters["server_cpu_ms_per_call"] = server_cpu * 1e3 / calls;
  }
}
BENCHMARK(BM_OpenAiProvider_CallOverhead)
    ->ArgName("concurrency")
    ->Arg(1)
    ->Arg(32)
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

// ---- BM_OpenAiProvider_500Streams ------------------------------------------------------

// `streams` concurrent calls, each streaming 50 tokens/s for ~10 s. The steady window runs
// from the moment every stream has delivered its first delta to the moment the first call
// finishes; deltas/s and CPU are measured over that window (the connect burst is reported
// separately through cpu_ms_per_call, which covers the whole run).
void BM_OpenAiProvider_500Streams(benchmark::State& state) {
  const bool routed = state.range(0) != 0;
  const int streams = Scaled(500, 20);
  const int rate = 50;
  const int tokens = Scaled(500, 25);  // 10 s at 50 tokens/s (smoke: 0.5 s)
  auto p = MakeProvider(absl::StrCat("tokens=", tokens, " rate=", rate), routed);
  if (!p.ok()) {
    state.SkipWithError(p.status().ToString().c_str());
    return;
  }
  pid_t server_pid = GetFakeServer(nullptr)->process->Pid();
  for (auto _ : state) {
    RunCounters c;
    double loop0 = ClockSeconds(p->loop_clock);
    double proc0 = ProcessCpuSeconds();
    absl::Time t0 = absl::Now();
    std::vector<std::unique_ptr<worker::LlmCall>> handles;
    handles.reserve(streams);
    for (int i = 0; i < streams; ++i) {
      handles.push_back(p->provider->StartChat(Request(), std::make_shared<CountingSink>(&c)));
    }
    // Window start: every stream is flowing.
    bool flowing = testing::WaitFor([&] { return c.streaming.load() >= streams; },
                                    absl::Seconds(60), absl::Milliseconds(2));
    auto finished = [&] {
      absl::MutexLock lock(&c.mu);
      return c.finished;
    };
    if (!flowing) {
      absl::MutexLock lock(&c.mu);
      state.SkipWithError(absl::StrCat("only ", c.streaming.load(), " of ", streams,
                                       " streams started within 60 s; errors: ", c.errors, " ",
                                       c.first_error)
                              .c_str());
      return;
    }
    absl::Time a = absl::Now();
    int64_t deltas_a = c.deltas.load();
    double loop_a = ClockSeconds(p->loop_clock);
    double proc_a = ProcessCpuSeconds();
    double server_a = CpuSeconds(server_pid);
    // Window end: the first call has finished (the others are finishing too).
    testing::WaitFor([&] { return finished() > 0; }, absl::Seconds(120), absl::Milliseconds(2));
    absl::Time b = absl::Now();
    int64_t deltas_b = c.deltas.load();
    double loop_b = ClockSeconds(p->loop_clock);
    double proc_b = ProcessCpuSeconds();
    double server_b = CpuSeconds(server_pid);
    if (!WaitFinished(&c, streams, absl::Seconds(120))) {
      state.SkipWithError("streams did not finish within 120 s");
      return;
    }
    absl::Time t1 = absl::Now();
    handles.clear();
    double loop_all = ClockSeconds(p->loop_clock) - loop0;
    double proc_all = ProcessCpuSeconds() - proc0;
    state.SetIterationTime(absl::ToDoubleSeconds(t1 - t0));
    absl::MutexLock lock(&c.mu);
    if (c.errors > 0) {
      state.SkipWithError(absl::StrCat(c.errors, " calls failed; first: ", c.first_error).c_str());
      return;
    }
    if (c.deltas.load() != static_cast<int64_t>(streams) * tokens) {
      state.SkipWithError(
          absl::StrCat("expected ", streams * tokens, " deltas, got ", c.deltas.load()).c_str());
      return;
    }
    double window = absl::ToDoubleSeconds(b - a);
    state.counters["streams"] = streams;
    state.counters["window_s"] = window;
    state.counters["deltas_per_s"] = (deltas_b - deltas_a) / window;
    state.counters["cpu_pct_of_core"] = 100.0 * (loop_b - loop_a) / window;
    state.counters["process_cpu_pct"] = 100.0 * (proc_b - proc_a) / window;
    state.counters["server_cpu_pct"] = 100.0 * (server_b - server_a) / window;
    state.counters["cpu_ms_per_call"] = loop_all * 1e3 / streams;
    state.counters["process_cpu_ms_per_call"] = proc_all * 1e3 / streams;
    state.counters["us_per_delta"] = (loop_b - loop_a) * 1e6 / (deltas_b - deltas_a);
  }
}
BENCHMARK(BM_OpenAiProvider_500Streams)
    ->ArgName("routed")
    ->Arg(0)
    ->Arg(1)
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

// ---- BM_Worker_500Streams_EndToEnd -----------------------------------------------------

// CPU seconds per thread of process `pid`, summed by thread name (/proc/<pid>/task/*/stat:
// utime + stime). The worker's CurlLoop thread is named "aijobs-curl".
std::map<std::string, double> ThreadCpuByName(pid_t pid) {
  std::map<std::string, double> out;
  const std::string dir = absl::StrCat("/proc/", pid, "/task");
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return out;
  static const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    const std::string stat = ReadProcFile(absl::StrCat(dir, "/", e->d_name, "/stat"));
    size_t open = stat.find('(');
    size_t close = stat.rfind(')');
    if (open == std::string::npos || close == std::string::npos || close < open) continue;
    std::string name = stat.substr(open + 1, close - open - 1);
    // Fields after the name: state(3) ppid(4) ... utime(14) stime(15).
    std::vector<std::string> f = absl::StrSplit(stat.substr(close + 2), ' ');
    double utime = 0, stime = 0;
    if (f.size() < 13 || !absl::SimpleAtod(f[11], &utime) || !absl::SimpleAtod(f[12], &stime)) {
      continue;
    }
    out[name] += (utime + stime) / ticks;
  }
  closedir(d);
  return out;
}

// Occurrences of "tok" in `text`: the fake server's tokens are "tok0", " tok1", ...; the
// scheduler may merge several deltas into one event, so tokens are counted, not events.
int64_t CountTokens(const std::string& text) {
  int64_t n = 0;
  for (size_t at = text.find("tok"); at != std::string::npos; at = text.find("tok", at + 3)) {
    ++n;
  }
  return n;
}

// The whole worker path, as in production: `jobs` chat jobs submitted to the real scheduler
// (Cluster: PostgreSQL + aijobs-scheduler), run by ONE real aijobs-worker process whose
// --providers file routes the model group to an openai deployment on the fake-openai-server
// process, each job streaming `rate` tokens/s; watched over WatchJob (gRPC callback API, no
// thread per stream). The steady window runs from the moment every job's first token has
// reached its watcher to the first final event. Reported over that window: the worker
// process's CPU and its CurlLoop thread's (the HTTP/SSE path), tokens/s reaching the
// watchers, the scheduler's, PostgreSQL's, the fake server's and this process's CPU.
void BM_Worker_500Streams_EndToEnd(benchmark::State& state) {
  const int jobs = Scaled(500, 10);
  const int rate = 50;
  const int tokens = Scaled(500, 25);  // ~10 s at 50 tokens/s (smoke: 0.5 s)
  std::string error;
  FakeServer* server = GetFakeServer(&error);
  if (server == nullptr) {
    state.SkipWithError(error.c_str());
    return;
  }
  Cluster* c = Cluster::Get(&error);
  if (c == nullptr) {
    state.SkipWithError(error.c_str());
    return;
  }
  c->StopWorkers();
  if (absl::Status s = c->ResetJobs(); !s.ok()) {
    state.SkipWithError(s.ToString().c_str());
    return;
  }
  const std::string providers = absl::StrCat(testing::LogDir(), "/bench-providers-", getpid(), "-",
                                             absl::ToUnixMicros(absl::Now()), ".textproto");
  {
    std::ofstream out(providers);
    out << "deployments {\n  name: \"fake\"\n  provider: \"openai\"\n  base_url: \""
        << server->base_url << "\"\n  model: \"fake-model\"\n"
        << "  headers { key: \"X-Fake-Behavior\" value: \"tokens=" << tokens << " rate=" << rate
        << "\" }\n"
        // A 500-job burst of connects on a busy 2-core machine must not trip the defaults.
        << "  timeouts { first_byte { seconds: 60 } idle { seconds: 30 } }\n}\n"
        << "model_groups {\n  name: \"fake-model\"\n  members { deployment: \"fake\" }\n}\n"
        << "default_model_group: \"fake-model\"\n";
    if (!out.good()) {
      state.SkipWithError(absl::StrCat("cannot write ", providers).c_str());
      return;
    }
  }
  testing::ProcessOptions opts;
  opts.path = testing::BinPath("aijobs-worker");
  opts.log_name = absl::StrCat("bench-llm-worker-", getpid());
  opts.args = {"--scheduler", c->address(), "--worker_id", opts.log_name,
               "--slots",     "600",        "--providers", providers};
  auto worker = testing::Process::Start(opts);
  if (!worker.ok()) {
    state.SkipWithError(worker.status().ToString().c_str());
    return;
  }
  if (!testing::WaitFor(
          [&] {
            return (*worker)->ReadStdout().find("connected to scheduler") != std::string::npos;
          },
          absl::Seconds(20), absl::Milliseconds(5))) {
    state.SkipWithError(
        absl::StrCat("aijobs-worker did not connect: ", (*worker)->LogTail()).c_str());
    return;
  }
  const pid_t worker_pid = (*worker)->Pid();
  const pid_t server_pid = server->process->Pid();

  v1::SubmitJobRequest request;
  if (auto s = google::protobuf::util::JsonStringToMessage(
          R"({"type":"chat","input":{"model":"fake-model",)"
          R"("messages":[{"role":"user","content":"Say something."}]}})",
          &request);
      !s.ok()) {
    state.SkipWithError(s.ToString().c_str());
    return;
  }

  // Per job; the callbacks of one stream never overlap.
  struct PerJob {
    int64_t tokens = 0;
    bool succeeded = false;
    std::string final_state;
  };
  std::vector<PerJob> per(jobs);
  std::atomic<int64_t> tokens_seen{0};
  std::atomic<int> flowing{0};  // jobs whose first token reached the watcher
  std::atomic<int> finals{0};
  std::atomic<int> submit_errors{0};
  absl::Mutex watchers_mu;
  std::vector<std::unique_ptr<AsyncWatcher>> watchers;

  for (auto _ : state) {
    absl::Time t0 = absl::Now();
    // A few submitting threads; each job gets its watcher as soon as it is accepted.
    const int submitters = std::min(jobs, 4);
    std::vector<std::thread> threads;
    for (int k = 0; k < submitters; ++k) {
      threads.emplace_back([&, k] {
        for (int i = k; i < jobs; i += submitters) {
          grpc::ClientContext ctx;
          ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
          v1::Job job;
          if (!c->stub()->SubmitJob(&ctx, request, &job).ok()) {
            submit_errors.fetch_add(1);
            continue;
          }
          PerJob* pj = &per[i];
          auto w = std::make_unique<AsyncWatcher>(
              c->stub(), job.id(),
              [pj, &tokens_seen, &flowing, &finals](const v1::JobEvent& e, absl::Time) {
                if (e.has_output_delta()) {
                  int64_t n = CountTokens(e.output_delta().text());
                  if (pj->tokens == 0 && n > 0) flowing.fetch_add(1);
                  pj->tokens += n;
                  tokens_seen.fetch_add(n, std::memory_order_relaxed);
                }
                if (e.has_final_job()) {
                  pj->succeeded = e.final_job().state() == v1::SUCCEEDED;
                  pj->final_state = v1::JobState_Name(e.final_job().state());
                  finals.fetch_add(1);
                }
              });
          absl::MutexLock lock(&watchers_mu);
          watchers.push_back(std::move(w));
        }
      });
    }
    for (auto& t : threads) t.join();
    if (submit_errors.load() > 0) {
      state.SkipWithError(absl::StrCat(submit_errors.load(), " submits failed").c_str());
      return;
    }
    // Window start: every job's stream has reached its watcher.
    if (!testing::WaitFor([&] { return flowing.load() >= jobs || finals.load() > 0; },
                          absl::Seconds(60), absl::Milliseconds(2)) ||
        finals.load() > 0) {
      state.SkipWithError(absl::StrCat("only ", flowing.load(), " of ", jobs,
                                       " jobs streamed before the first ended; worker log: ",
                                       (*worker)->LogTail(1500))
                              .c_str());
      return;
    }
    absl::Time a = absl::Now();
    int64_t tokens_a = tokens_seen.load();
    double worker_a = CpuSeconds(worker_pid);
    std::map<std::string, double> threads_a = ThreadCpuByName(worker_pid);
    double server_a = CpuSeconds(server_pid);
    CpuUse cluster_a = c->Cpu();
    // Window end: the first job has ended (the others are ending too).
    testing::WaitFor([&] { return finals.load() > 0; }, absl::Seconds(120), absl::Milliseconds(2));
    absl::Time b = absl::Now();
    int64_t tokens_b = tokens_seen.load();
    double worker_b = CpuSeconds(worker_pid);
    std::map<std::string, double> threads_b = ThreadCpuByName(worker_pid);
    double server_b = CpuSeconds(server_pid);
    CpuUse cluster_b = c->Cpu();
    absl::Duration budget = absl::Seconds(tokens / rate) + absl::Seconds(120);
    std::vector<std::unique_ptr<AsyncWatcher>> done;
    {
      absl::MutexLock lock(&watchers_mu);
      done.swap(watchers);
    }
    for (auto& w : done) {
      if (!w->WaitDone(budget)) {
        state.SkipWithError("a watch did not end");
        return;
      }
    }
    state.SetIterationTime(absl::ToDoubleSeconds(absl::Now() - t0));
    done.clear();

    int succeeded = 0;
    int64_t full = 0;  // jobs whose watcher saw every token
    std::string first_bad;
    for (const PerJob& pj : per) {
      succeeded += pj.succeeded ? 1 : 0;
      full += pj.tokens == tokens ? 1 : 0;
      if (!pj.succeeded && first_bad.empty()) first_bad = pj.final_state;
    }
    double window = absl::ToDoubleSeconds(b - a);
    double curl_cpu = threads_b["aijobs-curl"] - threads_a["aijobs-curl"];
    state.counters["jobs"] = jobs;
    state.counters["succeeded"] = succeeded;
    state.counters["window_s"] = window;
    state.counters["tokens_per_s"] = (tokens_b - tokens_a) / window;
    state.counters["worker_cpu_pct"] = 100.0 * (worker_b - worker_a) / window;
    state.counters["worker_http_sse_cpu_pct"] = 100.0 * curl_cpu / window;
    state.counters["worker_us_per_token"] =
        (worker_b - worker_a) * 1e6 /
        static_cast<double>(std::max<int64_t>(1, tokens_b - tokens_a));
    state.counters["sched_cpu_pct"] = 100.0 * (cluster_b.scheduler - cluster_a.scheduler) / window;
    state.counters["pg_cpu_pct"] = 100.0 * (cluster_b.postgres - cluster_a.postgres) / window;
    state.counters["server_cpu_pct"] = 100.0 * (server_b - server_a) / window;
    state.counters["bench_cpu_pct"] = 100.0 * (cluster_b.bench - cluster_a.bench) / window;
    // Where the worker's CPU went, by thread name (stderr: not a counter per name).
    std::string breakdown;
    for (const auto& [name, cpu] : threads_b) {
      double pct = 100.0 * (cpu - threads_a[name]) / window;
      if (pct >= 0.5)
        absl::StrAppend(&breakdown, " ", name, "=", absl::StrFormat("%.1f", pct), "%");
    }
    fprintf(stderr, "BM_Worker_500Streams_EndToEnd: worker threads (%% of a core):%s\n",
            breakdown.c_str());
    if (succeeded != jobs || full != jobs) {
      state.SkipWithError(absl::StrCat(succeeded, " of ", jobs,
                                       " jobs SUCCEEDED (first other: ", first_bad, "), ", full,
                                       " watchers saw all ", tokens, " tokens")
                              .c_str());
      return;
    }
  }
  (*worker)->Kill();
  std::remove(providers.c_str());
}
BENCHMARK(BM_Worker_500Streams_EndToEnd)
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace aijobs::bench

int main(int argc, char** argv) { return aijobs::bench::RunBenchmarksMain(argc, argv); }
