#include "tests/e2e_cluster.h"

#include <google/protobuf/util/json_util.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "tests/fixtures/http_client.h"

namespace aijobs::testing {
namespace {

using aijobs::v1::Job;
using aijobs::v1::JobEvent;
using aijobs::v1::JobState;

void SetDeadline(grpc::ClientContext* ctx, absl::Duration timeout) {
  ctx->set_deadline(std::chrono::system_clock::now() +
                    std::chrono::milliseconds(absl::ToInt64Milliseconds(timeout)));
}

}  // namespace

aijobs::v1::SubmitJobRequest RequestFromJson(const std::string& json) {
  aijobs::v1::SubmitJobRequest req;
  auto status = google::protobuf::util::JsonStringToMessage(json, &req);
  EXPECT_TRUE(status.ok()) << "bad request JSON in test: " << status.ToString() << "\n" << json;
  return req;
}

aijobs::v1::SubmitJobRequest ChatRequest(const std::string& prompt, const std::string& sim_json) {
  // The prompt comes from test code: it contains no characters that need JSON escaping.
  return RequestFromJson(absl::StrCat(R"({"type": "chat", "input": {"messages": [{"role": )",
                                      R"("user", "content": ")", prompt, R"("}], "sim": )",
                                      sim_json, "}}"));
}

std::string AssembleText(const std::vector<JobEvent>& events) {
  std::string text;
  for (const JobEvent& e : events) {
    if (e.has_state_change() && e.state_change().discard_output()) text.clear();
    if (e.has_output_delta()) text += e.output_delta().text();
  }
  return text;
}

std::string ResultText(const Job& job) {
  auto it = job.result().fields().find("text");
  return it == job.result().fields().end() ? "" : it->second.string_value();
}

EventCollector::EventCollector(aijobs::v1::JobService::Stub* stub, const std::string& job_id,
                               int64_t after_seq, absl::Duration timeout) {
  SetDeadline(&ctx_, timeout);
  aijobs::v1::WatchJobRequest req;
  req.set_job_id(job_id);
  req.set_after_seq(after_seq);
  thread_ = std::thread([this, stub, req] {
    auto reader = stub->WatchJob(&ctx_, req);
    JobEvent event;
    while (reader->Read(&event)) {
      absl::MutexLock lock(&mu_);
      if (event.has_output_delta()) ++deltas_;
      events_.push_back(event);
    }
    grpc::Status status = reader->Finish();
    absl::MutexLock lock(&mu_);
    status_ = status;
    done_ = true;
  });
}

EventCollector::~EventCollector() {
  ctx_.TryCancel();
  if (thread_.joinable()) thread_.join();
}

bool EventCollector::WaitForDeltas(int n, absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto cond = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return deltas_ >= n || done_; };
  mu_.AwaitWithTimeout(absl::Condition(&cond), timeout);
  return deltas_ >= n;
}

WatchResult EventCollector::Finish(absl::Duration timeout) {
  {
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&done_), timeout);
  }
  ctx_.TryCancel();  // no-op when the stream already ended
  if (thread_.joinable()) thread_.join();
  absl::MutexLock lock(&mu_);
  return WatchResult{events_, status_};
}

std::vector<JobEvent> EventCollector::Events() {
  absl::MutexLock lock(&mu_);
  return events_;
}

void E2eTest::TearDown() {
  if (HasFailure()) {
    for (auto* list : {&retired_, &workers_}) {
      for (auto& p : *list) fprintf(stderr, "%s\n", p->LogTail(6000).c_str());
    }
    if (scheduler_ != nullptr) fprintf(stderr, "%s\n", scheduler_->LogTail(6000).c_str());
    if (gateway_ != nullptr) fprintf(stderr, "%s\n", gateway_->LogTail(6000).c_str());
  }
  if (gateway_ != nullptr) gateway_->Kill();
  gateway_.reset();
  // Workers first, so the scheduler does not log their jobs as lost.
  for (auto& w : workers_) w->Kill();
  workers_.clear();
  if (scheduler_ != nullptr) scheduler_->Kill();
  scheduler_.reset();
  retired_.clear();
  stub_.reset();
}

std::string E2eTest::StartGateway(const std::vector<std::string>& extra_flags) {
  if (gateway_ != nullptr) gateway_->Kill();
  for (int attempt = 0; attempt < 3; ++attempt) {
    gateway_port_ = FreePort();
    ProcessOptions opts;
    opts.path = BinPath("aijobs-gateway");
    // Suites about requests, not per-address limits (every test client is 127.0.0.1); a
    // test of those limits passes its own values (the last value of a flag wins).
    opts.args = {"--listen",
                 absl::StrCat("127.0.0.1:", gateway_port_),
                 "--scheduler",
                 scheduler_address_,
                 "--anonymous_requests_per_minute=0",
                 "--max_streams_per_ip=0",
                 "--max_connections_per_ip=0"};
    opts.args.insert(opts.args.end(), extra_flags.begin(), extra_flags.end());
    auto proc = Process::Start(opts);
    if (!proc.ok()) {
      ADD_FAILURE() << proc.status();
      return "";
    }
    gateway_ = std::move(*proc);
    const std::string base = absl::StrCat("http://127.0.0.1:", gateway_port_);
    bool up = WaitFor(
        [&] {
          return !gateway_->IsRunning() ||
                 HttpCall("GET", base + "/healthz", "", {}, absl::Seconds(1)).status == 200;
        },
        absl::Seconds(15));
    if (up && gateway_->IsRunning()) return base;
    if (attempt == 2) {
      ADD_FAILURE() << "aijobs-gateway did not come up:\n" << gateway_->LogTail();
    }
    gateway_->Kill();
  }
  return "";
}

void E2eTest::StartScheduler(const std::vector<std::string>& extra_flags) {
  if (scheduler_ != nullptr) retired_.push_back(std::move(scheduler_));
  std::string last_error;
  // A port probed free can be taken before the scheduler binds it: retry with another.
  for (int attempt = 0; attempt < 3; ++attempt) {
    const std::string address = absl::StrCat("127.0.0.1:", FreePort());
    ProcessOptions opts;
    opts.path = BinPath("aijobs-scheduler");
    opts.args = {"--listen", address, "--database_url", conninfo(), "--retry_base_ms", "50",
                 "--retry_max_ms", "200", "--lease_ms", "3000", "--poll_interval_ms", "200",
                 // Suites about jobs, not identity; e2e_auth_test passes --auth=on (the
                 // last value of a flag wins).
                 "--auth=off"};
    opts.args.insert(opts.args.end(), extra_flags.begin(), extra_flags.end());
    auto proc = Process::Start(opts);
    ASSERT_TRUE(proc.ok()) << proc.status();
    absl::Status ready = WaitForJobService(address, absl::Seconds(30), proc->get());
    if (ready.ok()) {
      scheduler_ = std::move(*proc);
      scheduler_address_ = address;
      stub_ = aijobs::v1::JobService::NewStub(CreateTestChannel(address));
      return;
    }
    last_error = std::string(ready.message());
    (*proc)->Kill();
  }
  FAIL() << "aijobs-scheduler did not start: " << last_error;
}

Process* E2eTest::StartWorker(const std::string& worker_id,
                              const std::vector<std::string>& extra_flags) {
  ProcessOptions opts;
  opts.path = BinPath("aijobs-worker");
  opts.log_name = "aijobs-worker-" + worker_id;
  opts.args = {"--scheduler",        scheduler_address_,
               "--worker_id",        worker_id,
               "--sim_ttft_ms",      "0",
               "--sim_tokens_per_s", "0",
               "--sim_tokens",       "12",
               "--reconnect_max_ms", "200"};
  opts.args.insert(opts.args.end(), extra_flags.begin(), extra_flags.end());
  auto proc = Process::Start(opts);
  EXPECT_TRUE(proc.ok()) << proc.status();
  if (!proc.ok()) return nullptr;
  workers_.push_back(std::move(*proc));
  return workers_.back().get();
}

grpc::Status E2eTest::Submit(const aijobs::v1::SubmitJobRequest& req, Job* job) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx, kRpcTimeout);
  return stub_->SubmitJob(&ctx, req, job);
}

grpc::Status E2eTest::Get(const std::string& job_id, Job* job) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx, kRpcTimeout);
  aijobs::v1::GetJobRequest req;
  req.set_job_id(job_id);
  return stub_->GetJob(&ctx, req, job);
}

grpc::Status E2eTest::Cancel(const std::string& job_id, Job* job) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx, kRpcTimeout);
  aijobs::v1::CancelJobRequest req;
  req.set_job_id(job_id);
  req.set_reason("e2e test");
  return stub_->CancelJob(&ctx, req, job);
}

grpc::Status E2eTest::Retry(const std::string& job_id, Job* job) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx, kRpcTimeout);
  aijobs::v1::RetryJobRequest req;
  req.set_job_id(job_id);
  return stub_->RetryJob(&ctx, req, job);
}

absl::StatusOr<std::vector<Job>> E2eTest::ListAll(JobState state) {
  std::vector<Job> jobs;
  std::string token;
  for (int page = 0; page < 1000; ++page) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, kRpcTimeout);
    aijobs::v1::ListJobsRequest req;
    req.set_state(state);
    req.set_page_size(1000);
    req.set_page_token(token);
    aijobs::v1::ListJobsResponse resp;
    grpc::Status s = stub_->ListJobs(&ctx, req, &resp);
    if (!s.ok()) {
      return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
    }
    for (auto& j : *resp.mutable_jobs()) jobs.push_back(std::move(j));
    token = resp.next_page_token();
    if (token.empty()) return jobs;
  }
  return absl::InternalError("ListJobs: more than 1000 pages (page token not advancing?)");
}

WatchResult E2eTest::WatchToEnd(const std::string& job_id, int64_t after_seq,
                                absl::Duration timeout) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx, timeout);
  aijobs::v1::WatchJobRequest req;
  req.set_job_id(job_id);
  req.set_after_seq(after_seq);
  WatchResult result;
  auto reader = stub_->WatchJob(&ctx, req);
  JobEvent event;
  while (reader->Read(&event)) result.events.push_back(event);
  result.status = reader->Finish();
  return result;
}

absl::StatusOr<Job> E2eTest::WaitForState(const std::string& job_id, JobState state,
                                          absl::Duration timeout) {
  Job job;
  grpc::Status last;
  bool reached = WaitFor(
      [&] {
        last = Get(job_id, &job);
        return last.ok() && job.state() == state;
      },
      timeout, absl::Milliseconds(50));
  if (reached) return job;
  return absl::DeadlineExceededError(absl::StrCat(
      "job ", job_id, " did not reach ", aijobs::v1::JobState_Name(state), " within ",
      absl::FormatDuration(timeout), "; last GetJob: ", last.ok() ? "OK" : last.error_message(),
      " state ", aijobs::v1::JobState_Name(job.state()), " attempt ", job.attempt(), " error ",
      job.error().code(), " ", job.error().message()));
}

}  // namespace aijobs::testing
