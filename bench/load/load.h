// aijobs-load: drives a running aijobs deployment with simulated users (threads that submit a
// chat job and watch it to the end, in a loop) over gRPC, or over HTTP through the gateway
// (POST /v1/jobs, then the job's Server-Sent Events), and writes a JSON and a Markdown
// report (throughput, latency percentiles, success rate, errors, health latency, queue depth).
//
//   absl::StatusOr<aijobs::load::LoadConfig> cfg = aijobs::load::ScenarioConfig("quick");
//   cfg->target = "127.0.0.1:50051";
//   absl::StatusOr<aijobs::load::LoadResult> r = aijobs::load::RunLoad(*cfg, nullptr);
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "bench/latency.h"

namespace aijobs::load {

// Hard limit on simulated users: each is a thread, and the tool must stay bounded.
inline constexpr int kMaxUsers = 2000;
// Queue depth sampling stops counting QUEUED jobs at this many (reported as ">= cap").
inline constexpr int kQueueDepthCap = 10000;

struct LoadConfig {
  std::string scenario = "custom";
  // Target as given by the user: gRPC ("host:port", "grpc://host:port") or the HTTP gateway
  // ("http://host:port").
  std::string target = "127.0.0.1:50051";
  // JWT or API key sent with every call (gRPC metadata, or the HTTP Authorization header).
  std::string token;
  // PEM CA of the scheduler's TLS certificate (gRPC targets; empty: plaintext).
  std::string tls_ca;
  int users = 10;
  // Submits per second over all users; 0 = closed loop (each user submits as soon as its
  // previous job ended).
  double rate = 0;
  // Users start evenly spread over this ramp (spike: 5 s); the hold phase follows it.
  absl::Duration ramp = absl::ZeroDuration();
  // Length of the hold phase (after the ramp) during which users keep submitting.
  absl::Duration duration = absl::Seconds(30);
  // After the submitting phase, in-flight jobs are watched for at most this long.
  absl::Duration drain = absl::Seconds(10);
  // Prompts cycled over the submitted jobs.
  std::vector<std::string> prompts;
  // Optional input.sim object (JSON text), e.g. {"ttft_ms":0,"tokens":2}.
  std::string sim_json;
  bool allow_remote = false;
  // Probe intervals.
  absl::Duration health_interval = absl::Milliseconds(500);
  absl::Duration queue_interval = absl::Seconds(2);
  // Progress line on stderr once a second.
  bool progress = true;
};

// Built-in settings of a named scenario: quick, medium, spike, soak (soak needs a duration:
// its default duration is zero and ValidateConfig rejects it). INVALID_ARGUMENT otherwise.
absl::StatusOr<LoadConfig> ScenarioConfig(const std::string& name);

// Normalises a --target value to "host:port": accepts "host:port", "grpc://host:port",
// "http://host:port" (the gateway), "[::1]:port". INVALID_ARGUMENT for https:// (no TLS in
// this client), other schemes and malformed targets.
absl::StatusOr<std::string> ParseTarget(const std::string& target);
// True for an http:// target: users go through the HTTP gateway instead of gRPC.
bool IsHttpTarget(const std::string& target);
// True for localhost, 127.0.0.0/8 and ::1 (host of a "host:port" from ParseTarget).
bool IsLoopbackTarget(const std::string& host_port);

// Checks users, duration, sim JSON and the loopback rule. INVALID_ARGUMENT with a message
// meant for the user.
absl::Status ValidateConfig(const LoadConfig& config);

// Reads one prompt per non-empty line.
absl::StatusOr<std::vector<std::string>> ReadPromptFile(const std::string& path);
std::vector<std::string> DefaultPrompts();

using bench::LatencySummary;
using bench::Percentile;
using bench::Summarize;

struct QueueSample {
  double t_s = 0;  // seconds since the start of the run
  int64_t queued = 0;
  bool capped = false;  // counting stopped at kQueueDepthCap
  bool error = false;   // ListJobs failed
};

struct LoadResult {
  LoadConfig config;
  bool interrupted = false;  // stopped by Ctrl-C / SIGTERM
  double elapsed_s = 0;      // start of the run to the end of the drain
  double submit_phase_s = 0;
  int64_t sent = 0;  // successful submits
  int64_t submit_errors = 0;
  int64_t succeeded = 0;  // jobs that ended SUCCEEDED
  int64_t failed = 0;     // every other outcome (FAILED, CANCELLED, RPC errors, drain timeout)
  // Outcome code -> count for everything but SUCCEEDED: the job's error code for FAILED jobs
  // (e.g. SIM_FAILURE), CANCELLED, SUBMIT_<grpc code> / WATCH_<grpc code> for RPC errors,
  // DRAIN_TIMEOUT for jobs still running when the drain ended.
  std::map<std::string, int64_t> errors;
  std::vector<double> submit_ms;
  std::vector<double> e2e_ms;  // submit start to terminal state, SUCCEEDED and FAILED jobs
  std::vector<double> health_ms;
  int64_t health_failures = 0;
  std::vector<QueueSample> queue;
};

// Derived figures of a result.
double Throughput(const LoadResult& r);   // succeeded jobs per second of elapsed time
double SuccessRate(const LoadResult& r);  // succeeded / (succeeded + failed); 0 with no jobs

// Runs the load. Returns UNAVAILABLE (or the RPC's error) when the target does not answer a
// first ListJobs call (GET /v1/jobs over HTTP); otherwise a result, also when jobs failed.
// `interrupt` (optional) is polled: once true, users stop submitting and the run drains and ends.
absl::StatusOr<LoadResult> RunLoad(const LoadConfig& config, const std::atomic<bool>* interrupt);

// Report renderings.
std::string ReportJson(const LoadResult& r);
std::string ReportMarkdown(const LoadResult& r);
absl::Status WriteFile(const std::string& path, const std::string& contents);

}  // namespace aijobs::load
