// End-to-end test harness: a gtest fixture that runs the real aijobs-scheduler and
// aijobs-worker binaries against the shared private PostgreSQL, and helpers that talk to
// the scheduler through the generated JobService stub.
//
//   class MyE2eTest : public aijobs::testing::E2eTest {};
//   TEST_F(MyE2eTest, Runs) { ASSERT_NO_FATAL_FAILURE(StartScheduler()); StartWorker("w1");
//     auto job = Submit(ChatRequest("hi", R"({"tokens": 5})")); ... }
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "aijobs/v1/job_service.grpc.pb.h"
#include "tests/fixtures/pg_server.h"
#include "tests/fixtures/process.h"

namespace aijobs::testing {

// Deadline for unary RPCs in these tests.
inline constexpr absl::Duration kRpcTimeout = absl::Seconds(10);

// Parses `json` (protobuf JSON mapping) into a SubmitJobRequest; fails the test on error.
aijobs::v1::SubmitJobRequest RequestFromJson(const std::string& json);

// A chat request with one user message and `sim_json` (a JSON object, e.g.
// R"({"tokens": 30, "tokens_per_s": 20})") as input.sim.
aijobs::v1::SubmitJobRequest ChatRequest(const std::string& prompt,
                                         const std::string& sim_json = "{}");

// The events a WatchJob call returned and how the stream ended.
struct WatchResult {
  std::vector<aijobs::v1::JobEvent> events;
  grpc::Status status;
};

// The output text as a watcher must assemble it: output deltas concatenated, restarting
// from empty at a state change with discard_output.
std::string AssembleText(const std::vector<aijobs::v1::JobEvent>& events);

// result.text of a chat job ("" when missing).
std::string ResultText(const aijobs::v1::Job& job);

// Runs WatchJob on a background thread and collects events as they arrive.
class EventCollector {
 public:
  EventCollector(aijobs::v1::JobService::Stub* stub, const std::string& job_id,
                 int64_t after_seq = 0, absl::Duration timeout = absl::Seconds(60));
  // Cancels the call if still running and joins.
  ~EventCollector();

  // Waits until at least `n` output deltas arrived; false on timeout or stream end first.
  bool WaitForDeltas(int n, absl::Duration timeout);
  // Waits for the stream to end and returns everything it delivered.
  WatchResult Finish(absl::Duration timeout);
  // Snapshot of events so far.
  std::vector<aijobs::v1::JobEvent> Events();

 private:
  grpc::ClientContext ctx_;
  absl::Mutex mu_;
  std::vector<aijobs::v1::JobEvent> events_ ABSL_GUARDED_BY(mu_);
  int deltas_ ABSL_GUARDED_BY(mu_) = 0;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

// Each test gets an empty database (PgTest) and starts its own processes; TearDown kills
// them and prints their logs when the test failed.
class E2eTest : public PgTest {
 protected:
  void TearDown() override;

  // Starts aijobs-scheduler on a free port with fast test settings plus `extra_flags`, and
  // waits until it serves JobService. Fatal failure (use ASSERT_NO_FATAL_FAILURE) when it
  // does not come up. Replaces the stub: afterwards stub() talks to the new scheduler.
  void StartScheduler(const std::vector<std::string>& extra_flags = {});
  // Starts aijobs-worker connected to the current scheduler, with fast sim defaults (no
  // TTFT, no per-token delay, 12 tokens) overridable by `extra_flags`. Null + test failure
  // when the binary cannot be started.
  Process* StartWorker(const std::string& worker_id,
                       const std::vector<std::string>& extra_flags = {});

  // Starts aijobs-gateway in front of the current scheduler on a free port, plus
  // `extra_flags`, and waits until GET /healthz answers. Returns the base URL
  // ("http://127.0.0.1:PORT"); "" and a test failure when it does not come up.
  std::string StartGateway(const std::vector<std::string>& extra_flags = {});
  int gateway_port() const { return gateway_port_; }
  Process* gateway() { return gateway_.get(); }

  aijobs::v1::JobService::Stub* stub() { return stub_.get(); }
  const std::string& scheduler_address() const { return scheduler_address_; }
  Process* scheduler() { return scheduler_.get(); }

  // RPC wrappers with deadlines.
  grpc::Status Submit(const aijobs::v1::SubmitJobRequest& req, aijobs::v1::Job* job);
  grpc::Status Get(const std::string& job_id, aijobs::v1::Job* job);
  grpc::Status Cancel(const std::string& job_id, aijobs::v1::Job* job);
  grpc::Status Retry(const std::string& job_id, aijobs::v1::Job* job);
  // All jobs (following page tokens) matching `state` (UNSPECIFIED = any).
  absl::StatusOr<std::vector<aijobs::v1::Job>> ListAll(
      aijobs::v1::JobState state = aijobs::v1::JOB_STATE_UNSPECIFIED);
  // Runs WatchJob to the end of the stream (bounded by `timeout`).
  WatchResult WatchToEnd(const std::string& job_id, int64_t after_seq = 0,
                         absl::Duration timeout = absl::Seconds(60));
  // Polls GetJob until the job is in `state`; returns the job, or an error describing the
  // last state seen.
  absl::StatusOr<aijobs::v1::Job> WaitForState(const std::string& job_id,
                                               aijobs::v1::JobState state,
                                               absl::Duration timeout = absl::Seconds(30));

  std::unique_ptr<Process> scheduler_;
  std::vector<std::unique_ptr<Process>> workers_;
  std::unique_ptr<Process> gateway_;

 private:
  int gateway_port_ = 0;
  // Schedulers replaced by a later StartScheduler, kept for their logs.
  std::vector<std::unique_ptr<Process>> retired_;
  std::string scheduler_address_;
  std::unique_ptr<aijobs::v1::JobService::Stub> stub_;
};

}  // namespace aijobs::testing
