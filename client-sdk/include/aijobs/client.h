// aijobs C++ client: submit, inspect, cancel, redrive and watch jobs over JobService (gRPC).
//
//   aijobs::Client client("127.0.0.1:50051");
//   absl::StatusOr<aijobs::v1::Job> job = client.Submit(aijobs::ChatRequest("hello"));
//   if (job.ok()) client.Watch(job->id(), 0, [](const aijobs::v1::JobEvent& e) { return true; });
//
// Every call carries a deadline. A Client is thread-safe: it owns one channel, and gRPC stubs
// may be used from many threads at once, so share one Client per process and target.
#pragma once

#include <google/protobuf/struct.pb.h>
#include <grpcpp/channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "aijobs/v1/job.pb.h"
#include "aijobs/v1/job_service.grpc.pb.h"

namespace aijobs {

struct ClientOptions {
  // Deadline of each unary call (Submit, Get, Cancel, List, Retry), retries included.
  absl::Duration default_deadline = absl::Seconds(10);

  // Unary calls wait (within their deadline) for the channel to connect rather than failing
  // at once while a scheduler restarts. Nothing is sent before the channel is connected, so
  // this is safe for every call.
  bool wait_for_ready = true;

  // A Submit that carries an idempotency_key is retried on UNAVAILABLE, and on CANCELLED
  // (a replica cancels calls in flight when it shuts down), with the watch backoff, at most
  // this many tries in all and within default_deadline: the key makes a retry return the
  // job an earlier try created. A Submit without a key is tried once, because after such
  // an error nobody can tell whether the job was created.
  int submit_max_tries = 6;

  // Backoff between Watch reconnects: starts at initial, doubles up to max, with +-20% jitter.
  // It resets once a reconnected stream delivers an event. The channel's own reconnect
  // backoff is capped at watch_max_backoff too, so a restarted server is found quickly.
  absl::Duration watch_initial_backoff = absl::Milliseconds(100);
  absl::Duration watch_max_backoff = absl::Seconds(5);

  // HTTP/2 keepalive pings detect a dead connection under an idle Watch. gRPC servers reject
  // pings more frequent than every 5 minutes unless configured otherwise, hence the default.
  // Zero disables keepalive.
  absl::Duration keepalive_time = absl::Minutes(5);
  absl::Duration keepalive_timeout = absl::Seconds(20);

  // Extra channel arguments, applied after the ones derived from the fields above.
  grpc::ChannelArguments channel_args;

  // Defaults to insecure (plaintext) credentials.
  std::shared_ptr<grpc::ChannelCredentials> credentials;

  // Metadata sent with every call.
  std::vector<std::pair<std::string, std::string>> metadata;

  // A JWT or an API key ("aij_..."), sent as "authorization: Bearer <token>" with every call;
  // empty: none (an anonymous caller, which may only use public job types).
  std::string bearer_token;
};

struct WatchOptions {
  // Overall limit for the whole Watch, reconnects included. Infinite by default: a Watch
  // of a job that never ends runs until the callback returns false.
  absl::Duration deadline = absl::InfiniteDuration();
  // Maximum number of consecutive failed reconnects (without any event in between) before
  // Watch gives up with the last error; negative means unlimited (bounded by deadline).
  int max_consecutive_failures = -1;
};

// Called once per event, in seq order, never twice for one seq. Return false to stop.
using WatchCallback = std::function<bool(const v1::JobEvent& event)>;

class Client {
 public:
  // Connects lazily to target: "host:port", any gRPC target URI, or a comma-separated list
  // of scheduler replicas given as literal IP addresses ("10.0.0.1:50051,10.0.0.2:50051").
  // Calls are balanced over every address the target resolves to (round_robin) and skip a
  // replica that is down; a Watch resumes on another replica from its last seq.
  explicit Client(const std::string& target, ClientOptions options = {});
  // Uses an existing channel (tests, custom credentials or load-balancing setups).
  explicit Client(std::shared_ptr<grpc::Channel> channel, ClientOptions options = {});

  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Durably enqueues a job and returns it (QUEUED), or the existing job for a known
  // idempotency_key. INVALID_ARGUMENT when the input is rejected. With a key, transient
  // failures are retried (see ClientOptions::submit_max_tries).
  absl::StatusOr<v1::Job> Submit(const v1::SubmitJobRequest& request) const;

  // Returns the job; NOT_FOUND for an unknown id.
  absl::StatusOr<v1::Job> Get(const std::string& job_id) const;

  // Cancels the job (at once when queued, on its worker when running) and returns it.
  absl::StatusOr<v1::Job> Cancel(const std::string& job_id, const std::string& reason = "") const;

  // Returns one page of jobs; pass next_page_token back as page_token for the next page.
  absl::StatusOr<v1::ListJobsResponse> List(const v1::ListJobsRequest& request) const;

  // Redrives a FAILED or CANCELLED job with a fresh attempt budget.
  absl::StatusOr<v1::Job> Retry(const std::string& job_id) const;

  // Streams the job's events with seq > after_seq to callback, on the calling thread.
  //
  // A dropped stream (UNAVAILABLE, or an end without the terminal event) is resumed with
  // after_seq = the last delivered seq, after a backoff: no event is delivered twice and
  // none is skipped. Returns:
  //  - the final job, when the final_job event arrived (or the job was found finished and
  //    all its events delivered when a stream ended without one);
  //  - when callback returned false: the last known state of the job, built from the
  //    events seen (id, state, attempt, error, last_seq); call Get for the full record;
  //  - a non-retryable error (e.g. NOT_FOUND), or DEADLINE_EXCEEDED once options.deadline
  //    passes, or the last error after options.max_consecutive_failures.
  absl::StatusOr<v1::Job> Watch(const std::string& job_id, int64_t after_seq,
                                const WatchCallback& callback,
                                const WatchOptions& options = {}) const;

  const ClientOptions& options() const { return options_; }

  // The channel, for other services on the same scheduler (e.g. AdminService); give their
  // calls the same deadline, metadata and credential with PrepareContext (which sets the
  // deadline, wait_for_ready, the configured metadata and the bearer token).
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }
  void PrepareContext(grpc::ClientContext* context, absl::Time deadline) const;

 private:
  ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::JobService::Stub> stub_;
};

// Returns the chat input for one user message: {"messages":[{"role":"user","content":prompt}]}.
google::protobuf::Struct ChatInput(const std::string& prompt);

// Returns a SubmitJobRequest of type "chat" with ChatInput(prompt).
v1::SubmitJobRequest ChatRequest(const std::string& prompt);

// Returns true for SUCCEEDED, FAILED and CANCELLED.
bool IsTerminal(v1::JobState state);

}  // namespace aijobs
