#include "scheduler/worker_service.h"

#include <algorithm>
#include <deque>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/status.h"
#include "common/text.h"
#include "common/time_util.h"
#include "common/uuid.h"
#include "scheduler/audit_log.h"
#include "scheduler/cache_adverts.h"
#include "scheduler/job_type_registry.h"
#include "scheduler/validation.h"
#include "spdlog/spdlog.h"

namespace aijobs::scheduler {
namespace {

class WorkerStream;

// The session handed to the Dispatcher; forwards sends to the stream while it lives.
class StreamSession final : public WorkerSession {
 public:
  StreamSession(WorkerStream* stream, std::string id, std::string worker_id,
                std::vector<std::string> types, int slots)
      : WorkerSession(std::move(id), std::move(worker_id), std::move(types), slots),
        stream_(stream) {}

  void Detach() {
    absl::MutexLock lock(&mu_);
    stream_ = nullptr;
  }
  void SendCancel(const std::string& job_id, int32_t attempt, const std::string& reason) override;
  void SendDrain() override;
  void Abort(const std::string& reason) override;

 protected:
  void SendAssignments(std::vector<v1::Assignment> assignments) override;

 private:
  absl::Mutex mu_;
  WorkerStream* stream_ ABSL_GUARDED_BY(mu_);
};

class WorkerStream final : public grpc::ServerBidiReactor<v1::WorkerMessage, v1::SchedulerMessage> {
 public:
  WorkerStream(const WorkerServiceDeps& deps, grpc::CallbackServerContext* context)
      : deps_(deps), context_(context) {
    StartRead(&in_);
  }

  // Merges `fill`'s additions into the next message and writes it when no write is pending.
  template <typename Fill>
  void Send(Fill fill) {
    absl::MutexLock lock(&mu_);
    if (finish_requested_) return;
    fill(&pending_);
    has_pending_ = true;
    MaybeWriteLocked();
  }

  // Ends the stream with `status` (the first status asked for wins). While a write is in
  // flight the Finish waits for it to complete, successfully or not.
  void FinishOnce(const grpc::Status& status) {
    grpc::Status finish_status;
    {
      absl::MutexLock lock(&mu_);
      RequestFinishLocked(status);
      if (!TakeFinishLocked()) return;
      finish_status = finish_status_;
    }
    Finish(finish_status);
  }

  // Ends the stream from the scheduler side. A write in flight to a worker that stopped
  // reading may never complete, so the call is cancelled to fail that write: otherwise the
  // Finish would wait for it forever. Called with the StreamSession's lock held, which keeps
  // this stream alive until it returns (OnDone detaches the session before deleting it).
  void Abort(const grpc::Status& status) {
    bool finish_now;
    bool write_in_flight;
    grpc::Status finish_status;
    {
      absl::MutexLock lock(&mu_);
      RequestFinishLocked(status);
      write_in_flight = writing_;
      finish_now = TakeFinishLocked();
      finish_status = finish_status_;
    }
    if (finish_now) {
      Finish(finish_status);
    } else if (write_in_flight) {
      context_->TryCancel();  // fails the write; OnWriteDone then calls the Finish
    }
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      // The worker closed its side (or the stream broke).
      FinishOnce(grpc::Status::OK);
      return;
    }
    if (!Handle(in_)) return;
    in_.Clear();
    StartRead(&in_);
  }

  void OnWriteDone(bool ok) override {
    grpc::Status status;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) {
        // The stream broke (or was cancelled): nothing more can be written. A status asked
        // for before wins.
        RequestFinishLocked(grpc::Status(grpc::StatusCode::UNAVAILABLE, "write to worker failed"));
      }
      if (!finish_requested_) {
        MaybeWriteLocked();
        return;
      }
      // The Finish held back for this write, or the one the failed write calls for.
      if (!TakeFinishLocked()) return;
      status = finish_status_;
    }
    Finish(status);
  }

  void OnCancel() override { FinishOnce(grpc::Status::CANCELLED); }

  void OnDone() override {
    if (session_) {
      session_->Detach();
      deps_.dispatcher->RemoveSession(session_);
      deps_.types->Unserve(session_->types());
      spdlog::info("worker {} disconnected (session {}, {} attempts to requeue)",
                   session_->worker_id(), session_->id(), session_->RunningCount());
    }
    delete this;
  }

 private:
  void MaybeWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || !has_pending_ || finish_requested_) return;
    out_.Clear();
    out_.Swap(&pending_);
    has_pending_ = false;
    writing_ = true;
    StartWrite(&out_);
  }

  // Records that the stream is to end with `status` unless an end was asked for already;
  // from then on nothing more is written.
  void RequestFinishLocked(const grpc::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finish_requested_) return;
    finish_requested_ = true;
    finish_status_ = status;
  }

  // True exactly once: when an end was asked for and no write is in flight. The caller then
  // calls Finish(finish_status_) after unlocking mu_. gRPC needs exactly one Finish per call,
  // even a cancelled one, before it runs OnDone; a write in flight defers it to OnWriteDone,
  // whether that write succeeds or fails.
  bool TakeFinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!finish_requested_ || writing_ || finish_called_) return false;
    finish_called_ = true;
    return true;
  }

  // Returns false when the stream was finished.
  bool Handle(const v1::WorkerMessage& msg) {
    if (!session_) {
      if (!msg.has_hello()) {
        FinishOnce(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                                "the first message on a worker stream must carry hello"));
        return false;
      }
      return Hello(msg.hello());
    }
    // Any message is a sign of life; one after a silence offers the worker's slots again.
    bool freed = session_->Touch();
    if (msg.draining()) {
      session_->SetDraining();
      spdlog::info("worker {} is draining", session_->worker_id());
    }
    int refused = 0;
    for (const auto& out : msg.outputs()) {
      // Only attempts assigned on this very stream: a worker cannot write into another's.
      if (session_->RunningAttempt(out.job_id()) != out.attempt() || out.attempt() <= 0) {
        ++refused;
        continue;
      }
      deps_.hub->AppendDelta(out.job_id(), out.attempt(), out.text());
    }
    // (Output racing a cancel lands here too, so the line is at most one per 10 s.)
    if (refused > 0 && absl::Now() - last_refusal_log_ > absl::Seconds(10)) {
      last_refusal_log_ = absl::Now();
      spdlog::warn(
          "worker {} sent output for {} attempt(s) not assigned to its stream (e.g. job "
          "{}); dropped",
          session_->worker_id(), refused, Utf8Prefix(msg.outputs(0).job_id(), 64));
    }
    for (const auto& c : msg.completions()) {
      AttemptOutcome o;
      o.job_id = c.job_id();
      o.attempt = c.attempt();
      o.kind = AttemptOutcome::Kind::kSucceeded;
      o.result = c.result();
      freed |= EndAttempt(std::move(o));
    }
    for (const auto& f : msg.failures()) {
      AttemptOutcome o;
      o.job_id = f.job_id();
      o.attempt = f.attempt();
      o.kind = f.retryable() ? AttemptOutcome::Kind::kRetryableFailure
                             : AttemptOutcome::Kind::kFatalFailure;
      o.error.set_code(f.code().empty() ? "WORKER_ERROR" : f.code());
      o.error.set_message(f.message());
      o.error.set_retryable(f.retryable());
      if (f.retryable()) {
        o.retry_delay =
            RetryDelay(f.attempt(), deps_.retry, FromProtoDuration(f.retry_after()), bitgen_);
      }
      freed |= EndAttempt(std::move(o));
    }
    if (!msg.abandoned().empty()) freed |= ReleaseAbandoned(msg.abandoned());
    // After the message's completions and failures: the heartbeat beside them no longer
    // lists the attempts they end.
    if (msg.has_heartbeat()) freed |= FailUnreported(msg.heartbeat());
    if (freed) deps_.dispatcher->Wake();
    return true;
  }

  // Fails the attempts the worker no longer reports as WORKER_LOST (retryable), as if the
  // worker had disconnected, instead of waiting for their deadline. Returns whether a slot
  // was freed.
  bool FailUnreported(const v1::Heartbeat& heartbeat) {
    std::vector<std::pair<std::string, int32_t>> lost = session_->Heartbeat(heartbeat);
    for (const auto& [job_id, attempt] : lost) {
      // Should the assignment still reach the worker, it must not run it.
      session_->SendCancel(job_id, attempt, "the worker no longer reported this attempt");
      EventHub::AttemptTail tail = deps_.hub->EndAttempt(job_id, attempt);
      if (!tail.found) continue;  // already ended here (cancelled)
      spdlog::warn("worker {} no longer reports attempt {} of job {}; requeueing it",
                   session_->worker_id(), attempt, job_id);
      AttemptOutcome o;
      o.job_id = job_id;
      o.attempt = attempt;
      o.kind = AttemptOutcome::Kind::kRetryableFailure;
      o.error.set_code("WORKER_LOST");
      o.error.set_message("the worker running this attempt no longer reported it (" +
                          session_->worker_id() + ")");
      o.error.set_retryable(true);
      o.last_seq = tail.last_seq;
      deps_.finisher->Submit(std::move(o), std::move(tail.unflushed));
    }
    return !lost.empty();
  }

  // Requeues the attempts the worker gave up when an earlier stream broke. They were
  // assigned on that stream, by this replica or another (maybe gone), so they are released
  // in the store, fenced by attempt number, rather than through this session. Returns
  // whether a slot of this session was freed.
  bool ReleaseAbandoned(const google::protobuf::RepeatedPtrField<v1::RunningJob>& abandoned) {
    bool freed = false;
    std::vector<std::pair<std::string, int32_t>> release;
    for (const v1::RunningJob& a : abandoned) {
      if (!IsUuid(a.job_id()) || a.attempt() <= 0) continue;  // never a job of ours
      if (session_->RunningAttempt(a.job_id()) == a.attempt()) {
        // Assigned on this very stream: end it here like any failure.
        AttemptOutcome o;
        o.job_id = a.job_id();
        o.attempt = a.attempt();
        o.kind = AttemptOutcome::Kind::kRetryableFailure;
        o.error = AbandonedError();
        freed |= EndAttempt(std::move(o));
        continue;
      }
      release.emplace_back(a.job_id(), a.attempt());
    }
    if (release.empty()) return freed;
    spdlog::info("worker {} gave up {} attempt(s) when an earlier stream broke; requeueing them",
                 session_->worker_id(), release.size());
    JobStore* store = deps_.store;
    EventHub* hub = deps_.hub;
    Dispatcher* dispatcher = deps_.dispatcher;
    deps_.executor->Run([store, hub, dispatcher, release = std::move(release)] {
      auto jobs = store->ReleaseAttempts(release, AbandonedError());
      if (!jobs.ok()) {
        // Their leases expire and the reaper requeues them instead.
        spdlog::warn("requeueing {} abandoned attempt(s) failed: {}", release.size(),
                     jobs.status().ToString());
        return;
      }
      for (const v1::Job& job : *jobs) hub->Publish(TransitionEvent(job));
      if (!jobs->empty()) dispatcher->Wake();
    });
    return freed;
  }

  static v1::JobError AbandonedError() {
    v1::JobError error;
    error.set_code("WORKER_DISCONNECTED");
    error.set_message("the worker's stream to the scheduler that assigned this attempt broke");
    error.set_retryable(true);
    return error;
  }

  bool EndAttempt(AttemptOutcome o) {
    if (!session_->EndAttempt(o.job_id, o.attempt)) return false;
    EventHub::AttemptTail tail = deps_.hub->EndAttempt(o.job_id, o.attempt);
    // Not found: the attempt was already ended here (cancelled); the slot is free again.
    if (tail.found) {
      o.last_seq = tail.last_seq;
      deps_.finisher->Submit(std::move(o), std::move(tail.unflushed));
    }
    return true;
  }

  bool Hello(const v1::WorkerHello& hello) {
    if (!accepting()) {
      FinishOnce(grpc::Status(grpc::StatusCode::UNAVAILABLE, "scheduler is shutting down"));
      return false;
    }
    absl::StatusOr<Identity> who = AuthorizeWorker(hello);
    if (!who.ok()) {
      spdlog::warn("worker stream from {} refused: {}", context_->peer(), who.status().ToString());
      RecordRefusal(deps_.audit, *context_, deps_.auth->options().default_tenant,
                    "WorkerService.Connect", who.status());
      FinishOnce(ToGrpcStatus(who.status()));
      return false;
    }
    if (absl::Status s = ValidateWorkerHello(hello); !s.ok()) {
      FinishOnce(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::string(s.message())));
      return false;
    }
    absl::Status adverts = ValidateCacheAdverts(hello.cache_adverts());
    if (!adverts.ok()) {
      FinishOnce(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                              absl::StrCat("hello: ", adverts.message())));
      return false;
    }
    // Before the welcome: a worker that saw its welcome can rely on its adverts applying.
    if (deps_.cache_adverts != nullptr) deps_.cache_adverts->Update(hello.cache_adverts());
    std::vector<std::string> types(hello.job_types().begin(), hello.job_types().end());
    std::sort(types.begin(), types.end());
    types.erase(std::unique(types.begin(), types.end()), types.end());
    std::string worker_id = hello.worker_id().empty() ? context_->peer() : hello.worker_id();
    session_ = std::make_shared<StreamSession>(this, NewUuid(), worker_id, types, hello.slots());
    // Two heartbeats missed: assign it nothing until it is heard from (the lease keeper drops
    // the stream after kSilentIntervalsBeforeDrop).
    session_->SetSilenceLimit(2 * deps_.heartbeat_interval);
    spdlog::info("worker {} connected as {}: session {}, types [{}], {} slots", worker_id,
                 who->Describe(), session_->id(), absl::StrJoin(types, ","), hello.slots());
    JobTypeRegistry* registry = deps_.types;
    registry->Serve(types);  // undone in OnDone
    deps_.executor->Run([registry, types] { registry->Register(types); });
    Send([&](v1::SchedulerMessage* m) {
      m->mutable_welcome()->set_scheduler_id(deps_.replica_id);
      m->mutable_welcome()->set_session_id(session_->id());
      *m->mutable_welcome()->mutable_heartbeat_interval() =
          ToProtoDuration(deps_.heartbeat_interval);
    });
    deps_.dispatcher->AddSession(session_);
    return true;
  }

  bool accepting() const { return deps_.accepting == nullptr || deps_.accepting->load(); }

  // The worker credential of this stream, if it may serve every type of `hello`.
  absl::StatusOr<Identity> AuthorizeWorker(const v1::WorkerHello& hello) const {
    if (deps_.auth == nullptr || !deps_.auth->enabled()) return Identity{};
    auto who = deps_.auth->AuthenticateCall(*context_);
    if (!who.ok()) return who.status();
    if (who->anonymous()) {
      return absl::UnauthenticatedError("WorkerService.Connect needs a worker credential");
    }
    if (!who->worker()) {
      return absl::PermissionDeniedError(
          "a client credential cannot open WorkerService.Connect (it needs the worker role)");
    }
    for (const std::string& t : hello.job_types()) {
      if (!who->MayServe(t)) {
        return absl::PermissionDeniedError(absl::StrCat(
            "this worker credential may not serve job type \"", Utf8Prefix(t, 64), "\""));
      }
    }
    return who;
  }

  WorkerServiceDeps deps_;
  grpc::CallbackServerContext* context_;
  v1::WorkerMessage in_;
  std::shared_ptr<StreamSession> session_;  // set on hello; read-side only
  absl::BitGen bitgen_;
  absl::Time last_refusal_log_ = absl::InfinitePast();  // read side only

  absl::Mutex mu_;
  v1::SchedulerMessage pending_ ABSL_GUARDED_BY(mu_);
  v1::SchedulerMessage out_ ABSL_GUARDED_BY(mu_);
  bool has_pending_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  // The stream is to end with finish_status_: nothing more is written.
  bool finish_requested_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status finish_status_ ABSL_GUARDED_BY(mu_);
  bool finish_called_ ABSL_GUARDED_BY(mu_) = false;
};

void StreamSession::SendAssignments(std::vector<v1::Assignment> assignments) {
  absl::MutexLock lock(&mu_);
  if (stream_ == nullptr) return;  // the dispatcher requeues them with the lost session
  stream_->Send([&](v1::SchedulerMessage* m) {
    for (auto& a : assignments) *m->add_assignments() = std::move(a);
  });
}

void StreamSession::SendCancel(const std::string& job_id, int32_t attempt,
                               const std::string& reason) {
  absl::MutexLock lock(&mu_);
  if (stream_ == nullptr) return;
  stream_->Send([&](v1::SchedulerMessage* m) {
    v1::CancelJob* c = m->add_cancels();
    c->set_job_id(job_id);
    c->set_attempt(attempt);
    c->set_reason(reason);
  });
}

void StreamSession::SendDrain() {
  SetDraining();
  absl::MutexLock lock(&mu_);
  if (stream_ == nullptr) return;
  stream_->Send([](v1::SchedulerMessage* m) { m->set_drain(true); });
}

void StreamSession::Abort(const std::string& reason) {
  absl::MutexLock lock(&mu_);
  if (stream_ == nullptr) return;
  stream_->Abort(grpc::Status(grpc::StatusCode::UNAVAILABLE, reason));
}

}  // namespace

grpc::ServerBidiReactor<v1::WorkerMessage, v1::SchedulerMessage>* WorkerServiceImpl::Connect(
    grpc::CallbackServerContext* context) {
  return new WorkerStream(deps_, context);
}

}  // namespace aijobs::scheduler
