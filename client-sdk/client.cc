#include "aijobs/client.h"

#include <grpc/grpc.h>
#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <limits>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "common/scheduler_target.h"
#include "common/status.h"

namespace aijobs {
namespace {

int ToIntMillis(absl::Duration d) {
  const int64_t ms = absl::ToInt64Milliseconds(d);
  return static_cast<int>(std::clamp<int64_t>(ms, 0, std::numeric_limits<int>::max()));
}

// Builds the channel arguments: ours first, then the caller's, so the caller's win (gRPC
// keeps the last value of a repeated key).
grpc::ChannelArguments BuildChannelArgs(const ClientOptions& options) {
  grpc::ChannelArguments args;
  args.SetUserAgentPrefix("aijobs-client/1");
  SetFailoverChannelArgs(&args);
  if (options.keepalive_time > absl::ZeroDuration()) {
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, ToIntMillis(options.keepalive_time));
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, ToIntMillis(options.keepalive_timeout));
  }
  // gRPC's default reconnect backoff grows to 120 s; a Watch waiting to resume would keep
  // failing fast against a channel that does not even try to reconnect that long.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
              std::max(1, ToIntMillis(options.watch_initial_backoff)));
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
              std::max(1, ToIntMillis(options.watch_max_backoff)));

  grpc_channel_args user;
  options.channel_args.SetChannelArgs(&user);
  for (size_t i = 0; i < user.num_args; ++i) {
    const grpc_arg& arg = user.args[i];
    switch (arg.type) {
      case GRPC_ARG_INTEGER:
        args.SetInt(arg.key, arg.value.integer);
        break;
      case GRPC_ARG_STRING:
        args.SetString(arg.key, arg.value.string);
        break;
      case GRPC_ARG_POINTER:
        args.SetPointerWithVtable(arg.key, arg.value.pointer.p, arg.value.pointer.vtable);
        break;
    }
  }
  return args;
}

// Folds an event into the caller-visible "last known" job returned when a Watch is stopped.
void ApplyEvent(const v1::JobEvent& event, v1::Job* job) {
  job->set_last_seq(event.seq());
  switch (event.event_case()) {
    case v1::JobEvent::kStateChange: {
      const v1::StateChange& change = event.state_change();
      job->set_state(change.state());
      if (change.attempt() > 0) job->set_attempt(change.attempt());
      if (change.has_error()) {
        *job->mutable_error() = change.error();
      } else {
        job->clear_error();
      }
      break;
    }
    case v1::JobEvent::kOutputDelta:
      if (event.output_delta().attempt() > 0) job->set_attempt(event.output_delta().attempt());
      break;
    case v1::JobEvent::kFinalJob:
      *job = event.final_job();
      if (job->last_seq() < event.seq()) job->set_last_seq(event.seq());
      break;
    case v1::JobEvent::EVENT_NOT_SET:
      break;
  }
}

// A comma-separated list of replicas becomes one balanced target; anything else (or a list
// that cannot be one, whose calls then fail to resolve) is passed to gRPC as given.
std::string ChannelTarget(const std::string& target) {
  absl::StatusOr<std::string> list = SchedulerChannelTargetFromList(target);
  return list.ok() ? *list : target;
}

}  // namespace

Client::Client(const std::string& target, ClientOptions options)
    : Client(grpc::CreateCustomChannel(
                 ChannelTarget(target),
                 options.credentials ? options.credentials : grpc::InsecureChannelCredentials(),
                 BuildChannelArgs(options)),
             options) {}

Client::Client(std::shared_ptr<grpc::Channel> channel, ClientOptions options)
    : options_(std::move(options)),
      channel_(std::move(channel)),
      stub_(v1::JobService::NewStub(channel_)) {}

void Client::PrepareContext(grpc::ClientContext* context, absl::Time deadline) const {
  if (deadline != absl::InfiniteFuture()) context->set_deadline(absl::ToChronoTime(deadline));
  if (options_.wait_for_ready) context->set_wait_for_ready(true);
  for (const auto& [key, value] : options_.metadata) context->AddMetadata(key, value);
  if (!options_.bearer_token.empty()) {
    context->AddMetadata("authorization", "Bearer " + options_.bearer_token);
  }
}

absl::StatusOr<v1::Job> Client::Submit(const v1::SubmitJobRequest& request) const {
  const absl::Time deadline = absl::Now() + options_.default_deadline;
  const bool retry_safe = !request.idempotency_key().empty();
  absl::Duration backoff = options_.watch_initial_backoff;
  absl::BitGen random;
  for (int tries = 1;; ++tries) {
    grpc::ClientContext context;
    PrepareContext(&context, deadline);
    v1::Job job;
    grpc::Status status = stub_->SubmitJob(&context, request, &job);
    if (status.ok()) return job;
    const bool transient = status.error_code() == grpc::StatusCode::UNAVAILABLE ||
                           status.error_code() == grpc::StatusCode::CANCELLED;
    if (!retry_safe || !transient || tries >= options_.submit_max_tries) {
      return FromGrpcStatus(status);
    }
    const absl::Duration sleep = backoff * absl::Uniform(random, 0.8, 1.2);
    if (absl::Now() + sleep >= deadline) return FromGrpcStatus(status);
    absl::SleepFor(sleep);
    backoff = std::min(backoff * 2, options_.watch_max_backoff);
  }
}

absl::StatusOr<v1::Job> Client::Get(const std::string& job_id) const {
  grpc::ClientContext context;
  PrepareContext(&context, absl::Now() + options_.default_deadline);
  v1::GetJobRequest request;
  request.set_job_id(job_id);
  v1::Job job;
  grpc::Status status = stub_->GetJob(&context, request, &job);
  if (!status.ok()) return FromGrpcStatus(status);
  return job;
}

absl::StatusOr<v1::Job> Client::Cancel(const std::string& job_id, const std::string& reason) const {
  grpc::ClientContext context;
  PrepareContext(&context, absl::Now() + options_.default_deadline);
  v1::CancelJobRequest request;
  request.set_job_id(job_id);
  request.set_reason(reason);
  v1::Job job;
  grpc::Status status = stub_->CancelJob(&context, request, &job);
  if (!status.ok()) return FromGrpcStatus(status);
  return job;
}

absl::StatusOr<v1::ListJobsResponse> Client::List(const v1::ListJobsRequest& request) const {
  grpc::ClientContext context;
  PrepareContext(&context, absl::Now() + options_.default_deadline);
  v1::ListJobsResponse response;
  grpc::Status status = stub_->ListJobs(&context, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

absl::StatusOr<v1::Job> Client::Retry(const std::string& job_id) const {
  grpc::ClientContext context;
  PrepareContext(&context, absl::Now() + options_.default_deadline);
  v1::RetryJobRequest request;
  request.set_job_id(job_id);
  v1::Job job;
  grpc::Status status = stub_->RetryJob(&context, request, &job);
  if (!status.ok()) return FromGrpcStatus(status);
  return job;
}

absl::StatusOr<v1::Job> Client::Watch(const std::string& job_id, int64_t after_seq,
                                      const WatchCallback& callback,
                                      const WatchOptions& options) const {
  const absl::Time deadline = options.deadline == absl::InfiniteDuration()
                                  ? absl::InfiniteFuture()
                                  : absl::Now() + options.deadline;
  v1::Job last_known;
  last_known.set_id(job_id);
  last_known.set_last_seq(after_seq);
  int64_t last_seq = after_seq;  // the resume point: the last seq handed to callback
  absl::Duration backoff = options_.watch_initial_backoff;
  int consecutive_failures = 0;
  absl::BitGen random;

  while (true) {
    grpc::ClientContext context;
    PrepareContext(&context, deadline);
    context.set_wait_for_ready(false);  // this loop paces reconnects and counts failures
    v1::WatchJobRequest request;
    request.set_job_id(job_id);
    request.set_after_seq(last_seq);
    std::unique_ptr<grpc::ClientReader<v1::JobEvent>> reader = stub_->WatchJob(&context, request);

    bool delivered_any = false;
    v1::JobEvent event;
    while (reader->Read(&event)) {
      // A server may replay from an older point than asked (e.g. coalesced storage): what was
      // delivered already is skipped so the callback never sees a seq twice.
      if (event.seq() <= last_seq) continue;
      last_seq = event.seq();
      delivered_any = true;
      ApplyEvent(event, &last_known);
      const bool keep_going = callback(event);
      if (event.has_final_job() || !keep_going) {
        // The server ends the stream after the final event anyway; cancelling makes Finish
        // return promptly even if it did not.
        context.TryCancel();
        reader->Finish().IgnoreError();
        return last_known;
      }
    }
    grpc::Status status = reader->Finish();

    absl::Status error;
    if (status.ok()) {
      // The stream ended without the terminal event: a replica shutting down, or a job that
      // had already ended at or before after_seq. Only the job record can tell which.
      absl::StatusOr<v1::Job> job = Get(job_id);
      if (job.ok() && IsTerminal(job->state()) && job->last_seq() <= last_seq) return *job;
      if (!job.ok() && job.status().code() != absl::StatusCode::kUnavailable &&
          job.status().code() != absl::StatusCode::kDeadlineExceeded) {
        return job.status();
      }
      error = job.ok() ? absl::UnavailableError("watch stream ended before the job finished")
                       : job.status();
    } else if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
      error = FromGrpcStatus(status);
    } else {
      return FromGrpcStatus(status);
    }

    if (delivered_any) {
      consecutive_failures = 0;
      backoff = options_.watch_initial_backoff;
    }
    ++consecutive_failures;
    if (options.max_consecutive_failures >= 0 &&
        consecutive_failures > options.max_consecutive_failures) {
      return error;
    }
    const absl::Duration sleep = backoff * absl::Uniform(random, 0.8, 1.2);
    if (absl::Now() + sleep >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("watch deadline passed while reconnecting; last error: ", error.ToString()));
    }
    absl::SleepFor(sleep);
    backoff = std::min(backoff * 2, options_.watch_max_backoff);
  }
}

google::protobuf::Struct ChatInput(const std::string& prompt) {
  google::protobuf::Struct message;
  (*message.mutable_fields())["role"].set_string_value("user");
  (*message.mutable_fields())["content"].set_string_value(prompt);
  google::protobuf::Struct input;
  *(*input.mutable_fields())["messages"]
       .mutable_list_value()
       ->add_values()
       ->mutable_struct_value() = std::move(message);
  return input;
}

v1::SubmitJobRequest ChatRequest(const std::string& prompt) {
  v1::SubmitJobRequest request;
  request.set_type("chat");
  *request.mutable_input() = ChatInput(prompt);
  return request;
}

bool IsTerminal(v1::JobState state) {
  return state == v1::SUCCEEDED || state == v1::FAILED || state == v1::CANCELLED;
}

}  // namespace aijobs
