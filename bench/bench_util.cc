#include "bench/bench_util.h"

#include <fcntl.h>
#include <google/protobuf/util/json_util.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/pg/connection.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace aijobs::bench {

namespace {

class ErrorCountingReporter : public benchmark::ConsoleReporter {
 public:
  ErrorCountingReporter() : ConsoleReporter(isatty(STDOUT_FILENO) ? OO_Color : OO_None) {}
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& r : runs) {
      if (r.error_occurred) failed.push_back(r.benchmark_name() + ": " + r.error_message);
    }
    ConsoleReporter::ReportRuns(runs);
  }
  std::vector<std::string> failed;
};

}  // namespace

int RunBenchmarksMain(int argc, char** argv) {
  // Debian builds Abseil with Mutex deadlock detection on: a global graph of every Mutex,
  // consulted on each lock, which grows with the number of Mutexes alive (one per watch here:
  // 37 % of the client's CPU at 200,000 watched jobs). Lock order is checked at compile time
  // by the clang thread-safety build instead.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  ErrorCountingReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  for (const std::string& f : reporter.failed) fprintf(stderr, "bench: FAILED %s\n", f.c_str());
  return !reporter.failed.empty() && SmokeMode() ? 1 : 0;
}

bool SmokeMode() {
  const char* v = std::getenv("AIJOBS_BENCH_SMOKE");
  return v != nullptr && *v != '\0' && std::string(v) != "0";
}

int Scaled(int full, int smoke) { return SmokeMode() ? smoke : full; }

void ReportLatency(benchmark::State& state, const std::string& prefix, const LatencySummary& s,
                   bool with_mean) {
  state.counters[prefix + "p50_ms"] = s.p50_ms;
  state.counters[prefix + "p99_ms"] = s.p99_ms;
  state.counters[prefix + "max_ms"] = s.max_ms;
  if (with_mean) state.counters[prefix + "mean_ms"] = s.mean_ms;
}

std::string ReadProcFile(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  close(fd);
  return n < 0 ? "" : out;
}

int64_t RssKiB(pid_t pid) {
  std::istringstream in(ReadProcFile(absl::StrCat("/proc/", pid, "/status")));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::strtoll(line.c_str() + 6, nullptr, 10);
  }
  return -1;
}

namespace {

// Parses /proc/<pid>/stat: parent pid and user+system CPU seconds.
bool ReadStat(pid_t pid, pid_t* ppid, double* cpu_s) {
  const std::string all = ReadProcFile(absl::StrCat("/proc/", pid, "/stat"));
  size_t paren = all.rfind(')');  // the command name may contain spaces
  if (paren == std::string::npos || paren + 2 >= all.size()) return false;
  std::istringstream fields(all.substr(paren + 2));
  std::string f;
  double utime = 0, stime = 0;
  long parent = 0;
  // After ")": state is field 3, ppid field 4, utime and stime fields 14 and 15.
  for (int i = 3; i <= 15 && (fields >> f); ++i) {
    if (i == 4) parent = std::strtol(f.c_str(), nullptr, 10);
    if (i == 14) utime = std::strtod(f.c_str(), nullptr);
    if (i == 15) stime = std::strtod(f.c_str(), nullptr);
  }
  *ppid = static_cast<pid_t>(parent);
  *cpu_s = (utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
  return true;
}

// CPU seconds of `root` and its direct children.
double TreeCpuSeconds(pid_t root) {
  double total = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    pid_t pid = static_cast<pid_t>(std::strtol(name.c_str(), nullptr, 10));
    pid_t ppid = 0;
    double cpu = 0;
    if (ReadStat(pid, &ppid, &cpu) && (pid == root || ppid == root)) total += cpu;
  }
  return total;
}

}  // namespace

double CpuSeconds(pid_t pid) {
  pid_t ppid = 0;
  double cpu = 0;
  return ReadStat(pid, &ppid, &cpu) ? cpu : -1;
}

void ReportCpu(benchmark::State& state, const CpuUse& a, const CpuUse& b, absl::Duration wall) {
  double s = absl::ToDoubleSeconds(wall);
  if (s <= 0) return;
  state.counters["cpu_sched_pct"] = (b.scheduler - a.scheduler) / s * 100;
  state.counters["cpu_pg_pct"] = (b.postgres - a.postgres) / s * 100;
  state.counters["cpu_workers_pct"] = (b.workers - a.workers) / s * 100;
  state.counters["cpu_bench_pct"] = (b.bench - a.bench) / s * 100;
}

v1::SubmitJobRequest SimChatRequest(const std::string& sim_json) {
  v1::SubmitJobRequest req;
  std::string json =
      absl::StrCat(R"({"type":"chat","input":{"messages":[{"role":"user","content":"x"}],"sim":)",
                   sim_json, "}}");
  auto s = google::protobuf::util::JsonStringToMessage(json, &req);
  if (!s.ok()) {
    fprintf(stderr, "bench: bad request JSON %s: %s\n", json.c_str(), s.ToString().c_str());
    std::abort();
  }
  return req;
}

std::shared_ptr<grpc::Channel> NewChannel(const std::string& address, int index) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetInt("aijobs.bench.channel", index);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 200);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

// ---------------------------------------------------------------------------------------
// Cluster

Cluster* Cluster::Get(std::string* error) {
  // Destroyed at exit: workers, scheduler, then PostgreSQL (and its data directory).
  static std::unique_ptr<Cluster> cluster;
  static std::string start_error;
  if (cluster != nullptr) return cluster.get();
  if (!start_error.empty()) {
    *error = start_error;
    return nullptr;
  }
  std::unique_ptr<Cluster> c(new Cluster());
  auto pg = testing::PgServer::Create();
  if (!pg.ok()) {
    start_error = absl::StrCat("cannot start PostgreSQL: ", pg.status().ToString());
    *error = start_error;
    return nullptr;
  }
  c->pg_ = std::move(*pg);
  absl::Status s = c->StartScheduler();
  if (!s.ok()) {
    start_error = absl::StrCat("cannot start aijobs-scheduler: ", s.ToString());
    *error = start_error;
    return nullptr;
  }
  cluster = std::move(c);
  return cluster.get();
}

Cluster::~Cluster() {
  StopWorkers();
  stub_.reset();
  client_.reset();
  if (scheduler_ != nullptr) {
    (void)scheduler_->Signal(SIGTERM);
    if (!scheduler_->Wait(absl::Seconds(5)).ok()) scheduler_->Kill();
  }
  scheduler_.reset();
  pg_.reset();
}

absl::Status Cluster::StartScheduler(const std::vector<std::string>& extra_flags,
                                     const std::string& bearer_token) {
  std::string last_error;
  // A port probed free can be taken before the scheduler binds it: retry with another.
  for (int attempt = 0; attempt < 3; ++attempt) {
    std::string address = absl::StrCat("127.0.0.1:", testing::FreePort());
    testing::ProcessOptions opts;
    opts.path = testing::BinPath("aijobs-scheduler");
    // The defaults users get; only the address and database are ours, and no authentication
    // (the suites measure jobs; the cost of verifying credentials is not in these figures).
    opts.args = {"--listen", address, "--database_url", pg_->conninfo(), "--auth=off"};
    opts.args.insert(opts.args.end(), extra_flags.begin(), extra_flags.end());
    auto proc = testing::Process::Start(opts);
    if (!proc.ok()) return proc.status();
    absl::Status ready = testing::WaitForJobService(address, absl::Seconds(30), proc->get());
    if (ready.ok()) {
      scheduler_ = std::move(*proc);
      address_ = address;
      ClientOptions client_options;
      client_options.bearer_token = bearer_token;
      client_ = std::make_unique<aijobs::Client>(address, client_options);
      stub_ = v1::JobService::NewStub(NewChannel(address, 0));
      return absl::OkStatus();
    }
    last_error = ready.ToString();
    (*proc)->Kill();
  }
  return absl::UnavailableError(last_error);
}

absl::Status Cluster::RestartScheduler(const std::vector<std::string>& extra_flags,
                                       const std::string& bearer_token) {
  StopWorkers();
  stub_.reset();
  client_.reset();
  if (scheduler_ != nullptr) scheduler_->Kill();
  scheduler_.reset();
  return StartScheduler(extra_flags, bearer_token);
}

absl::Status Cluster::ResetJobs() {
  auto conn = pg::Connection::Open(pg_->conninfo(), 0);
  if (!conn.ok()) return conn.status();
  auto r = (*conn)->Exec("TRUNCATE jobs, job_events");
  if (!r.ok()) return r.status();
  // Keep the planner's statistics right for an empty table (autovacuum is not immediate).
  auto a = (*conn)->Exec("ANALYZE jobs");
  return a.ok() ? absl::OkStatus() : a.status();
}

absl::Status Cluster::ResetStatementStats() {
  auto conn = pg::Connection::Open(pg_->conninfo(), 0);
  if (!conn.ok()) return conn.status();
  auto e = (*conn)->Exec("CREATE EXTENSION IF NOT EXISTS pg_stat_statements");
  if (!e.ok()) return e.status();
  auto r = (*conn)->Exec("SELECT pg_stat_statements_reset()");
  return r.ok() ? absl::OkStatus() : r.status();
}

absl::StatusOr<std::string> Cluster::TopStatements(int n) {
  auto conn = pg::Connection::Open(pg_->conninfo(), 0);
  if (!conn.ok()) return conn.status();
  auto r = (*conn)->Exec(absl::StrCat(
      "SELECT calls, round(total_exec_time)::int8, round(mean_exec_time * 1000)::int8, "
      "shared_blks_hit + shared_blks_read, rows, left(regexp_replace(query, '\\s+', ' ', 'g'), "
      "110) "
      "FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = "
      "current_database()) ORDER BY total_exec_time DESC LIMIT ",
      n));
  if (!r.ok()) return r.status();
  std::string out =
      "| calls | total ms | mean us | buffers | rows | statement |\n|---|---|---|---|---|---|\n";
  for (int i = 0; i < r->rows(); ++i) {
    absl::StrAppend(&out, "| ", r->GetInt(i, 0), " | ", r->GetInt(i, 1), " | ", r->GetInt(i, 2),
                    " | ", r->GetInt(i, 3), " | ", r->GetInt(i, 4), " | `", r->GetString(i, 5),
                    "` |\n");
  }
  return out;
}

absl::Status Cluster::StartWorkers(int count, int slots) {
  StopWorkers();
  for (int i = 0; i < count; ++i) {
    testing::ProcessOptions opts;
    opts.path = testing::BinPath("aijobs-worker");
    std::string id = absl::StrCat("bench-worker-", getpid(), "-", i);
    opts.log_name = id;
    opts.args = {
        "--scheduler",   address_, "--worker_id",        id,  "--slots",      absl::StrCat(slots),
        "--sim_ttft_ms", "0",      "--sim_tokens_per_s", "0", "--sim_tokens", "1"};
    auto proc = testing::Process::Start(opts);
    if (!proc.ok()) return proc.status();
    workers_.push_back(std::move(*proc));
  }
  for (auto& w : workers_) {
    bool connected = testing::WaitFor(
        [&] { return w->ReadStdout().find("connected to scheduler") != std::string::npos; },
        absl::Seconds(20), absl::Milliseconds(5));
    if (!connected) {
      return absl::UnavailableError(
          absl::StrCat("aijobs-worker did not connect within 20 s:\n", w->LogTail()));
    }
  }
  return absl::OkStatus();
}

void Cluster::StopWorkers() {
  for (auto& w : workers_) w->Kill();
  workers_.clear();
}

absl::StatusOr<std::vector<v1::Job>> Cluster::ListAll(v1::JobState state) {
  std::vector<v1::Job> jobs;
  std::string token;
  for (int page = 0; page < 100000; ++page) {
    v1::ListJobsRequest req;
    req.set_state(state);
    req.set_page_size(1000);
    req.set_page_token(token);
    auto resp = client_->List(req);
    if (!resp.ok()) return resp.status();
    for (auto& j : *resp->mutable_jobs()) jobs.push_back(std::move(j));
    token = resp->next_page_token();
    if (token.empty()) return jobs;
  }
  return absl::InternalError("ListJobs: page token not advancing");
}

CpuUse Cluster::Cpu() {
  CpuUse u;
  u.scheduler = CpuSeconds(scheduler_->Pid());
  std::ifstream pidfile(pg_->datadir() + "/postmaster.pid");
  long postmaster = 0;
  if (pidfile >> postmaster && postmaster > 0) {
    u.postgres = TreeCpuSeconds(static_cast<pid_t>(postmaster));
  }
  for (auto& w : workers_) u.workers += CpuSeconds(w->Pid());
  u.bench = CpuSeconds(getpid());
  return u;
}

absl::StatusOr<bool> Cluster::AllFinished() {
  for (v1::JobState s : {v1::QUEUED, v1::RUNNING}) {
    v1::ListJobsRequest req;
    req.set_state(s);
    req.set_page_size(1);
    auto resp = client_->List(req);
    if (!resp.ok()) return resp.status();
    if (resp->jobs_size() > 0) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------
// AsyncWatcher

AsyncWatcher::AsyncWatcher(v1::JobService::Stub* stub, const std::string& job_id, OnEvent on_event,
                           absl::Duration timeout)
    : on_event_(std::move(on_event)) {
  request_.set_job_id(job_id);
  ctx_.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  opened_ = absl::Now();
  stub->async()->WatchJob(&ctx_, &request_, this);
  StartRead(&event_);
  StartCall();
}

AsyncWatcher::~AsyncWatcher() {
  ctx_.TryCancel();
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(&done_));
}

void AsyncWatcher::OnReadDone(bool ok) {
  if (!ok) return;  // OnDone follows
  absl::Time now = absl::Now();
  if (on_event_) on_event_(event_, now);
  {
    absl::MutexLock lock(&mu_);
    got_event_ = true;
  }
  StartRead(&event_);
}

void AsyncWatcher::OnDone(const grpc::Status& s) {
  absl::MutexLock lock(&mu_);
  status_ = s;
  done_ = true;
}

bool AsyncWatcher::WaitDone(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(absl::Condition(&done_), timeout);
}

bool AsyncWatcher::WaitFirstEvent(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto cond = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return got_event_ || done_; };
  return mu_.AwaitWithTimeout(absl::Condition(&cond), timeout);
}

grpc::Status AsyncWatcher::status() {
  absl::MutexLock lock(&mu_);
  return status_;
}

// ---------------------------------------------------------------------------------------
// HealthProber

struct HealthProber::State {
  std::unique_ptr<grpc::health::v1::Health::Stub> stub;
  absl::Duration interval;
  absl::Notification stop;
  std::vector<double> ms;
  int failures = 0;
  std::thread thread;
};

HealthProber::HealthProber(const std::string& address, absl::Duration interval)
    : state_(std::make_unique<State>()) {
  state_->stub = grpc::health::v1::Health::NewStub(NewChannel(address, 1000000));
  state_->interval = interval;
  State* st = state_.get();
  st->thread = std::thread([st] {
    while (!st->stop.WaitForNotificationWithTimeout(st->interval)) {
      grpc::ClientContext ctx;
      ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
      grpc::health::v1::HealthCheckRequest req;
      grpc::health::v1::HealthCheckResponse resp;
      absl::Time t0 = absl::Now();
      grpc::Status s = st->stub->Check(&ctx, req, &resp);
      double ms = absl::ToDoubleMilliseconds(absl::Now() - t0);
      if (s.ok() && resp.status() == grpc::health::v1::HealthCheckResponse::SERVING) {
        st->ms.push_back(ms);
      } else {
        ++st->failures;
      }
    }
  });
}

HealthProber::~HealthProber() {
  int unused;
  Stop(&unused);
}

std::vector<double> HealthProber::Stop(int* failures) {
  if (!state_->stop.HasBeenNotified()) state_->stop.Notify();
  if (state_->thread.joinable()) state_->thread.join();
  *failures = state_->failures;
  return state_->ms;
}

}  // namespace aijobs::bench
