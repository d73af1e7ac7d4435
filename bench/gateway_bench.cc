// HTTP gateway suites: PostgreSQL (durable), the real aijobs-scheduler, sim aijobs-worker
// processes and the real aijobs-gateway binary, driven over HTTP/1.1 by lean clients in this
// process (a blocking keep-alive socket client for latency probes, one Boost.Asio thread for
// many connections; gRPC's callback API for the direct-to-scheduler baseline). Each benchmark
// runs one fixed workload (manual time) and reports the user-visible figures as counters,
// with the CPU split between the gateway, the scheduler, PostgreSQL, the workers and this
// process (all on the same cores).
//
//   build/bench/bench_gateway --benchmark_filter=BM_GatewayGetJob_AddedLatency
//   AIJOBS_BENCH_SMOKE=1 build/bench/bench_gateway --benchmark_min_time=0.01
//   build/bench/bench_gateway --benchmark_out=build/bench_gateway.json
#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "bench/bench_util.h"
#include "bench/http_client.h"

namespace aijobs::bench {
namespace {

namespace net = boost::asio;
using tcp = net::ip::tcp;

// ---------------------------------------------------------------------------------------
// Set-up

// Raises this process's open-file limit to the hard limit (thousands of client sockets);
// the gateway inherits it and raises its own as well.
void RaiseFileLimit() {
  rlimit r;
  if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    setrlimit(RLIMIT_NOFILE, &r);
  }
}

// The aijobs-gateway process in front of the cluster's scheduler, started once.
struct GatewayProcess {
  std::unique_ptr<testing::Process> proc;
  int port = 0;
};

GatewayProcess* GetGateway(Cluster* c, std::string* error) {
  static GatewayProcess* gw = nullptr;
  static std::string start_error;
  if (gw != nullptr) return gw;
  if (!start_error.empty()) {
    *error = start_error;
    return nullptr;
  }
  RaiseFileLimit();
  for (int attempt = 0; attempt < 3; ++attempt) {
    int port = testing::FreePort();
    testing::ProcessOptions opts;
    opts.path = testing::BinPath("aijobs-gateway");
    // The defaults users get; only the addresses are ours, and no per-address limits (every
    // simulated client comes from 127.0.0.1).
    opts.args = {"--listen",
                 absl::StrCat("127.0.0.1:", port),
                 "--scheduler",
                 c->address(),
                 "--anonymous_requests_per_minute=0",
                 "--max_streams_per_ip=0",
                 "--max_connections_per_ip=0"};
    // Extra gateway flags for experiments, e.g. AIJOBS_BENCH_GATEWAY_FLAGS="--threads=1".
    if (const char* extra = std::getenv("AIJOBS_BENCH_GATEWAY_FLAGS"); extra != nullptr) {
      for (absl::string_view f : absl::StrSplit(extra, ' ', absl::SkipEmpty())) {
        opts.args.emplace_back(f);
      }
    }
    auto proc = testing::Process::Start(opts);
    if (!proc.ok()) {
      start_error = proc.status().ToString();
      break;
    }
    bool up = testing::WaitFor(
        [&] {
          if (!(*proc)->IsRunning()) return true;
          auto conn = HttpConnection::Connect("127.0.0.1", port, absl::Seconds(1));
          if (!conn.ok()) return false;
          auto r =
              (*conn)->RoundTrip(HttpRequestText("GET", "/healthz", "127.0.0.1"), absl::Seconds(1));
          return r.ok() && r->status == 200;
        },
        absl::Seconds(20), absl::Milliseconds(20));
    if (up && (*proc)->IsRunning()) {
      gw = new GatewayProcess{std::move(*proc), port};
      // Killed before the cluster (and PostgreSQL) is torn down.
      std::atexit([] {
        if (gw != nullptr) gw->proc->Kill();
      });
      return gw;
    }
    start_error = absl::StrCat("aijobs-gateway did not come up:\n", (*proc)->LogTail());
    (*proc)->Kill();
  }
  *error = start_error;
  return nullptr;
}

struct Env {
  Cluster* cluster = nullptr;
  GatewayProcess* gateway = nullptr;
};

bool SetUp(benchmark::State& state, Env* env) {
  std::string error;
  env->cluster = Cluster::Get(&error);
  if (env->cluster != nullptr) env->gateway = GetGateway(env->cluster, &error);
  if (env->gateway == nullptr) {
    state.SkipWithError(error.c_str());
    return false;
  }
  return true;
}

bool Check(benchmark::State& state, const absl::Status& s, const char* what) {
  if (s.ok()) return true;
  std::string msg = absl::StrCat(what, ": ", s.ToString());
  state.SkipWithError(msg.c_str());
  return false;
}

// CPU seconds of the cluster's processes plus the gateway.
struct CpuAll {
  CpuUse cluster;
  double gateway = 0;
};
CpuAll CpuNow(const Env& env) { return {env.cluster->Cpu(), CpuSeconds(env.gateway->proc->Pid())}; }
void ReportCpuAll(benchmark::State& state, const CpuAll& a, const CpuAll& b, absl::Duration wall) {
  ReportCpu(state, a.cluster, b.cluster, wall);
  double s = absl::ToDoubleSeconds(wall);
  if (s > 0) state.counters["cpu_gateway_pct"] = (b.gateway - a.gateway) / s * 100;
}

double GatewayRssMiB(const Env& env) {
  return static_cast<double>(RssKiB(env.gateway->proc->Pid())) / 1024.0;
}

// Submits `n` jobs over `threads` threads (gRPC, through the SDK) and returns their ids.
absl::StatusOr<std::vector<std::string>> SubmitMany(Cluster* c, const v1::SubmitJobRequest& req,
                                                    int n, int threads) {
  std::vector<std::string> ids(n);
  std::atomic<int> next{0};
  absl::Mutex mu;
  absl::Status first_error;
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&] {
      for (int i = next.fetch_add(1); i < n; i = next.fetch_add(1)) {
        absl::StatusOr<v1::Job> job = c->client().Submit(req);
        if (!job.ok()) {
          absl::MutexLock l(&mu);
          if (first_error.ok()) first_error = job.status();
          continue;
        }
        ids[i] = job->id();
      }
    });
  }
  for (auto& t : ts) t.join();
  if (!first_error.ok()) return first_error;
  return ids;
}

// ---------------------------------------------------------------------------------------
// Asynchronous HTTP clients on one Boost.Asio thread

// Runs an io_context on one thread until destroyed.
class IoThread {
 public:
  IoThread() : guard_(net::make_work_guard(io_)), thread_([this] { io_.run(); }) {}
  ~IoThread() {
    guard_.reset();
    io_.stop();
    thread_.join();
  }
  net::io_context& io() { return io_; }

 private:
  net::io_context io_;
  net::executor_work_guard<net::io_context::executor_type> guard_;
  std::thread thread_;
};

// Closed-loop GET requests over `connections` keep-alive connections until `end`: one
// request in flight per connection, the next sent as soon as the response is complete.
class GetLoad {
 public:
  GetLoad(int port, int connections, std::string request)
      : port_(port), request_(std::move(request)), conns_(connections) {}

  // Connects every connection (blocking), then runs the load until `end`.
  absl::Status Run(absl::Duration duration) {
    IoThread io;
    tcp::endpoint ep(net::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port_));
    for (auto& c : conns_) {
      c = std::make_unique<Conn>(io.io());
      boost::system::error_code ec;
      c->sock.connect(ep, ec);
      if (ec) return absl::UnavailableError(absl::StrCat("connect: ", ec.message()));
      c->sock.set_option(tcp::no_delay(true), ec);
    }
    start_ = std::chrono::steady_clock::now();
    end_ = start_ + std::chrono::microseconds(absl::ToInt64Microseconds(duration));
    {
      absl::MutexLock l(&mu_);
      active_ = static_cast<int>(conns_.size());
    }
    for (auto& c : conns_) {
      Conn* cp = c.get();
      net::post(io.io(), [this, cp] { Send(cp); });
    }
    {
      absl::MutexLock l(&mu_);
      mu_.Await(absl::Condition(
          +[](int* a) { return *a == 0; }, &active_));
    }
    wall_ = std::chrono::steady_clock::now() - start_;
    for (auto& c : conns_) {
      boost::system::error_code ec;
      c->sock.close(ec);
    }
    return first_error_.empty() ? absl::OkStatus() : absl::InternalError(first_error_);
  }

  std::vector<double> latencies_ms() const {
    std::vector<double> all;
    for (const auto& c : conns_) all.insert(all.end(), c->ms.begin(), c->ms.end());
    return all;
  }
  int64_t ok() const { return ok_; }
  int64_t errors() const { return errors_; }
  double wall_s() const { return std::chrono::duration<double>(wall_).count(); }

 private:
  struct Conn {
    explicit Conn(net::io_context& io) : sock(io) {}
    tcp::socket sock;
    HttpResponseParser parser;
    std::chrono::steady_clock::time_point sent;
    std::vector<double> ms;
    char buf[4096];
  };

  // Everything below runs on the io thread.
  void Send(Conn* c) {
    c->sent = std::chrono::steady_clock::now();
    net::async_write(c->sock, net::buffer(request_),
                     [this, c](boost::system::error_code ec, size_t) {
                       if (ec) return Fail(c, ec.message());
                       Read(c);
                     });
  }

  void Read(Conn* c) {
    c->sock.async_read_some(net::buffer(c->buf), [this, c](boost::system::error_code ec, size_t n) {
      if (ec) return Fail(c, ec.message());
      if (!c->parser.Feed(absl::string_view(c->buf, n))) return Fail(c, c->parser.error());
      if (!c->parser.complete()) return Read(c);
      auto now = std::chrono::steady_clock::now();
      c->ms.push_back(std::chrono::duration<double, std::milli>(now - c->sent).count());
      if (c->parser.status() == 200) {
        ++ok_;
      } else {
        ++errors_;
      }
      c->parser.NextResponse();
      if (now < end_) return Send(c);
      Done();
    });
  }

  void Fail(Conn*, const std::string& why) {
    if (first_error_.empty()) first_error_ = why;
    ++errors_;
    Done();
  }

  void Done() {
    absl::MutexLock l(&mu_);
    --active_;
  }

  const int port_;
  const std::string request_;
  std::vector<std::unique_ptr<Conn>> conns_;
  std::chrono::steady_clock::time_point start_, end_;
  std::chrono::steady_clock::duration wall_{};
  int64_t ok_ = 0, errors_ = 0;  // io thread only
  std::string first_error_;      // io thread only until Run returns
  absl::Mutex mu_;
  int active_ ABSL_GUARDED_BY(mu_) = 0;
};

// Closed-loop GetJob calls straight to the scheduler over gRPC: `concurrency` calls in
// flight on one channel (as the gateway has one upstream channel), callback API, each call's
// callback starting the next. The same workload as GetLoad minus the gateway.
class DirectGetLoad {
 public:
  DirectGetLoad(std::shared_ptr<grpc::Channel> channel, int concurrency, std::string job_id)
      : stub_(v1::JobService::NewStub(std::move(channel))), slots_(concurrency) {
    request_.set_job_id(std::move(job_id));
  }

  absl::Status Run(absl::Duration duration) {
    start_ = std::chrono::steady_clock::now();
    end_ = start_ + std::chrono::microseconds(absl::ToInt64Microseconds(duration));
    {
      absl::MutexLock l(&mu_);
      active_ = static_cast<int>(slots_.size());
    }
    for (Slot& s : slots_) Issue(&s);
    absl::MutexLock l(&mu_);
    mu_.Await(absl::Condition(
        +[](int* a) { return *a == 0; }, &active_));
    wall_ = std::chrono::steady_clock::now() - start_;
    return first_error_.empty() ? absl::OkStatus() : absl::InternalError(first_error_);
  }

  std::vector<double> latencies_ms() const {
    std::vector<double> all;
    for (const Slot& s : slots_) all.insert(all.end(), s.ms.begin(), s.ms.end());
    return all;
  }
  int64_t ok() const { return ok_.load(); }
  int64_t errors() const { return errors_.load(); }
  double wall_s() const { return std::chrono::duration<double>(wall_).count(); }

 private:
  struct Slot {
    v1::Job response;
    std::chrono::steady_clock::time_point sent;
    std::vector<double> ms;  // touched by one call at a time
  };

  void Issue(Slot* s) {
    // Owned by the callback, so it outlives the call and is freed after the callback ran.
    auto ctx = std::make_shared<grpc::ClientContext>();
    ctx->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    s->response.Clear();
    s->sent = std::chrono::steady_clock::now();
    stub_->async()->GetJob(ctx.get(), &request_, &s->response, [this, s, ctx](grpc::Status status) {
      auto now = std::chrono::steady_clock::now();
      s->ms.push_back(std::chrono::duration<double, std::milli>(now - s->sent).count());
      if (status.ok()) {
        ok_.fetch_add(1);
      } else {
        errors_.fetch_add(1);
        absl::MutexLock l(&mu_);
        if (first_error_.empty()) first_error_ = status.error_message();
      }
      if (status.ok() && now < end_) return Issue(s);
      absl::MutexLock l(&mu_);
      --active_;
    });
  }

  std::unique_ptr<v1::JobService::Stub> stub_;
  v1::GetJobRequest request_;
  std::vector<Slot> slots_;
  std::chrono::steady_clock::time_point start_, end_;
  std::chrono::steady_clock::duration wall_{};
  std::atomic<int64_t> ok_{0}, errors_{0};
  absl::Mutex mu_;
  std::string first_error_ ABSL_GUARDED_BY(mu_);
  int active_ ABSL_GUARDED_BY(mu_) = 0;
};

// Many concurrent SSE streams (GET /v1/jobs/{id}/events, Accept: text/event-stream) on one io
// thread. Counts streams whose head arrived, events received (by their blank-line ends) and
// streams ended.
class SseStreams {
 public:
  explicit SseStreams(int port) : port_(port) {}
  ~SseStreams() { CloseAll(); }

  // Opens one stream per job id, at most `in_flight` waiting for their head at a time (the
  // listen backlog is finite), and waits until every head arrived or `timeout`.
  absl::Status Open(const std::vector<std::string>& job_ids, int in_flight,
                    absl::Duration timeout) {
    tcp::endpoint ep(net::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port_));
    absl::Time deadline = absl::Now() + timeout;
    for (size_t i = 0; i < job_ids.size(); ++i) {
      {
        absl::MutexLock l(&mu_);
        auto cond = [this, i, in_flight]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return static_cast<int64_t>(i) - heads_ - failed_ < in_flight;
        };
        if (!mu_.AwaitWithDeadline(absl::Condition(&cond), deadline)) {
          return absl::DeadlineExceededError(
              absl::StrCat("only ", heads_, " of ", i, " streams started"));
        }
      }
      auto c = std::make_unique<Conn>(io_.io());
      c->request = HttpRequestText("GET", absl::StrCat("/v1/jobs/", job_ids[i], "/events"),
                                   "127.0.0.1", {{"Accept", "text/event-stream"}});
      Conn* cp = c.get();
      conns_.push_back(std::move(c));
      net::post(io_.io(), [this, cp, ep] {
        cp->sock.async_connect(ep, [this, cp](boost::system::error_code ec) {
          if (ec) return Ended(cp, false, ec.message());
          cp->sock.set_option(tcp::no_delay(true), ec);
          net::async_write(cp->sock, net::buffer(cp->request),
                           [this, cp](boost::system::error_code ec, size_t) {
                             if (ec) return Ended(cp, false, ec.message());
                             Read(cp);
                           });
        });
      });
    }
    absl::MutexLock l(&mu_);
    auto all = [this, n = static_cast<int64_t>(job_ids.size())]()
                   ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return heads_ + failed_ >= n; };
    if (!mu_.AwaitWithDeadline(absl::Condition(&all), deadline)) {
      return absl::DeadlineExceededError(
          absl::StrCat("only ", heads_, " of ", job_ids.size(), " streams started"));
    }
    if (failed_ > 0) {
      return absl::InternalError(absl::StrCat(failed_, " streams failed, first: ", first_error_));
    }
    return absl::OkStatus();
  }

  void CloseAll() {
    absl::Notification closed;
    net::post(io_.io(), [this, &closed] {
      for (auto& c : conns_) {
        boost::system::error_code ec;
        c->sock.close(ec);
      }
      closed.Notify();
    });
    closed.WaitForNotification();
  }

  int64_t heads() {
    absl::MutexLock l(&mu_);
    return heads_;
  }
  int64_t ended() {
    absl::MutexLock l(&mu_);
    return ended_;
  }
  int64_t events() const { return events_.load(std::memory_order_relaxed); }

 private:
  struct Conn {
    explicit Conn(net::io_context& io) : sock(io) {}
    tcp::socket sock;
    std::string request;
    HttpResponseParser parser;
    bool head = false;     // the head was parsed
    bool counted = false;  // ... and was a 200 (counted in heads_)
    bool done = false;
    char last = 0;  // last body byte of the previous read, to find "\n\n" across reads
    char buf[2048];
  };

  void Read(Conn* c) {
    c->sock.async_read_some(net::buffer(c->buf), [this, c](boost::system::error_code ec, size_t n) {
      if (ec) return Ended(c, true, ec.message());
      if (!c->parser.Feed(absl::string_view(c->buf, n))) return Ended(c, false, c->parser.error());
      if (c->parser.head_done() && !c->head) {
        c->head = true;
        if (c->parser.status() != 200) {
          return Ended(c, false, absl::StrCat("HTTP ", c->parser.status(), " ", c->parser.body()));
        }
        c->counted = true;
        absl::MutexLock l(&mu_);
        ++heads_;
      }
      std::string& body = c->parser.body();
      int64_t ev = 0;
      char prev = c->last;
      for (char ch : body) {
        if (ch == '\n' && prev == '\n') ++ev;
        prev = ch;
      }
      if (!body.empty()) c->last = body.back();
      body.clear();
      if (ev > 0) events_.fetch_add(ev, std::memory_order_relaxed);
      if (c->parser.complete()) return Ended(c, true, "");
      Read(c);
    });
  }

  void Ended(Conn* c, bool clean, const std::string& why) {
    if (c->done) return;
    c->done = true;
    absl::MutexLock l(&mu_);
    if (!c->counted || !clean) {
      if (!c->counted) ++failed_;
      if (first_error_.empty()) first_error_ = why;
    }
    ++ended_;
  }

  const int port_;
  std::vector<std::unique_ptr<Conn>> conns_;  // appended before the io thread sees them
  std::atomic<int64_t> events_{0};
  absl::Mutex mu_;
  int64_t heads_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t failed_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t ended_ ABSL_GUARDED_BY(mu_) = 0;
  std::string first_error_ ABSL_GUARDED_BY(mu_);
  IoThread io_;  // last: destroyed (joined) first
};

// GET /healthz every `interval` on one keep-alive connection from its own thread.
class HealthzProber {
 public:
  HealthzProber(int port, absl::Duration interval) {
    thread_ = std::thread([this, port, interval] {
      const std::string req = HttpRequestText("GET", "/healthz", "127.0.0.1");
      std::unique_ptr<HttpConnection> conn;
      while (!stop_.WaitForNotificationWithTimeout(interval)) {
        if (conn == nullptr || !conn->open()) {
          auto c = HttpConnection::Connect("127.0.0.1", port, absl::Seconds(5));
          if (!c.ok()) {
            ++failures_;
            continue;
          }
          conn = std::move(*c);
        }
        absl::Time t0 = absl::Now();
        auto r = conn->RoundTrip(req, absl::Seconds(5));
        double ms = absl::ToDoubleMilliseconds(absl::Now() - t0);
        if (r.ok() && r->status == 200) {
          ms_.push_back(ms);
        } else {
          ++failures_;
        }
      }
    });
  }
  ~HealthzProber() { Stop(); }
  std::vector<double> Stop() {
    if (!stop_.HasBeenNotified()) stop_.Notify();
    if (thread_.joinable()) thread_.join();
    return ms_;
  }
  int failures() const { return failures_; }

 private:
  absl::Notification stop_;
  std::vector<double> ms_;
  int failures_ = 0;
  std::thread thread_;
};

// Reads one gauge/counter value from the gateway's /metrics (-1 when absent).
double GatewayMetric(int port, const std::string& name) {
  auto conn = HttpConnection::Connect("127.0.0.1", port, absl::Seconds(5));
  if (!conn.ok()) return -1;
  auto r = (*conn)->RoundTrip(HttpRequestText("GET", "/metrics", "127.0.0.1"), absl::Seconds(5));
  if (!r.ok()) return -1;
  for (absl::string_view line : absl::StrSplit(r->body, '\n')) {
    if (absl::StartsWith(line, name + " ")) {
      double v = -1;
      if (absl::SimpleAtod(line.substr(name.size() + 1), &v)) return v;
    }
  }
  return -1;
}

// Closes every stream and waits until the gateway has ended their upstream watches (its
// open-streams gauge is back to `baseline`), then lets the scheduler finish its side, so the
// next benchmark (which TRUNCATEs the jobs) never races a watch being torn down.
absl::Status CloseAndDrain(SseStreams* sse, int port) {
  sse->CloseAll();
  bool drained =
      testing::WaitFor([&] { return GatewayMetric(port, "aijobs_gateway_open_streams") == 0; },
                       absl::Seconds(60), absl::Milliseconds(50));
  absl::SleepFor(absl::Seconds(1));
  return drained ? absl::OkStatus()
                 : absl::DeadlineExceededError("gateway streams still open 60 s after close");
}

// ---------------------------------------------------------------------------------------

// GetJob p50/p99 through the gateway (one keep-alive HTTP connection) against the same
// GetJob over gRPC directly (one channel), alternating in blocks so both see the same
// machine state.
void BM_GatewayGetJob_AddedLatency(benchmark::State& state) {
  Env env;
  if (!SetUp(state, &env)) return;
  Cluster* c = env.cluster;
  const int rounds = Scaled(20, 2);
  const int block = Scaled(250, 50);
  std::vector<double> http_ms, grpc_ms;
  absl::Time start, end;
  for (auto _ : state) {
    c->StopWorkers();
    if (!Check(state, c->ResetJobs(), "reset")) return;
    auto ids = SubmitMany(c, SimChatRequest(R"({"ttft_ms":0,"tokens":1})"), 1, 1);
    if (!Check(state, ids.status(), "submit")) return;
    const std::string id = (*ids)[0];
    auto conn = HttpConnection::Connect("127.0.0.1", env.gateway->port, absl::Seconds(5));
    if (!Check(state, conn.status(), "connect")) return;
    const std::string req = HttpRequestText("GET", absl::StrCat("/v1/jobs/", id), "127.0.0.1");
    v1::GetJobRequest greq;
    greq.set_job_id(id);
    auto http_get = [&]() -> absl::Status {
      absl::StatusOr<HttpResponse> r = (*conn)->RoundTrip(req, absl::Seconds(10));
      if (!r.ok()) return r.status();
      if (r->status != 200) return absl::InternalError(absl::StrCat("HTTP ", r->status, r->body));
      return absl::OkStatus();
    };
    auto grpc_get = [&]() -> absl::Status {
      grpc::ClientContext ctx;
      ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
      v1::Job job;
      grpc::Status s = c->stub()->GetJob(&ctx, greq, &job);
      return s.ok() ? absl::OkStatus() : absl::InternalError(s.error_message());
    };
    for (int i = 0; i < block; ++i) {  // warm-up: connections, caches
      if (!Check(state, http_get(), "http warm-up") || !Check(state, grpc_get(), "grpc warm-up")) {
        return;
      }
    }
    http_ms.clear();
    grpc_ms.clear();
    start = absl::Now();
    for (int r = 0; r < rounds; ++r) {
      for (int i = 0; i < block; ++i) {
        absl::Time t0 = absl::Now();
        if (!Check(state, http_get(), "http GetJob")) return;
        http_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - t0));
      }
      for (int i = 0; i < block; ++i) {
        absl::Time t0 = absl::Now();
        if (!Check(state, grpc_get(), "grpc GetJob")) return;
        grpc_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - t0));
      }
    }
    end = absl::Now();
    state.SetIterationTime(absl::ToDoubleSeconds(end - start));
  }
  LatencySummary h = Summarize(http_ms), g = Summarize(grpc_ms);
  state.counters["requests"] = static_cast<double>(h.count);
  ReportLatency(state, "http_", h);
  ReportLatency(state, "grpc_", g);
  state.counters["added_p50_ms"] = h.p50_ms - g.p50_ms;
  state.counters["added_p99_ms"] = h.p99_ms - g.p99_ms;
}
BENCHMARK(BM_GatewayGetJob_AddedLatency)
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

// GET /v1/jobs/{id} over many keep-alive connections from one client thread, closed loop.
void BM_GatewayGetJob_Throughput(benchmark::State& state) {
  const int connections = static_cast<int>(state.range(0));
  Env env;
  if (!SetUp(state, &env)) return;
  Cluster* c = env.cluster;
  const absl::Duration duration = SmokeMode() ? absl::Seconds(1) : absl::Seconds(10);
  std::unique_ptr<GetLoad> load;
  CpuAll cpu0, cpu1;
  for (auto _ : state) {
    c->StopWorkers();
    if (!Check(state, c->ResetJobs(), "reset")) return;
    auto ids = SubmitMany(c, SimChatRequest(R"({"ttft_ms":0,"tokens":1})"), 1, 1);
    if (!Check(state, ids.status(), "submit")) return;
    const std::string req =
        HttpRequestText("GET", absl::StrCat("/v1/jobs/", (*ids)[0]), "127.0.0.1");
    GetLoad warm(env.gateway->port, connections, req);
    if (!Check(state, warm.Run(absl::Milliseconds(300)), "warm-up")) return;
    load = std::make_unique<GetLoad>(env.gateway->port, connections, req);
    cpu0 = CpuNow(env);
    absl::Status s = load->Run(duration);
    cpu1 = CpuNow(env);
    if (!Check(state, s, "load")) return;
    state.SetIterationTime(load->wall_s());
  }
  if (load->errors() > 0) {
    state.SkipWithError(absl::StrCat(load->errors(), " requests failed").c_str());
    return;
  }
  state.counters["requests"] = static_cast<double>(load->ok());
  state.counters["req_per_s"] = static_cast<double>(load->ok()) / load->wall_s();
  ReportLatency(state, "", Summarize(load->latencies_ms()));
  ReportCpuAll(state, cpu0, cpu1, absl::Seconds(load->wall_s()));
  state.counters["gateway_rss_mib"] = GatewayRssMiB(env);
}
BENCHMARK(BM_GatewayGetJob_Throughput)
    ->ArgName("connections")
    ->Arg(32)
    ->Arg(64)
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

// The baseline of BM_GatewayGetJob_Throughput: the same closed-loop GetJob load at the same
// concurrency straight to the scheduler over gRPC (one channel, callback API), so the
// gateway's own cost is separable from the scheduler's and PostgreSQL's. The gateway process
// stays up (idle) meanwhile.
void BM_DirectGrpcGetJob_Throughput(benchmark::State& state) {
  const int concurrency = static_cast<int>(state.range(0));
  Env env;
  if (!SetUp(state, &env)) return;
  Cluster* c = env.cluster;
  const absl::Duration duration = SmokeMode() ? absl::Seconds(1) : absl::Seconds(10);
  std::unique_ptr<DirectGetLoad> load;
  CpuAll cpu0, cpu1;
  for (auto _ : state) {
    c->StopWorkers();
    if (!Check(state, c->ResetJobs(), "reset")) return;
    auto ids = SubmitMany(c, SimChatRequest(R"({"ttft_ms":0,"tokens":1})"), 1, 1);
    if (!Check(state, ids.status(), "submit")) return;
    auto channel = NewChannel(c->address(), 1000);
    DirectGetLoad warm(channel, concurrency, (*ids)[0]);
    if (!Check(state, warm.Run(absl::Milliseconds(300)), "warm-up")) return;
    load = std::make_unique<DirectGetLoad>(channel, concurrency, (*ids)[0]);
    cpu0 = CpuNow(env);
    absl::Status s = load->Run(duration);
    cpu1 = CpuNow(env);
    if (!Check(state, s, "load")) return;
    state.SetIterationTime(load->wall_s());
  }
  if (load->errors() > 0) {
    state.SkipWithError(absl::StrCat(load->errors(), " calls failed").c_str());
    return;
  }
  state.counters["requests"] = static_cast<double>(load->ok());
  state.counters["req_per_s"] = static_cast<double>(load->ok()) / load->wall_s();
  ReportLatency(state, "", Summarize(load->latencies_ms()));
  ReportCpuAll(state, cpu0, cpu1, absl::Seconds(load->wall_s()));
}
BENCHMARK(BM_DirectGrpcGetJob_Throughput)
    ->ArgName("concurrency")
    ->Arg(32)
    ->Arg(64)
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

// Open SSE streams on jobs that stay QUEUED (no worker): the gateway's RSS and RSS per stream.
void BM_GatewaySseStreams_Memory(benchmark::State& state) {
  const int streams = SmokeMode() ? 200 : static_cast<int>(state.range(0));
  Env env;
  if (!SetUp(state, &env)) return;
  Cluster* c = env.cluster;
  double rss0 = 0, rss1 = 0, sched0 = 0, sched1 = 0, open_gauge = -1;
  double open_s = 0, idle_cpu_gateway = 0;
  for (auto _ : state) {
    c->StopWorkers();
    if (!Check(state, c->ResetJobs(), "reset")) return;
    auto ids = SubmitMany(c, SimChatRequest(R"({"ttft_ms":0,"tokens":1})"), streams, 16);
    if (!Check(state, ids.status(), "submit")) return;
    rss0 = GatewayRssMiB(env);
    sched0 = static_cast<double>(RssKiB(c->scheduler_pid())) / 1024.0;
    SseStreams sse(env.gateway->port);
    absl::Time t0 = absl::Now();
    if (!Check(state, sse.Open(*ids, 256, absl::Seconds(120)), "open streams")) return;
    open_s = absl::ToDoubleSeconds(absl::Now() - t0);
    // Idle cost of holding them: gateway CPU over one second with nothing to relay.
    double g0 = CpuSeconds(env.gateway->proc->Pid());
    absl::SleepFor(absl::Seconds(1));
    idle_cpu_gateway = (CpuSeconds(env.gateway->proc->Pid()) - g0) * 100;
    rss1 = GatewayRssMiB(env);
    sched1 = static_cast<double>(RssKiB(c->scheduler_pid())) / 1024.0;
    open_gauge = GatewayMetric(env.gateway->port, "aijobs_gateway_open_streams");
    const int64_t ended_early = sse.ended();
    if (!Check(state, CloseAndDrain(&sse, env.gateway->port), "close streams")) return;
    if (ended_early > 0) {
      state.SkipWithError(absl::StrCat(ended_early, " streams ended early").c_str());
      return;
    }
    state.SetIterationTime(open_s);
  }
  state.counters["streams"] = streams;
  state.counters["open_streams_metric"] = open_gauge;
  state.counters["open_s"] = open_s;
  state.counters["rss_before_mib"] = rss0;
  state.counters["rss_mib"] = rss1;
  state.counters["rss_per_stream_kib"] = (rss1 - rss0) * 1024.0 / streams;
  state.counters["sched_rss_delta_mib"] = sched1 - sched0;
  state.counters["cpu_gateway_idle_pct"] = idle_cpu_gateway;
}
BENCHMARK(BM_GatewaySseStreams_Memory)
    ->ArgName("streams")
    ->Arg(5000)
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

// /healthz p50/p99 (every 10 ms, own keep-alive connection) while N SSE streams receive
// tokens: N jobs streaming at 20 tokens/s from sim workers, each followed over SSE.
void BM_GatewayHealthz_UnderSseLoad(benchmark::State& state) {
  const int streams = SmokeMode() ? 50 : static_cast<int>(state.range(0));
  Env env;
  if (!SetUp(state, &env)) return;
  Cluster* c = env.cluster;
  const absl::Duration measure = SmokeMode() ? absl::Seconds(2) : absl::Seconds(10);
  // Long enough to cover opening the streams and the whole measuring window.
  const int tokens = static_cast<int>(absl::ToDoubleSeconds(measure) * 20) + 200;
  std::vector<double> health_ms;
  int health_failures = 0;
  int64_t events = 0;
  double events_per_s = 0;
  CpuAll cpu0, cpu1;
  for (auto _ : state) {
    c->StopWorkers();
    if (!Check(state, c->ResetJobs(), "reset")) return;
    if (!Check(state, c->StartWorkers(2, std::max(64, streams / 2 + 8)), "workers")) return;
    auto ids = SubmitMany(
        c, SimChatRequest(absl::StrCat(R"({"ttft_ms":0,"tokens_per_s":20,"tokens":)", tokens, "}")),
        streams, 16);
    if (!Check(state, ids.status(), "submit")) return;
    SseStreams sse(env.gateway->port);
    if (!Check(state, sse.Open(*ids, 256, absl::Seconds(60)), "open streams")) return;
    int64_t ev0 = sse.events();
    cpu0 = CpuNow(env);
    absl::Time t0 = absl::Now();
    HealthzProber prober(env.gateway->port, absl::Milliseconds(10));
    absl::SleepFor(measure);
    health_ms = prober.Stop();
    health_failures = prober.failures();
    absl::Duration wall = absl::Now() - t0;
    cpu1 = CpuNow(env);
    events = sse.events() - ev0;
    events_per_s = static_cast<double>(events) / absl::ToDoubleSeconds(wall);
    const int64_t ended_early = sse.ended();
    c->StopWorkers();
    if (!Check(state, CloseAndDrain(&sse, env.gateway->port), "close streams")) return;
    if (ended_early > 0) {
      state.SkipWithError(
          absl::StrCat(ended_early, " streams ended during the window (jobs too short?)").c_str());
      return;
    }
    state.SetIterationTime(absl::ToDoubleSeconds(wall));
    ReportCpuAll(state, cpu0, cpu1, wall);
  }
  state.counters["streams"] = streams;
  state.counters["events_per_s"] = events_per_s;
  state.counters["health_checks"] = static_cast<double>(health_ms.size());
  state.counters["health_failures"] = health_failures;
  ReportLatency(state, "healthz_", Summarize(health_ms));
  if (health_failures > 0) state.SkipWithError("some /healthz checks failed");
}
BENCHMARK(BM_GatewayHealthz_UnderSseLoad)
    ->ArgName("streams")
    ->Arg(1000)
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

// Issue 13's real-client pattern through the gateway: `producers` threads, each submitting
// a no-op job with POST /v1/jobs (keep-alive) and then following it over SSE on
// /v1/jobs/{id}/events to its end (a new connection per stream, as a browser's EventSource),
// until `jobs` have been seen to finish. 2 workers × 256 slots consume them.
void BM_GatewaySubmitAndWatchEveryJob(benchmark::State& state) {
  const int producers = static_cast<int>(state.range(0));
  Env env;
  if (!SetUp(state, &env)) return;
  Cluster* c = env.cluster;
  const int total = Scaled(20000, 200);
  const std::string body =
      R"({"type":"chat","input":{"messages":[{"role":"user","content":"x"}],"sim":{"ttft_ms":0,"tokens":1}}})";
  const std::string post = HttpRequestText("POST", "/v1/jobs", "127.0.0.1",
                                           {{"Content-Type", "application/json"}}, body);
  std::atomic<int> next{0}, done{0}, errors{0};
  std::mutex mu;
  std::vector<double> to_final_ms;
  std::string first_error;
  absl::Time start, end;
  CpuAll cpu0, cpu1;
  for (auto _ : state) {
    c->StopWorkers();
    if (!Check(state, c->ResetJobs(), "reset")) return;
    if (!Check(state, c->StartWorkers(2, 256), "workers")) return;
    cpu0 = CpuNow(env);
    start = absl::Now();
    std::vector<std::thread> threads;
    for (int p = 0; p < producers; ++p) {
      threads.emplace_back([&] {
        auto fail = [&](const std::string& why) {
          if (errors.fetch_add(1) == 0) {
            std::lock_guard<std::mutex> lock(mu);
            first_error = why;
          }
        };
        std::unique_ptr<HttpConnection> conn;
        std::vector<double> mine;
        while (next.fetch_add(1) < total) {
          const absl::Time t0 = absl::Now();
          if (conn == nullptr || !conn->open()) {
            auto made = HttpConnection::Connect("127.0.0.1", env.gateway->port, absl::Seconds(5));
            if (!made.ok()) {
              fail(made.status().ToString());
              continue;
            }
            conn = *std::move(made);
          }
          auto r = conn->RoundTrip(post, absl::Seconds(30));
          if (!r.ok() || r->status != 202 || r->location.empty()) {
            fail(r.ok() ? absl::StrCat("POST answered ", r->status, ": ", r->body)
                        : r.status().ToString());
            continue;
          }
          auto sse = HttpConnection::Connect("127.0.0.1", env.gateway->port, absl::Seconds(5));
          if (!sse.ok()) {
            fail(sse.status().ToString());
            continue;
          }
          bool final_seen = false;
          std::string seen;  // pieces may split an event anywhere
          absl::Status st = (*sse)->Stream(
              HttpRequestText("GET", absl::StrCat(r->location, "/events"), "127.0.0.1",
                              {{"Accept", "text/event-stream"}}),
              [](int status) { return status == 200; },
              [&](absl::string_view piece) {
                seen.append(piece.data(), piece.size());
                final_seen = absl::StrContains(seen, "event: final_job");
                return !final_seen;
              },
              absl::Now() + absl::Seconds(60));
          if (!st.ok() || !final_seen) {
            fail(st.ok() ? "the stream ended without its final event" : st.ToString());
            continue;
          }
          mine.push_back(absl::ToDoubleMilliseconds(absl::Now() - t0));
          done.fetch_add(1);
        }
        std::lock_guard<std::mutex> lock(mu);
        to_final_ms.insert(to_final_ms.end(), mine.begin(), mine.end());
      });
    }
    for (auto& t : threads) t.join();
    end = absl::Now();
    cpu1 = CpuNow(env);
    c->StopWorkers();
    state.SetIterationTime(absl::ToDoubleSeconds(end - start));
  }
  if (errors.load() > 0) {
    state.SkipWithError(absl::StrCat(errors.load(), " jobs failed, first: ", first_error).c_str());
    return;
  }
  state.counters["jobs"] = done.load();
  state.counters["jobs_per_s"] = done.load() / absl::ToDoubleSeconds(end - start);
  ReportLatency(state, "to_final_", Summarize(to_final_ms));
  ReportCpuAll(state, cpu0, cpu1, end - start);
}
BENCHMARK(BM_GatewaySubmitAndWatchEveryJob)
    ->ArgName("producers")
    ->Arg(64)
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace aijobs::bench

int main(int argc, char** argv) { return aijobs::bench::RunBenchmarksMain(argc, argv); }
