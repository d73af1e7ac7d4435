// The worker's cost of calling an OpenAI-compatible LLM (issue 4's benchmark targets): the
// OpenAI provider (workers/openai: one CurlLoop thread, SSE parser, protobuf-JSON chunks)
// against the fake OpenAI server running as a SEPARATE process (fake-openai-server), so the
// server's CPU is never counted as the worker's. CPU is read per thread
// (pthread_getcpuclockid for the CurlLoop thread, CLOCK_THREAD_CPUTIME_ID for the calling
// thread) and per process (getrusage), over the measured window only.
//
//   build/bench/bench_worker_llm --benchmark_filter=BM_OpenAiProvider_CallOverhead
//   AIJOBS_BENCH_SMOKE=1 build/bench/bench_worker_llm --benchmark_min_time=0.01
//   build/bench/bench_worker_llm --benchmark_out=build/bench_worker_llm.json
//
// Targets: <= 1 ms worker CPU per LLM call; 500 concurrent streams x 50 tokens/s (25,000
// deltas/s) with < 20 % of one core in the HTTP/SSE path (the CurlLoop thread).
#include <benchmark/benchmark.h>
#include <pthread.h>
#include <sys/resource.h>
#include <time.h>

#include <atomic>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
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
  worker::DeploymentFactory factory =
      [loop](const v1::Deployment& dep, worker::RateLimitObserver* observer)
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

}  // namespace
}  // namespace aijobs::bench

int main(int argc, char** argv) { return aijobs::bench::RunBenchmarksMain(argc, argv); }
