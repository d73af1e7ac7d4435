#include "client-sdk/fake_job_service.h"

#include <grpcpp/server_builder.h>

#include <cstdlib>
#include <string>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/time_util.h"

namespace aijobs::testing {
namespace {

bool Terminal(v1::JobState s) {
  return s == v1::SUCCEEDED || s == v1::FAILED || s == v1::CANCELLED;
}

grpc::Status NotFound(const std::string& id) {
  return grpc::Status(grpc::StatusCode::NOT_FOUND, absl::StrCat("job ", id, " not found"));
}

}  // namespace

v1::JobEvent StateEvent(const std::string& job_id, int64_t seq, v1::JobState state, int attempt,
                        bool discard_output) {
  v1::JobEvent event;
  event.set_job_id(job_id);
  event.set_seq(seq);
  event.mutable_state_change()->set_state(state);
  event.mutable_state_change()->set_attempt(attempt);
  event.mutable_state_change()->set_discard_output(discard_output);
  return event;
}

v1::JobEvent DeltaEvent(const std::string& job_id, int64_t seq, const std::string& text,
                        int attempt) {
  v1::JobEvent event;
  event.set_job_id(job_id);
  event.set_seq(seq);
  event.mutable_output_delta()->set_attempt(attempt);
  event.mutable_output_delta()->set_text(text);
  return event;
}

v1::JobEvent FinalEvent(int64_t seq, const v1::Job& job) {
  v1::JobEvent event;
  event.set_job_id(job.id());
  event.set_seq(seq);
  *event.mutable_final_job() = job;
  event.mutable_final_job()->set_last_seq(seq);
  return event;
}

void FakeJobService::PutJob(const v1::Job& job) {
  absl::MutexLock lock(&mu_);
  if (jobs_.count(job.id()) == 0) order_.push_back(job.id());
  jobs_[job.id()] = job;
}

void FakeJobService::SetEvents(const std::string& job_id, std::vector<v1::JobEvent> events) {
  absl::MutexLock lock(&mu_);
  events_[job_id] = std::move(events);
}

void FakeJobService::AddWatchBreak(const std::string& job_id, WatchBreak b) {
  absl::MutexLock lock(&mu_);
  breaks_[job_id].push_back(std::move(b));
}

void FakeJobService::SetSubmitScript(SubmitScript script) {
  absl::MutexLock lock(&mu_);
  submit_script_ = std::move(script);
}

void FakeJobService::FailNextSubmits(std::vector<grpc::Status> statuses) {
  absl::MutexLock lock(&mu_);
  for (grpc::Status& s : statuses) submit_failures_.push_back(std::move(s));
}

std::vector<v1::SubmitJobRequest> FakeJobService::submit_requests() const {
  absl::MutexLock lock(&mu_);
  return submit_requests_;
}

std::vector<int64_t> FakeJobService::watch_after_seqs(const std::string& job_id) const {
  absl::MutexLock lock(&mu_);
  auto it = watch_after_seqs_.find(job_id);
  return it == watch_after_seqs_.end() ? std::vector<int64_t>{} : it->second;
}

std::vector<v1::ListJobsRequest> FakeJobService::list_requests() const {
  absl::MutexLock lock(&mu_);
  return list_requests_;
}

std::vector<v1::CancelJobRequest> FakeJobService::cancel_requests() const {
  absl::MutexLock lock(&mu_);
  return cancel_requests_;
}

int FakeJobService::rpc_count() const {
  absl::MutexLock lock(&mu_);
  return rpc_count_;
}

grpc::Status FakeJobService::SubmitJob(grpc::ServerContext*, const v1::SubmitJobRequest* request,
                                       v1::Job* response) {
  absl::MutexLock lock(&mu_);
  ++rpc_count_;
  submit_requests_.push_back(*request);
  if (!submit_failures_.empty()) {
    grpc::Status status = submit_failures_.front();
    submit_failures_.pop_front();
    return status;
  }
  if (request->type().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "type must not be empty");
  }
  if (!request->idempotency_key().empty()) {
    for (const auto& [id, job] : jobs_) {
      if (job.idempotency_key() == request->idempotency_key()) {
        *response = job;
        return grpc::Status::OK;
      }
    }
  }
  v1::Job job;
  job.set_id(absl::StrCat("00000000-0000-4000-8000-", 100000000000 + next_id_++));
  job.set_type(request->type());
  *job.mutable_input() = request->input();
  job.set_state(v1::QUEUED);
  job.set_max_attempts(request->max_attempts() == 0 ? 3 : request->max_attempts());
  job.set_priority(request->priority());
  job.set_idempotency_key(request->idempotency_key());
  *job.mutable_labels() = request->labels();
  if (request->has_timeout()) *job.mutable_timeout() = request->timeout();
  *job.mutable_created_at() = ToProtoTimestamp(absl::Now());
  *job.mutable_updated_at() = job.created_at();
  job.set_tenant_id("default");
  if (submit_script_) {
    std::vector<v1::JobEvent> events = submit_script_(job);
    for (const v1::JobEvent& e : events) {
      if (e.has_final_job()) jobs_[job.id()] = e.final_job();
    }
    events_[job.id()] = std::move(events);
  }
  if (jobs_.count(job.id()) == 0) jobs_[job.id()] = job;
  order_.push_back(job.id());
  *response = job;
  return grpc::Status::OK;
}

grpc::Status FakeJobService::GetJob(grpc::ServerContext*, const v1::GetJobRequest* request,
                                    v1::Job* response) {
  absl::MutexLock lock(&mu_);
  ++rpc_count_;
  auto it = jobs_.find(request->job_id());
  if (it == jobs_.end()) return NotFound(request->job_id());
  *response = it->second;
  return grpc::Status::OK;
}

grpc::Status FakeJobService::WatchJob(grpc::ServerContext* context,
                                      const v1::WatchJobRequest* request,
                                      grpc::ServerWriter<v1::JobEvent>* writer) {
  std::vector<v1::JobEvent> to_send;
  WatchBreak brk{-1, grpc::Status::OK};
  {
    absl::MutexLock lock(&mu_);
    ++rpc_count_;
    if (jobs_.count(request->job_id()) == 0) return NotFound(request->job_id());
    watch_after_seqs_[request->job_id()].push_back(request->after_seq());
    for (const v1::JobEvent& e : events_[request->job_id()]) {
      if (e.seq() > request->after_seq()) to_send.push_back(e);
    }
    auto& breaks = breaks_[request->job_id()];
    if (!breaks.empty()) {
      brk = breaks.front();
      breaks.pop_front();
    }
  }
  int sent = 0;
  for (const v1::JobEvent& e : to_send) {
    if (brk.events >= 0 && sent >= brk.events) return brk.status;
    if (context->IsCancelled() || !writer->Write(e)) return grpc::Status::CANCELLED;
    ++sent;
  }
  return brk.events >= 0 ? brk.status : grpc::Status::OK;
}

grpc::Status FakeJobService::CancelJob(grpc::ServerContext*, const v1::CancelJobRequest* request,
                                       v1::Job* response) {
  absl::MutexLock lock(&mu_);
  ++rpc_count_;
  cancel_requests_.push_back(*request);
  auto it = jobs_.find(request->job_id());
  if (it == jobs_.end()) return NotFound(request->job_id());
  v1::Job& job = it->second;
  if (Terminal(job.state())) {
    return grpc::Status(
        grpc::StatusCode::FAILED_PRECONDITION,
        absl::StrCat("job ", job.id(), " already ended as ", v1::JobState_Name(job.state())));
  }
  job.set_state(v1::CANCELLED);
  job.mutable_error()->set_code("CANCELLED");
  job.mutable_error()->set_message(request->reason());
  *job.mutable_finished_at() = ToProtoTimestamp(absl::Now());
  *response = job;
  return grpc::Status::OK;
}

grpc::Status FakeJobService::ListJobs(grpc::ServerContext*, const v1::ListJobsRequest* request,
                                      v1::ListJobsResponse* response) {
  absl::MutexLock lock(&mu_);
  ++rpc_count_;
  list_requests_.push_back(*request);
  size_t start = 0;
  if (!request->page_token().empty() && !absl::SimpleAtoi(request->page_token(), &start)) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "bad page_token");
  }
  const int page_size = request->page_size() == 0 ? 50 : request->page_size();
  for (size_t i = start; i < order_.size(); ++i) {
    const v1::Job& job = jobs_[order_[i]];
    if (request->state() != v1::JOB_STATE_UNSPECIFIED && job.state() != request->state()) continue;
    if (!request->type().empty() && job.type() != request->type()) continue;
    if (response->jobs_size() == page_size) {
      response->set_next_page_token(std::to_string(i));
      break;
    }
    *response->add_jobs() = job;
  }
  return grpc::Status::OK;
}

grpc::Status FakeJobService::RetryJob(grpc::ServerContext*, const v1::RetryJobRequest* request,
                                      v1::Job* response) {
  absl::MutexLock lock(&mu_);
  ++rpc_count_;
  auto it = jobs_.find(request->job_id());
  if (it == jobs_.end()) return NotFound(request->job_id());
  v1::Job& job = it->second;
  if (job.state() != v1::FAILED && job.state() != v1::CANCELLED) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        absl::StrCat("only FAILED or CANCELLED jobs can be retried; job is ",
                                     v1::JobState_Name(job.state())));
  }
  job.set_state(v1::QUEUED);
  job.set_attempt(0);
  job.clear_error();
  job.clear_finished_at();
  *response = job;
  return grpc::Status::OK;
}

FakeJobServer::FakeJobServer() {
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service_);
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || port == 0) {
    // Nothing can be tested without the server; fail loudly instead of hanging later.
    std::abort();
  }
  address_ = absl::StrCat("127.0.0.1:", port);
}

FakeJobServer::~FakeJobServer() {
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
}

}  // namespace aijobs::testing
