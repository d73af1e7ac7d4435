#include "workers/worker_connection.h"

#include <algorithm>
#include <thread>
#include <vector>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "common/time_util.h"
#include "spdlog/spdlog.h"

namespace aijobs::worker {

using aijobs::v1::Assignment;
using aijobs::v1::JobComplete;
using aijobs::v1::JobFailure;
using aijobs::v1::SchedulerMessage;
using aijobs::v1::WorkerMessage;

// The JobContext of one running attempt: forwards reports to the connection, which drops
// them once the attempt is no longer running (finished, cancelled, timed out, disconnected).
class WorkerConnection::RunningJob : public JobContext {
 public:
  RunningJob(WorkerConnection* connection, JobKey key, uint64_t serial,
             google::protobuf::Struct input, absl::Time deadline)
      : connection_(connection),
        key_(std::move(key)),
        serial_(serial),
        input_(std::move(input)),
        deadline_(deadline) {}

  const std::string& job_id() const override { return key_.first; }
  int attempt() const override { return key_.second; }
  const google::protobuf::Struct& input() const override { return input_; }
  absl::Time deadline() const override { return deadline_; }

  void EmitDelta(const std::string& text) override {
    connection_->QueueOutput(key_, serial_, text);
  }

  void Succeed(google::protobuf::Struct result) override {
    JobComplete complete;
    *complete.mutable_result() = std::move(result);
    connection_->FinishJob(key_, serial_, &complete, nullptr);
  }

  void Fail(const std::string& code, const std::string& message, bool retryable,
            absl::Duration retry_after) override {
    JobFailure failure;
    failure.set_code(code);
    failure.set_message(message);
    failure.set_retryable(retryable);
    if (retry_after > absl::ZeroDuration()) {
      *failure.mutable_retry_after() = ToProtoDuration(retry_after);
    }
    connection_->FinishJob(key_, serial_, nullptr, &failure);
  }

 private:
  WorkerConnection* const connection_;
  const JobKey key_;
  const uint64_t serial_;
  const google::protobuf::Struct input_;
  const absl::Time deadline_;
};

struct WorkerConnection::Session {
  explicit Session(std::string scheduler) : scheduler(std::move(scheduler)) {}
  const std::string scheduler;
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReaderWriter<WorkerMessage, SchedulerMessage>> stream;
  bool reader_done = false;         // guarded by mu_
  bool welcomed = false;            // guarded by mu_
  bool scheduler_draining = false;  // guarded by mu_: the scheduler sent drain
};

namespace {
// More abandoned attempts than this are left to lease expiry (bounds memory while no
// scheduler can be reached for a long time).
constexpr size_t kMaxAbandoned = 100000;
}  // namespace

WorkerConnection::WorkerConnection(WorkerConnectionOptions options, const HandlerRegistry* registry)
    : options_(std::move(options)),
      registry_(registry),
      heartbeat_interval_(options_.heartbeat_interval) {}

WorkerConnection::~WorkerConnection() = default;

absl::Status WorkerConnection::Run() {
  if (options_.schedulers.empty()) {
    return absl::InvalidArgumentError("the worker needs at least one scheduler address");
  }
  absl::BitGen rng;
  int failures = 0;
  size_t next = 0;
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      if (draining_ || shutdown_) break;
    }
    const std::string& scheduler = options_.schedulers[next % options_.schedulers.size()];
    SessionEnd end = RunSession(scheduler);
    absl::MutexLock lock(&mu_);
    if (draining_ || shutdown_) break;
    // The next session goes to the next replica: a drained one is shutting down, a broken
    // one may be gone. With one address it is the same one again.
    ++next;
    const std::string& target = options_.schedulers[next % options_.schedulers.size()];
    absl::Duration delay;
    if (end.drained) {
      // Not a failure: reconnect soon (jittered), the replica asked us to go.
      failures = 0;
      delay = options_.reconnect_initial * absl::Uniform(rng, 0.5, 1.0);
      spdlog::info("scheduler {} drained this worker; connecting to {} in {} ms", scheduler, target,
                   absl::ToInt64Milliseconds(delay));
    } else {
      if (end.welcomed) failures = 0;
      // Exponential backoff with jitter in [cap/2, cap], so a restarted scheduler is not hit
      // by every worker in the same millisecond.
      absl::Duration cap = options_.reconnect_initial * (1 << std::min(failures, 16));
      cap = std::min(cap, options_.reconnect_max);
      delay = cap / 2 + absl::Uniform(rng, 0.0, 1.0) * (cap / 2);
      ++failures;
      // A scheduler that stays down is logged at warn on the first and every 10th attempt.
      auto level = failures == 1 || failures % 10 == 0 ? spdlog::level::warn : spdlog::level::info;
      spdlog::log(level, "{}; reconnecting to scheduler {} in {} ms (attempt {})", end.reason,
                  target, absl::ToInt64Milliseconds(delay), failures);
    }
    absl::Time until = absl::Now() + delay;
    while (!draining_ && !shutdown_ && !cv_.WaitWithDeadline(&mu_, until)) {
    }
  }
  spdlog::info("worker {} stopped", options_.worker_id);
  return absl::OkStatus();
}

void WorkerConnection::RequestDrain() {
  absl::MutexLock lock(&mu_);
  if (!draining_) spdlog::info("drain requested");
  draining_ = true;
  cv_.SignalAll();
}

void WorkerConnection::Shutdown() {
  absl::MutexLock lock(&mu_);
  shutdown_ = true;
  if (session_ != nullptr) session_->context.TryCancel();
  cv_.SignalAll();
}

int WorkerConnection::running_jobs() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(running_.size());
}

WorkerConnection::SessionEnd WorkerConnection::RunSession(const std::string& scheduler) {
  grpc::ChannelArguments args;
  // A private subchannel per channel and short connect backoff: our own loop paces
  // reconnects, gRPC's default backoff (up to 120 s) must not add to it.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
              static_cast<int>(absl::ToInt64Milliseconds(options_.reconnect_initial)));
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS,
              static_cast<int>(absl::ToInt64Milliseconds(options_.reconnect_initial)));
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
              static_cast<int>(absl::ToInt64Milliseconds(options_.reconnect_max)));
  // Notice a scheduler that vanished without closing the connection (host crash, network
  // partition) within seconds; the scheduler permits pings this frequent.
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(64 << 20);
  auto channel = grpc::CreateCustomChannel(
      scheduler, options_.credentials ? options_.credentials : grpc::InsecureChannelCredentials(),
      args);
  auto stub = aijobs::v1::WorkerService::NewStub(channel);

  Session session(scheduler);
  if (!options_.bearer_token.empty()) {
    session.context.AddMetadata("authorization", "Bearer " + options_.bearer_token);
  }
  session.stream = stub->Connect(&session.context);
  {
    absl::MutexLock lock(&mu_);
    session_ = &session;
    if (shutdown_) session.context.TryCancel();
    heartbeat_interval_ = options_.heartbeat_interval;
    // The previous session left the outbox empty (AbandonAllJobs).
    pending_.Clear();
    pending_output_index_.clear();
    auto* hello = pending_.mutable_hello();
    hello->set_worker_id(options_.worker_id);
    for (const std::string& t : options_.job_types) hello->add_job_types(t);
    hello->set_slots(options_.slots);
    hello->set_version(options_.version);
    for (const auto& advert : options_.cache_adverts) *hello->add_cache_adverts() = advert;
    has_pending_ = true;
  }
  spdlog::info("connecting to scheduler {} as {}", scheduler, options_.worker_id);

  std::thread writer([this, &session] { WriterLoop(&session); });
  SchedulerMessage message;
  while (session.stream->Read(&message)) {
    HandleSchedulerMessage(&session, &message);
    message.Clear();
  }
  SessionEnd end;
  {
    absl::MutexLock lock(&mu_);
    session.reader_done = true;
    end.welcomed = session.welcomed;
    end.drained = session.scheduler_draining;
    cv_.SignalAll();
  }
  writer.join();
  grpc::Status status = session.stream->Finish();
  {
    absl::MutexLock lock(&mu_);
    session_ = nullptr;
  }
  int aborted = AbandonAllJobs();
  end.reason = absl::StrCat(
      "stream ended (", status.ok() ? "closed by the scheduler" : DescribeGrpcStatus(status), ")");
  if (aborted > 0) {
    absl::StrAppend(&end.reason, "; cancelled ", aborted,
                    " running job(s), reported as abandoned on the next stream");
  }
  spdlog::log(end.welcomed ? spdlog::level::info : spdlog::level::debug, "{}", end.reason);
  return end;
}

void WorkerConnection::WriterLoop(Session* session) {
  absl::MutexLock lock(&mu_);
  absl::Time last_heartbeat = absl::Now();
  absl::Time drain_deadline = absl::InfiniteFuture();
  bool drain_announced = false;
  for (;;) {
    if (session->reader_done || shutdown_) return;
    absl::Time now = absl::Now();
    // Our own drain (stop) or the scheduler's (go elsewhere): finish on this stream alike.
    const bool drain = draining_ || session->scheduler_draining;
    if (drain && !drain_announced) {
      drain_announced = true;
      pending_.set_draining(true);
      has_pending_ = true;
      drain_deadline = now + options_.drain_timeout;
      spdlog::info("draining: waiting for {} running job(s), at most {} ms", running_.size(),
                   absl::ToInt64Milliseconds(options_.drain_timeout));
    }
    if (drain && !has_pending_ && (running_.empty() || now >= drain_deadline)) {
      if (!running_.empty()) {
        spdlog::warn("drain timeout: failing {} running job(s) as retryable DRAIN_TIMEOUT",
                     running_.size());
        std::vector<JobKey> keys;
        for (const auto& [key, entry] : running_) keys.push_back(key);
        mu_.Unlock();
        for (const JobKey& key : keys) {
          AbortJob(key, 0, "DRAIN_TIMEOUT",
                   "the worker was draining and the attempt did not finish in time", true, true);
        }
        mu_.Lock();
        continue;  // writes the failures, then half-closes
      }
      // Everything is reported: half-close and let the scheduler end the stream.
      mu_.Unlock();
      session->stream->WritesDone();
      mu_.Lock();
      absl::Time give_up = absl::Now() + options_.close_grace;
      while (!session->reader_done && !shutdown_ && !cv_.WaitWithDeadline(&mu_, give_up)) {
      }
      if (!session->reader_done) {
        spdlog::warn("scheduler did not close the stream after drain; cancelling it");
        session->context.TryCancel();
      }
      return;
    }
    absl::Time next_heartbeat = last_heartbeat + heartbeat_interval_;
    if (session->welcomed && now >= next_heartbeat) {
      auto* heartbeat = pending_.mutable_heartbeat();
      heartbeat->clear_running();
      for (const auto& [key, entry] : running_) {
        auto* r = heartbeat->add_running();
        r->set_job_id(key.first);
        r->set_attempt(key.second);
      }
      has_pending_ = true;
      last_heartbeat = now;
      next_heartbeat = now + heartbeat_interval_;
    }
    if (has_pending_) {
      // Everything queued while the previous write was in flight goes out as one message.
      WorkerMessage batch;
      batch.Swap(&pending_);
      pending_output_index_.clear();
      has_pending_ = false;
      mu_.Unlock();
      bool ok = session->stream->Write(batch);
      mu_.Lock();
      if (!ok) {
        // The stream is broken; make sure the reader wakes up and handles it.
        session->context.TryCancel();
        return;
      }
      continue;
    }
    absl::Time wake =
        std::min(drain_deadline, session->welcomed ? next_heartbeat : absl::InfiniteFuture());
    cv_.WaitWithDeadline(&mu_, wake);
  }
}

void WorkerConnection::HandleSchedulerMessage(Session* session, SchedulerMessage* message) {
  if (message->has_welcome()) {
    absl::Duration interval = FromProtoDuration(message->welcome().heartbeat_interval());
    absl::MutexLock lock(&mu_);
    if (interval > absl::ZeroDuration()) heartbeat_interval_ = interval;
    session->welcomed = true;
    // Attempts an earlier stream cut off: this scheduler requeues them at once.
    if (!abandoned_.empty()) {
      spdlog::info("reporting {} attempt(s) abandoned when the previous stream broke",
                   abandoned_.size());
      for (const JobKey& key : abandoned_) {
        auto* a = pending_.add_abandoned();
        a->set_job_id(key.first);
        a->set_attempt(key.second);
      }
      abandoned_.clear();
      has_pending_ = true;
    }
    cv_.SignalAll();
    spdlog::info("connected to scheduler {} (id {}, session {}, heartbeat every {} ms)",
                 session->scheduler, message->welcome().scheduler_id(),
                 message->welcome().session_id(), absl::ToInt64Milliseconds(heartbeat_interval_));
  }
  for (const auto& cancel : message->cancels()) {
    std::string reason =
        cancel.reason().empty() ? "cancelled by the scheduler" : "cancelled: " + cancel.reason();
    std::vector<JobKey> keys;
    if (cancel.attempt() != 0) {
      keys.push_back(JobKey{cancel.job_id(), cancel.attempt()});
    } else {
      // No attempt given: whatever attempt of the job runs here.
      absl::MutexLock lock(&mu_);
      for (const auto& [key, entry] : running_) {
        if (key.first == cancel.job_id()) keys.push_back(key);
      }
    }
    for (const JobKey& key : keys) AbortJob(key, 0, "CANCELLED", reason, false, true);
  }
  for (Assignment& assignment : *message->mutable_assignments()) StartJob(&assignment);
  if (message->drain()) {
    absl::MutexLock lock(&mu_);
    if (!session->scheduler_draining) {
      session->scheduler_draining = true;
      spdlog::info("scheduler {} is draining: finishing {} running job(s), then reconnecting",
                   session->scheduler, running_.size());
      cv_.SignalAll();
    }
  }
}

void WorkerConnection::StartJob(Assignment* assignment) {
  JobKey key{assignment->job_id(), assignment->attempt()};
  absl::Time deadline = assignment->has_deadline() ? FromProtoTimestamp(assignment->deadline())
                                                   : absl::InfiniteFuture();
  uint64_t serial = next_serial_.fetch_add(1);
  auto context = std::make_shared<RunningJob>(this, key, serial,
                                              std::move(*assignment->mutable_input()), deadline);
  std::shared_ptr<JobHandler> handler = registry_->Create(assignment->type(), context);
  {
    absl::MutexLock lock(&mu_);
    if (handler == nullptr) {
      spdlog::warn("job {} has type '{}' which this worker has no handler for", key.first,
                   assignment->type());
      AddFailureLocked(key, "UNSUPPORTED_JOB_TYPE",
                       absl::StrCat("worker ", options_.worker_id, " has no handler for job type '",
                                    assignment->type(), "'"),
                       true, absl::ZeroDuration());
      return;
    }
    if (running_.contains(key)) {
      spdlog::warn("ignoring duplicate assignment of job {} attempt {}", key.first, key.second);
      return;
    }
    if (static_cast<int>(running_.size()) >= options_.slots) {
      spdlog::warn("assigned job {} beyond {} slots; running it anyway", key.first, options_.slots);
    }
    running_[key] = Entry{serial, handler, 0};
  }
  if (deadline <= absl::Now()) {
    AbortJob(key, serial, "TIMEOUT", "the attempt's deadline had passed when it was assigned", true,
             true);
    return;
  }
  if (deadline != absl::InfiniteFuture()) {
    TimerQueue::TimerId id = timers_.Schedule(deadline, [this, key, serial] {
      AbortJob(key, serial, "TIMEOUT", "the attempt's deadline passed", true, true);
    });
    absl::MutexLock lock(&mu_);
    auto it = running_.find(key);
    if (it != running_.end() && it->second.serial == serial) {
      it->second.deadline_timer = id;
    } else {
      timers_.Cancel(id);
    }
  }
  handler->Start();
}

void WorkerConnection::QueueOutput(const JobKey& key, uint64_t serial, const std::string& text) {
  absl::MutexLock lock(&mu_);
  auto it = running_.find(key);
  if (it == running_.end() || it->second.serial != serial) return;  // no longer running
  auto index = pending_output_index_.find(key);
  if (index != pending_output_index_.end()) {
    pending_.mutable_outputs(index->second)->mutable_text()->append(text);
  } else {
    pending_output_index_.emplace(key, pending_.outputs_size());
    auto* output = pending_.add_outputs();
    output->set_job_id(key.first);
    output->set_attempt(key.second);
    output->set_text(text);
  }
  if (!has_pending_) {
    has_pending_ = true;
    cv_.SignalAll();
  }
}

void WorkerConnection::FinishJob(const JobKey& key, uint64_t serial, JobComplete* complete,
                                 JobFailure* failure) {
  std::shared_ptr<JobHandler> handler;  // released after the lock, possibly the last reference
  TimerQueue::TimerId timer = 0;
  {
    absl::MutexLock lock(&mu_);
    auto it = running_.find(key);
    if (it == running_.end() || it->second.serial != serial) return;  // already aborted
    handler = std::move(it->second.handler);
    timer = it->second.deadline_timer;
    running_.erase(it);
    if (complete != nullptr) {
      complete->set_job_id(key.first);
      complete->set_attempt(key.second);
      pending_.add_completions()->Swap(complete);
    } else {
      failure->set_job_id(key.first);
      failure->set_attempt(key.second);
      pending_.add_failures()->Swap(failure);
    }
    has_pending_ = true;
    cv_.SignalAll();
  }
  if (timer != 0) timers_.Cancel(timer);
}

void WorkerConnection::AbortJob(const JobKey& key, uint64_t serial, const std::string& code,
                                const std::string& message, bool retryable, bool report) {
  std::shared_ptr<JobHandler> handler;
  TimerQueue::TimerId timer = 0;
  {
    absl::MutexLock lock(&mu_);
    auto it = running_.find(key);
    if (it == running_.end() || (serial != 0 && it->second.serial != serial)) return;
    handler = std::move(it->second.handler);
    timer = it->second.deadline_timer;
    running_.erase(it);
    if (report) AddFailureLocked(key, code, message, retryable, absl::ZeroDuration());
  }
  spdlog::debug("job {} attempt {}: {} ({})", key.first, key.second, code, message);
  if (timer != 0) timers_.Cancel(timer);
  // Outside the lock: the hook may wait for a provider callback that wants mu_.
  handler->Cancel();
}

int WorkerConnection::AbandonAllJobs() {
  absl::flat_hash_map<JobKey, Entry> jobs;
  {
    absl::MutexLock lock(&mu_);
    jobs.swap(running_);
    for (const auto& [key, entry] : jobs) RememberAbandonedLocked(key);
    // Outcomes queued but never written: the scheduler still sees those attempts running.
    for (const auto& c : pending_.completions()) RememberAbandonedLocked({c.job_id(), c.attempt()});
    for (const auto& f : pending_.failures()) RememberAbandonedLocked({f.job_id(), f.attempt()});
    for (const auto& a : pending_.abandoned()) RememberAbandonedLocked({a.job_id(), a.attempt()});
    pending_.Clear();
    pending_output_index_.clear();
    has_pending_ = false;
  }
  for (auto& [key, entry] : jobs) {
    if (entry.deadline_timer != 0) timers_.Cancel(entry.deadline_timer);
    entry.handler->Cancel();
  }
  return static_cast<int>(jobs.size());
}

void WorkerConnection::RememberAbandonedLocked(const JobKey& key) {
  if (abandoned_.size() < kMaxAbandoned) abandoned_.push_back(key);
}

void WorkerConnection::AddFailureLocked(const JobKey& key, const std::string& code,
                                        const std::string& message, bool retryable,
                                        absl::Duration retry_after) {
  auto* failure = pending_.add_failures();
  failure->set_job_id(key.first);
  failure->set_attempt(key.second);
  failure->set_code(code);
  failure->set_message(message);
  failure->set_retryable(retryable);
  if (retry_after > absl::ZeroDuration()) {
    *failure->mutable_retry_after() = ToProtoDuration(retry_after);
  }
  has_pending_ = true;
  cv_.SignalAll();
}

}  // namespace aijobs::worker
