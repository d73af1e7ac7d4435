// An in-memory JobService on a real grpc::Server bound to 127.0.0.1:0, for testing the client
// SDK and aijobsctl without a scheduler. Watch streams replay scripted events and can be made
// to break mid-way.
//
//   FakeJobServer server;
//   server.service().SetEvents(job.id(), {StateEvent(1, v1::RUNNING, 1), FinalEvent(2, job)});
//   aijobs::Client client(server.address());
#pragma once

#include <grpcpp/server.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "aijobs/v1/job_service.grpc.pb.h"

namespace aijobs::testing {

// Event builders for scripts.
v1::JobEvent StateEvent(const std::string& job_id, int64_t seq, v1::JobState state, int attempt,
                        bool discard_output = false);
v1::JobEvent DeltaEvent(const std::string& job_id, int64_t seq, const std::string& text,
                        int attempt = 1);
v1::JobEvent FinalEvent(int64_t seq, const v1::Job& job);

class FakeJobService final : public v1::JobService::Service {
 public:
  // How one WatchJob call misbehaves: send at most `events` events, then end with `status`.
  struct WatchBreak {
    int events;
    grpc::Status status;
  };
  // Builds the event script of a newly submitted job (for CLI tests of --watch / --wait).
  using SubmitScript = std::function<std::vector<v1::JobEvent>(const v1::Job& job)>;

  // Stores (or replaces) a job as is.
  void PutJob(const v1::Job& job) ABSL_LOCKS_EXCLUDED(mu_);
  // Sets the full event script of a job (seq ascending).
  void SetEvents(const std::string& job_id, std::vector<v1::JobEvent> events)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Queues a break for the next WatchJob call of job_id that has none (FIFO).
  void AddWatchBreak(const std::string& job_id, WatchBreak b) ABSL_LOCKS_EXCLUDED(mu_);
  void SetSubmitScript(SubmitScript script) ABSL_LOCKS_EXCLUDED(mu_);
  // The next SubmitJob calls (after being recorded) fail with these statuses, in order.
  void FailNextSubmits(std::vector<grpc::Status> statuses) ABSL_LOCKS_EXCLUDED(mu_);

  // What the service saw.
  std::vector<v1::SubmitJobRequest> submit_requests() const ABSL_LOCKS_EXCLUDED(mu_);
  std::vector<int64_t> watch_after_seqs(const std::string& job_id) const ABSL_LOCKS_EXCLUDED(mu_);
  std::vector<v1::ListJobsRequest> list_requests() const ABSL_LOCKS_EXCLUDED(mu_);
  std::vector<v1::CancelJobRequest> cancel_requests() const ABSL_LOCKS_EXCLUDED(mu_);
  int rpc_count() const ABSL_LOCKS_EXCLUDED(mu_);

  grpc::Status SubmitJob(grpc::ServerContext* context, const v1::SubmitJobRequest* request,
                         v1::Job* response) override;
  grpc::Status GetJob(grpc::ServerContext* context, const v1::GetJobRequest* request,
                      v1::Job* response) override;
  grpc::Status WatchJob(grpc::ServerContext* context, const v1::WatchJobRequest* request,
                        grpc::ServerWriter<v1::JobEvent>* writer) override;
  grpc::Status CancelJob(grpc::ServerContext* context, const v1::CancelJobRequest* request,
                         v1::Job* response) override;
  grpc::Status ListJobs(grpc::ServerContext* context, const v1::ListJobsRequest* request,
                        v1::ListJobsResponse* response) override;
  grpc::Status RetryJob(grpc::ServerContext* context, const v1::RetryJobRequest* request,
                        v1::Job* response) override;

 private:
  mutable absl::Mutex mu_;
  int next_id_ ABSL_GUARDED_BY(mu_) = 1;
  int rpc_count_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::string> order_ ABSL_GUARDED_BY(mu_);  // job ids in creation order
  std::map<std::string, v1::Job> jobs_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::vector<v1::JobEvent>> events_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::deque<WatchBreak>> breaks_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::vector<int64_t>> watch_after_seqs_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::SubmitJobRequest> submit_requests_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::ListJobsRequest> list_requests_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::CancelJobRequest> cancel_requests_ ABSL_GUARDED_BY(mu_);
  SubmitScript submit_script_ ABSL_GUARDED_BY(mu_);
  std::deque<grpc::Status> submit_failures_ ABSL_GUARDED_BY(mu_);
};

// Runs a FakeJobService on 127.0.0.1 with a port chosen by the OS.
class FakeJobServer {
 public:
  FakeJobServer();
  ~FakeJobServer();

  // "127.0.0.1:<port>".
  const std::string& address() const { return address_; }
  FakeJobService& service() { return service_; }

 private:
  FakeJobService service_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
};

}  // namespace aijobs::testing
