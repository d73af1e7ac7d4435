// Shared pieces of the aijobs benchmark suites: a cluster of real processes (private durable
// PostgreSQL, the aijobs-scheduler binary, aijobs-worker binaries), latency percentiles as
// google-benchmark counters, /proc readings (RSS, CPU) and an async WatchJob reader.
//
//   aijobs::bench::Cluster* c = aijobs::bench::Cluster::Get();   // PG + scheduler, started once
//   if (auto s = c->ResetJobs(); !s.ok()) state.SkipWithError(s.ToString().c_str());
//   aijobs::bench::ReportLatency(state, "", aijobs::bench::Summarize(latencies_ms));
#pragma once

#include <benchmark/benchmark.h>
#include <grpcpp/grpcpp.h>
#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "aijobs/client.h"
#include "aijobs/v1/job_service.grpc.pb.h"
#include "bench/latency.h"
#include "tests/fixtures/pg_server.h"
#include "tests/fixtures/process.h"

namespace aijobs::bench {

// The suites' main(): runs the benchmarks selected by the command line (all google-benchmark
// flags work, --benchmark_out included) and prints every run that failed. Returns 1 when a
// benchmark reported an error in smoke mode, so the bench-smoke tests fail instead of
// passing over a skipped suite; 0 otherwise (a full run keeps going and shows the error).
int RunBenchmarksMain(int argc, char** argv);

// True when AIJOBS_BENCH_SMOKE is set to a non-empty value other than "0": the suites shrink
// their workloads so the whole binary finishes in seconds (ctest label bench-smoke).
bool SmokeMode();
// `full` normally, `smoke` in smoke mode.
int Scaled(int full, int smoke);

// Sets counters <prefix>p50_ms, <prefix>p99_ms, <prefix>max_ms (and <prefix>mean_ms when
// `with_mean`).
void ReportLatency(benchmark::State& state, const std::string& prefix, const LatencySummary& s,
                   bool with_mean = false);

// The contents of a small /proc file ("" when it cannot be read). With read(2), not a stream:
// a process that exits while its file is read makes the read fail with ESRCH, which
// libstdc++'s filebuf turns into an exception (it aborted a benchmark run once).
std::string ReadProcFile(const std::string& path);

// VmRSS of a process in KiB (-1 when unreadable).
int64_t RssKiB(pid_t pid);
// User + system CPU seconds a process has used so far (-1 when unreadable).
double CpuSeconds(pid_t pid);

// CPU seconds used so far by each process group of the cluster and by this process.
struct CpuUse {
  double scheduler = 0;
  double postgres = 0;  // postmaster and all its children (backends, WAL writer, ...)
  double workers = 0;
  double bench = 0;  // this process: the clients
};
// Percent of one core each group used between `a` and `b` over `wall` (200 = both cores).
void ReportCpu(benchmark::State& state, const CpuUse& a, const CpuUse& b, absl::Duration wall);

// The chat request every no-op benchmark submits: one user message "x" plus input.sim.
v1::SubmitJobRequest SimChatRequest(const std::string& sim_json);

// A channel with its own TCP connection (no subchannel sharing), so several of them spread
// many streams over several connections as separate client processes would.
std::shared_ptr<grpc::Channel> NewChannel(const std::string& address, int index);

// PostgreSQL (durable: fsync and synchronous_commit on) + one aijobs-scheduler process, shared
// by every benchmark of a binary and torn down at exit; worker processes per benchmark.
class Cluster {
 public:
  // Starts the cluster on first use. Null (with the reason in *error) when it cannot start.
  static Cluster* Get(std::string* error);

  // Empties jobs and job_events (TRUNCATE) so each benchmark starts from an empty queue.
  // Call with no worker connected.
  absl::Status ResetJobs();
  // pg_stat_statements: resets its counters (creating the extension on first use), and the
  // top `n` statements of this database by total execution time as a Markdown table.
  absl::Status ResetStatementStats();
  absl::StatusOr<std::string> TopStatements(int n);
  // Kills the scheduler and starts a fresh one (clean RSS baseline) with the default flags
  // plus `extra_flags` (the last value of a flag wins); client() then sends `bearer_token`.
  absl::Status RestartScheduler(const std::vector<std::string>& extra_flags = {},
                                const std::string& bearer_token = "");
  // Starts `count` aijobs-worker processes with `slots` each and waits until every one is
  // connected to the scheduler.
  absl::Status StartWorkers(int count, int slots);
  // Kills the workers (SIGKILL): benchmarks end with every job finished.
  void StopWorkers();

  const std::string& address() const { return address_; }
  const std::string& conninfo() const { return pg_->conninfo(); }
  pid_t scheduler_pid() const { return scheduler_->Pid(); }
  // The SDK client every benchmark submits through (one channel, as the SDK recommends).
  aijobs::Client& client() { return *client_; }
  v1::JobService::Stub* stub() { return stub_.get(); }

  // CPU used so far by the scheduler, PostgreSQL, the workers and this process.
  CpuUse Cpu();

  // Pages through ListJobs(state) and returns every job.
  absl::StatusOr<std::vector<v1::Job>> ListAll(v1::JobState state);
  // True when no job is QUEUED or RUNNING (two ListJobs calls of one row).
  absl::StatusOr<bool> AllFinished();

  ~Cluster();

 private:
  Cluster() = default;
  absl::Status StartScheduler(const std::vector<std::string>& extra_flags = {},
                              const std::string& bearer_token = "");

  std::unique_ptr<testing::PgServer> pg_;
  std::unique_ptr<testing::Process> scheduler_;
  std::vector<std::unique_ptr<testing::Process>> workers_;
  std::string address_;
  std::unique_ptr<aijobs::Client> client_;
  std::unique_ptr<v1::JobService::Stub> stub_;
};

// One WatchJob stream read with gRPC's callback API (no thread per stream). `on_event` runs
// on a gRPC thread with the event and the time it was received; calls for one stream never
// overlap. Destroying the watcher cancels the stream and waits for it to end.
class AsyncWatcher : public grpc::ClientReadReactor<v1::JobEvent> {
 public:
  using OnEvent = std::function<void(const v1::JobEvent& event, absl::Time received)>;
  AsyncWatcher(v1::JobService::Stub* stub, const std::string& job_id, OnEvent on_event,
               absl::Duration timeout = absl::Minutes(5));
  ~AsyncWatcher() override;

  void Cancel() { ctx_.TryCancel(); }
  // Waits until the stream has ended; false on timeout.
  bool WaitDone(absl::Duration timeout);
  // Waits until at least one event arrived (or the stream ended); false on timeout.
  bool WaitFirstEvent(absl::Duration timeout);
  grpc::Status status();
  // Time the watch was started (before the call was made).
  absl::Time opened() const { return opened_; }

  void OnReadDone(bool ok) override;
  void OnDone(const grpc::Status& s) override;

 private:
  grpc::ClientContext ctx_;
  v1::WatchJobRequest request_;
  v1::JobEvent event_;
  OnEvent on_event_;
  absl::Time opened_;
  absl::Mutex mu_;
  bool got_event_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
};

// Calls grpc.health.v1.Health/Check every `interval` on its own connection until stopped
// and keeps each call's latency.
class HealthProber {
 public:
  HealthProber(const std::string& address, absl::Duration interval);
  ~HealthProber();
  // Stops probing and returns the latencies (ms) and the number of failed checks.
  std::vector<double> Stop(int* failures);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace aijobs::bench
