#include "scheduler/job_service.h"

#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/message_differencer.h>

#include <algorithm>
#include <deque>
#include <functional>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status.h"
#include "common/text.h"
#include "common/time_util.h"
#include "common/uuid.h"
#include "scheduler/audit_log.h"
#include "scheduler/cache_key.h"
#include "scheduler/submit_quota.h"
#include "scheduler/unary_call.h"
#include "spdlog/spdlog.h"

namespace aijobs::scheduler {

absl::StatusOr<Caller> AuthorizeJobCall(const Authenticator* auth,
                                        const grpc::CallbackServerContext& ctx, JobAccess access,
                                        const std::string& type) {
  if (auth == nullptr || !auth->enabled()) return Caller{};
  auto who = auth->AuthenticateCall(ctx);
  if (!who.ok()) return who.status();
  if (who->worker()) {
    return absl::PermissionDeniedError("a worker credential cannot call JobService");
  }
  if (who->anonymous()) {
    switch (access) {
      case JobAccess::kSubmit:
        if (auth->IsPublic(type)) break;
        return absl::UnauthenticatedError(absl::StrCat("job type \"", Utf8Prefix(type, 64),
                                                       "\" needs a credential (it is not public)"));
      case JobAccess::kRead:
        break;  // its own anonymous jobs only: the store scopes by the empty owner
      case JobAccess::kList:
        return absl::UnauthenticatedError("listing jobs needs a credential");
      case JobAccess::kRetry:
        return absl::UnauthenticatedError("retrying a job needs a credential");
      case JobAccess::kPutCache:
        return absl::UnauthenticatedError("writing the response cache needs a credential");
    }
  } else if (access == JobAccess::kPutCache && !who->admin()) {
    return absl::PermissionDeniedError("writing the response cache needs the admin role");
  }
  return who->AsCaller();
}

absl::StatusOr<Caller> JobServiceImpl::Authorize(const grpc::CallbackServerContext& ctx,
                                                 const char* method, JobAccess access,
                                                 const std::string& type) {
  absl::StatusOr<Caller> caller = AuthorizeJobCall(deps_.auth, ctx, access, type);
  if (!caller.ok()) {
    RecordRefusal(deps_.audit, ctx, deps_.auth->options().default_tenant,
                  absl::StrCat("JobService.", method), caller.status());
  }
  return caller;
}

void JobServiceImpl::AuditSubmit(const grpc::CallbackServerContext& ctx, const Caller& caller,
                                 const v1::SubmitJobRequest& request,
                                 const absl::StatusOr<SubmitOutcome>& out) {
  if (deps_.audit == nullptr) return;
  AuditEntry e = NewAuditEntry(ctx, "submit", caller.tenant_id, caller.subject);
  e.target = request.type();
  if (out.ok()) {
    e.job_id = out->job.id();
    e.code = "OK";
    if (out->existing) e.message = "idempotent replay";
  } else {
    e.code = absl::StatusCodeToString(out.status().code());
    e.message = Utf8Prefix(out.status().message(), 256);
  }
  if (deps_.audit->payloads()) {
    std::string json;
    if (google::protobuf::util::MessageToJsonString(request.input(), &json).ok()) {
      e.payload = std::move(json);
    }
  }
  deps_.audit->Record(std::move(e));
}

void JobServiceImpl::Audit(const grpc::CallbackServerContext& ctx, const char* action,
                           const Caller& caller, const std::string& job_id,
                           const absl::Status& result) {
  if (deps_.audit == nullptr) return;
  AuditEntry e = NewAuditEntry(ctx, action, caller.tenant_id, caller.subject);
  e.job_id = job_id;
  e.code = absl::StatusCodeToString(result.code());
  if (!result.ok()) e.message = Utf8Prefix(result.message(), 256);
  deps_.audit->Record(std::move(e));
}

namespace {

bool IsTerminal(v1::JobState s) {
  return s == v1::SUCCEEDED || s == v1::FAILED || s == v1::CANCELLED;
}

constexpr int kEventPage = 1000;

// Whether `request` asks for what `job` (found by its idempotency key) was created with:
// a retry of the same submit. Anything else under the same key is a client bug that must
// not be answered with somebody else's job.
bool SameSubmit(const v1::SubmitJobRequest& request, const v1::Job& job) {
  const int max_attempts = request.max_attempts() > 0 ? request.max_attempts() : 3;
  return request.type() == job.type() && request.priority() == job.priority() &&
         max_attempts == job.max_attempts() &&
         google::protobuf::util::MessageDifferencer::Equals(request.input(), job.input()) &&
         request.labels().size() == job.labels().size() &&
         std::all_of(request.labels().begin(), request.labels().end(), [&](const auto& kv) {
           auto it = job.labels().find(kv.first);
           return it != job.labels().end() && it->second == kv.second;
         });
}

// Tells the HTTP gateway how to answer a submit (it maps x-http-code to the status and
// x-http-header-* to headers, as grpc-gateway does): 202 Accepted while the job is pending,
// 200 when it is already finished (a cache hit, or an idempotent replay of a finished job).
void AddSubmitHttpMetadata(grpc::CallbackServerContext* ctx, const v1::Job& job) {
  ctx->AddInitialMetadata("x-http-code", IsTerminal(job.state()) ? "200" : "202");
  ctx->AddInitialMetadata("x-http-header-location", absl::StrCat("/v1/jobs/", job.id()));
}

}  // namespace

// One WatchJob stream. Subscribes to the hub first, then replays job_events after the
// requested seq, then streams live events. Exactly one write in flight; output deltas
// queued behind it are merged, so a slow reader costs bounded memory.
class WatchStream final : public grpc::ServerWriteReactor<v1::JobEvent>,
                          public EventSink,
                          public std::enable_shared_from_this<WatchStream> {
 public:
  WatchStream(JobServiceDeps* deps, WatchRegistry* registry, Caller caller, std::string job_id,
              int64_t after_seq)
      : deps_(deps),
        registry_(registry),
        caller_(std::move(caller)),
        job_id_(std::move(job_id)),
        cursor_(after_seq) {}

  // Subscribes and queues the replay; RESOURCE_EXHAUSTED when the watch lane is full (then
  // the caller finishes the call with FinishRefused).
  absl::Status Start(std::shared_ptr<WatchStream> self);
  void FinishRefused(const grpc::Status& status) {
    absl::MutexLock lock(&mu_);
    FinishLocked(status);
  }

  void OnEvent(const v1::JobEvent& event) override {
    absl::MutexLock lock(&mu_);
    last_activity_ = absl::Now();
    if (!replayed_) {
      early_.push_back(event);
      return;
    }
    EnqueueLocked(event);
  }

  // Called by the registry's poller when nothing arrived for a while.
  void Poll();
  bool IdleSince(absl::Time t) {
    absl::MutexLock lock(&mu_);
    return replayed_ && !reading_ && !ended_ && last_activity_ < t;
  }
  const std::string& job_id() const { return job_id_; }
  int64_t cursor() {
    absl::MutexLock lock(&mu_);
    return cursor_;
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok) {
      FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "client went away"));
      return;
    }
    if (ended_ && queue_.empty()) {
      FinishLocked(grpc::Status::OK);
      return;
    }
    WriteNextLocked();
  }

  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "client cancelled the watch"));
  }

  void OnDone() override;

 private:
  // The replay: reads pages of stored events from the cursor (ReadDatabase) or from `after`
  // (ReadPagesFrom) until one is not full. `first`: an error finishes the call.
  void ReadDatabase(bool first);
  void ReadPagesFrom(int64_t after, bool first);
  // The first page when it came from the watch read batcher.
  void OnFirstPage(absl::StatusOr<EventPage> page);
  // Delivers one page; true when another page must be read after *after.
  bool ApplyPageLocked(const absl::StatusOr<EventPage>& page, bool first, int64_t* after)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  void EnqueueLocked(const v1::JobEvent& event) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (ended_ || event.seq() <= cursor_) return;
    cursor_ = event.seq();
    if (event.has_final_job()) ended_ = true;
    // Merge consecutive deltas of one attempt waiting behind the write in flight.
    if (event.has_output_delta() && !queue_.empty() && queue_.back().has_output_delta() &&
        queue_.back().output_delta().attempt() == event.output_delta().attempt()) {
      v1::JobEvent& last = queue_.back();
      last.set_seq(event.seq());
      *last.mutable_time() = event.time();
      last.mutable_output_delta()->mutable_text()->append(event.output_delta().text());
    } else {
      queue_.push_back(event);
    }
    WriteNextLocked();
  }

  void WriteNextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || finished_ || queue_.empty()) return;
    current_ = std::move(queue_.front());
    queue_.pop_front();
    writing_ = true;
    StartWrite(&current_);
  }

  void FinishLocked(const grpc::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    if (status.ok() && (writing_ || !queue_.empty())) return;  // after the last write
    finished_ = true;
    Finish(status);
  }

  JobServiceDeps* deps_;
  WatchRegistry* registry_;
  const Caller caller_;
  const std::string job_id_;
  std::shared_ptr<WatchStream> self_;  // keeps the reactor alive until OnDone

  absl::Mutex mu_;
  int64_t cursor_ ABSL_GUARDED_BY(mu_);  // highest seq queued for the client
  bool replayed_ ABSL_GUARDED_BY(mu_) = false;
  bool reading_ ABSL_GUARDED_BY(mu_) = false;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;  // final event queued
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time last_activity_ ABSL_GUARDED_BY(mu_) = absl::Now();
  std::vector<v1::JobEvent> early_ ABSL_GUARDED_BY(mu_);  // live events before the replay
  std::deque<v1::JobEvent> queue_ ABSL_GUARDED_BY(mu_);
  v1::JobEvent current_ ABSL_GUARDED_BY(mu_);
};

// Tracks open watches. Events made on this replica reach them through the hub; for what
// other replicas write, it checks the idle ones' jobs in one statement per interval and
// lets only those with something new re-read their events.
class WatchRegistry {
 public:
  WatchRegistry(JobStore* store, absl::Duration poll) : store_(store), poll_(poll) {
    thread_ = std::thread([this] { Loop(); });
  }
  ~WatchRegistry() {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    thread_.join();
  }
  void Add(const std::shared_ptr<WatchStream>& w) {
    absl::MutexLock lock(&mu_);
    watches_.insert(w.get());
    refs_.emplace(w.get(), w);
  }
  void Remove(WatchStream* w) {
    absl::MutexLock lock(&mu_);
    watches_.erase(w);
    refs_.erase(w);
  }
  size_t size() {
    absl::MutexLock lock(&mu_);
    return watches_.size();
  }

 private:
  void Loop() {
    while (true) {
      std::vector<std::shared_ptr<WatchStream>> idle;
      {
        absl::MutexLock lock(&mu_);
        auto stop = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stopping_; };
        if (mu_.AwaitWithTimeout(absl::Condition(&stop), poll_)) return;
        absl::Time cutoff = absl::Now() - poll_;
        for (auto& [ptr, weak] : refs_) {
          if (auto w = weak.lock(); w && w->IdleSince(cutoff)) idle.push_back(std::move(w));
        }
      }
      if (idle.empty()) continue;
      std::vector<std::string> ids;
      ids.reserve(idle.size());
      for (auto& w : idle) ids.push_back(w->job_id());
      auto latest = store_->LatestSeqs(ids);
      if (!latest.ok()) {
        spdlog::warn("checking watched jobs for news failed: {}", latest.status().ToString());
        continue;
      }
      absl::flat_hash_map<std::string, int64_t> seq_of(latest->begin(), latest->end());
      for (auto& w : idle) {
        auto it = seq_of.find(w->job_id());
        // A job gone (retention) re-reads too, and ends with NOT_FOUND.
        if (it == seq_of.end() || it->second > w->cursor()) w->Poll();
      }
    }
  }

  JobStore* store_;
  const absl::Duration poll_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_set<WatchStream*> watches_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<WatchStream*, std::weak_ptr<WatchStream>> refs_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

namespace {

Executor* WatchLane(const JobServiceDeps& deps) {
  return deps.watch_executor != nullptr ? deps.watch_executor : deps.executor;
}

}  // namespace

absl::Status WatchStream::Start(std::shared_ptr<WatchStream> self) {
  self_ = self;
  registry_->Add(self);
  std::vector<v1::JobEvent> buffered = deps_->hub->Subscribe(job_id_, self);
  int64_t after;
  {
    absl::MutexLock lock(&mu_);
    early_.insert(early_.begin(), buffered.begin(), buffered.end());
    reading_ = true;
    after = cursor_;
  }
  absl::Status queued;
  if (deps_->watch_reads != nullptr) {
    queued = deps_->watch_reads->Read(
        EventQuery{caller_, job_id_, after},
        [self](absl::StatusOr<EventPage> page) { self->OnFirstPage(std::move(page)); });
  } else {
    queued = WatchLane(*deps_)->TryRun([self] { self->ReadDatabase(true); });
  }
  if (!queued.ok()) {
    absl::MutexLock lock(&mu_);
    reading_ = false;
  }
  return queued;
}

void WatchStream::Poll() {
  {
    absl::MutexLock lock(&mu_);
    if (reading_ || ended_ || finished_) return;
    reading_ = true;
  }
  auto self = shared_from_this();
  absl::Status queued = WatchLane(*deps_)->TryRun([self] { self->ReadDatabase(false); });
  if (!queued.ok()) {  // the next poll tries again
    absl::MutexLock lock(&mu_);
    reading_ = false;
  }
}

void WatchStream::OnFirstPage(absl::StatusOr<EventPage> page) {
  int64_t after = 0;
  {
    absl::MutexLock lock(&mu_);
    if (finished_) {
      reading_ = false;
      return;
    }
    if (!ApplyPageLocked(page, /*first=*/true, &after)) return;
  }
  // A full page (a long history): the rest is read on the watch lane, one page at a time.
  auto self = shared_from_this();
  absl::Status queued =
      WatchLane(*deps_)->TryRun([self, after] { self->ReadPagesFrom(after, true); });
  if (!queued.ok()) {
    absl::MutexLock lock(&mu_);
    reading_ = false;
    FinishLocked(ToClientStatus(queued));
  }
}

void WatchStream::ReadDatabase(bool first) {
  int64_t after;
  {
    absl::MutexLock lock(&mu_);
    after = cursor_;
    if (finished_) {
      reading_ = false;
      return;
    }
  }
  ReadPagesFrom(after, first);
}

void WatchStream::ReadPagesFrom(int64_t after, bool first) {
  while (true) {
    auto page = deps_->store->ReadEvents(caller_, job_id_, after, kEventPage);
    absl::MutexLock lock(&mu_);
    if (!ApplyPageLocked(page, first, &after)) return;
  }
}

bool WatchStream::ApplyPageLocked(const absl::StatusOr<EventPage>& page, bool first,
                                  int64_t* after) {
  if (!page.ok()) {
    reading_ = false;
    // The call may have finished meanwhile (the client cancelled): FinishLocked finishes it
    // at most once.
    if (first || page.status().code() == absl::StatusCode::kNotFound) {
      FinishLocked(ToClientStatus(page.status()));
    }
    return false;
  }
  for (const auto& e : page->events) EnqueueLocked(e);
  if (page->more && !page->events.empty()) {
    *after = page->events.back().seq();
    return true;
  }
  if (!replayed_) {
    replayed_ = true;
    std::sort(early_.begin(), early_.end(),
              [](const v1::JobEvent& a, const v1::JobEvent& b) { return a.seq() < b.seq(); });
    for (const auto& e : early_) EnqueueLocked(e);
    early_.clear();
  }
  // A finished job whose final event precedes after_seq: nothing more will come.
  if (!ended_ && IsTerminal(page->job.state()) && cursor_ >= page->job.last_seq()) {
    ended_ = true;
    FinishLocked(grpc::Status::OK);
  }
  last_activity_ = absl::Now();
  reading_ = false;
  return false;
}

void WatchStream::OnDone() {
  deps_->hub->Unsubscribe(job_id_, this);
  registry_->Remove(this);
  auto keep = std::move(self_);  // may delete this when `keep` goes out of scope
}

JobServiceImpl::JobServiceImpl(JobServiceDeps deps)
    : deps_(std::move(deps)),
      watches_(std::make_unique<WatchRegistry>(deps_.store, deps_.watch_poll_interval)) {}

JobServiceImpl::~JobServiceImpl() = default;

size_t JobServiceImpl::WatchCount() { return watches_->size(); }

grpc::ServerUnaryReactor* JobServiceImpl::SubmitJob(grpc::CallbackServerContext* ctx,
                                                    const v1::SubmitJobRequest* request,
                                                    v1::Job* job) {
  auto caller = Authorize(*ctx, "SubmitJob", JobAccess::kSubmit, request->type());
  if (!caller.ok()) return FinishNow(ctx, caller.status());
  // The registry answers from memory. Its INVALID_ARGUMENT becomes validation's own message;
  // UNAVAILABLE (the types could not be loaded) is answered as such, after the input checks.
  JobTypeRegistry* types = deps_.types;
  absl::Status type_known;
  absl::Status valid = ValidateSubmit(*request, deps_.limits, [&](const std::string& t) {
    type_known = types->IsKnown(t);
    return !absl::IsInvalidArgument(type_known);
  });
  if (!valid.ok()) return FinishNow(ctx, valid);
  if (!type_known.ok()) return FinishNow(ctx, type_known);
  NewJob nj;
  nj.id = NewUuid();
  nj.caller = *std::move(caller);
  nj.type = request->type();
  *nj.spec.mutable_input() = request->input();
  *nj.spec.mutable_labels() = request->labels();
  nj.priority = request->priority();
  nj.max_attempts = request->max_attempts() > 0 ? request->max_attempts() : 3;
  if (!request->idempotency_key().empty()) nj.idempotency_key = request->idempotency_key();
  nj.timeout_ms = absl::ToInt64Milliseconds(FromProtoDuration(request->timeout()));
  absl::Duration queue_timeout = FromProtoDuration(request->queue_timeout());
  if (queue_timeout == absl::ZeroDuration()) queue_timeout = deps_.default_queue_timeout;
  nj.queue_timeout_ms = absl::ToInt64Milliseconds(queue_timeout);
  // The job's own policy wins; otherwise a worker's advert for its (type, model) may apply.
  absl::Duration cache_ttl = FromProtoDuration(request->cache().ttl());
  if (cache_ttl <= absl::ZeroDuration() && deps_.cache_adverts != nullptr) {
    cache_ttl = deps_.cache_adverts->TtlFor(nj.type, nj.spec.input());
  }
  if (cache_ttl > absl::ZeroDuration()) {
    nj.cache_key = CacheKey(nj.caller.tenant_id, nj.type, nj.spec.input());
    if (!nj.cache_key.empty()) nj.cache_ttl = cache_ttl;
  }
  auto* reactor = ctx->DefaultReactor();
  // `request` lives until the reactor finishes.
  auto answer = [this, ctx, reactor, job, request,
                 caller = nj.caller](absl::StatusOr<SubmitOutcome> out) {
    AuditSubmit(*ctx, caller, *request, out);
    if (!out.ok()) {
      if (std::optional<absl::Duration> wait = RetryAfterOf(out.status())) {
        // Whole seconds, rounded up, for HTTP's Retry-After; milliseconds for gRPC clients.
        const std::string seconds = absl::StrCat(
            std::max<int64_t>(1, absl::ToInt64Seconds(absl::Ceil(*wait, absl::Seconds(1)))));
        ctx->AddTrailingMetadata("retry-after", seconds);
        ctx->AddTrailingMetadata("x-http-header-retry-after", seconds);
      }
      reactor->Finish(ToClientStatus(out.status()));
      return;
    }
    if (out->existing && !SameSubmit(*request, out->job)) {
      reactor->Finish(grpc::Status(
          grpc::StatusCode::ALREADY_EXISTS,
          absl::StrCat("idempotency_key \"", Utf8Prefix(request->idempotency_key(), 64),
                       "\" was already used for a different request (job ", out->job.id(),
                       "); send the same request to get that job, or use a new key")));
      return;
    }
    *job = std::move(out->job);
    AddSubmitHttpMetadata(ctx, *job);
    reactor->Finish(grpc::Status::OK);
  };
  // Past the caller's deadline no job is created (it has been told DEADLINE_EXCEEDED).
  const absl::Time deadline = absl::FromChrono(ctx->deadline());
  if (nj.cache_key.empty()) {  // the common case: no lookup, straight to the batcher
    deps_.batcher->Submit(std::move(nj), std::move(answer), deadline);
    return reactor;
  }
  auto lookup = [this, nj = std::move(nj), answer = std::move(answer), deadline]() mutable {
    if (absl::Now() >= deadline) {
      answer(absl::DeadlineExceededError(
          "the call's deadline passed before the job was stored; the job was not created"));
      return;
    }
    auto hit = deps_.store->InsertFromCache(nj);
    if (!hit.ok()) {
      answer(hit.status());
      return;
    }
    if (hit->has_value()) {
      answer(std::move(**hit));
      return;
    }
    deps_.batcher->Submit(std::move(nj), std::move(answer), deadline);
  };
  absl::Status queued = deps_.executor->TryRun(std::move(lookup));
  if (!queued.ok()) reactor->Finish(Overloaded(ctx, queued));
  return reactor;
}

grpc::ServerUnaryReactor* JobServiceImpl::GetJob(grpc::CallbackServerContext* ctx,
                                                 const v1::GetJobRequest* request, v1::Job* job) {
  absl::Status valid = ValidateJobId(request->job_id());
  if (!valid.ok()) return FinishNow(ctx, valid);
  auto authorized = Authorize(*ctx, "GetJob", JobAccess::kRead);
  if (!authorized.ok()) return FinishNow(ctx, authorized.status());
  Caller caller = *std::move(authorized);
  return RunOnExecutor(ctx, deps_.executor, [this, request, job, caller] {
    auto r = deps_.store->GetJob(caller, request->job_id());
    if (r.ok()) *job = std::move(*r);
    return r.status();
  });
}

grpc::ServerWriteReactor<v1::JobEvent>* JobServiceImpl::WatchJob(
    grpc::CallbackServerContext* ctx, const v1::WatchJobRequest* request) {
  class Reject : public grpc::ServerWriteReactor<v1::JobEvent> {
   public:
    explicit Reject(const grpc::Status& s) { Finish(s); }
    void OnDone() override { delete this; }
  };
  auto caller = Authorize(*ctx, "WatchJob", JobAccess::kRead);
  if (!caller.ok()) return new Reject(ToClientStatus(caller.status()));
  absl::Status valid = ValidateJobId(request->job_id());
  if (!valid.ok() || request->after_seq() < 0) {
    return new Reject(ToClientStatus(
        valid.ok() ? absl::InvalidArgumentError("after_seq must not be negative") : valid));
  }
  auto w = std::make_shared<WatchStream>(&deps_, watches_.get(), *std::move(caller),
                                         request->job_id(), request->after_seq());
  absl::Status started = w->Start(w);
  if (!started.ok()) w->FinishRefused(Overloaded(ctx, started));
  return w.get();
}

grpc::ServerUnaryReactor* JobServiceImpl::CancelJob(grpc::CallbackServerContext* ctx,
                                                    const v1::CancelJobRequest* request,
                                                    v1::Job* job) {
  absl::Status valid = ValidateJobId(request->job_id());
  if (!valid.ok()) return FinishNow(ctx, valid);
  auto authorized = Authorize(*ctx, "CancelJob", JobAccess::kRead);
  if (!authorized.ok()) return FinishNow(ctx, authorized.status());
  Caller caller = *std::move(authorized);
  return RunOnExecutor(ctx, deps_.executor, [this, ctx, request, job, caller] {
    const std::string& id = request->job_id();
    std::string reason = request->reason().empty() ? "cancelled by request" : request->reason();
    // A job running on one of our workers: end the attempt here first, so no delta gets a
    // seq after the final event.
    std::shared_ptr<WorkerSession> session = deps_.dispatcher->FindRunning(id);
    int32_t attempt = session ? session->RunningAttempt(id) : 0;
    int64_t last_seq = 0;
    if (session && attempt > 0) {
      EventHub::AttemptTail tail = deps_.hub->EndAttempt(id, attempt);
      last_seq = tail.last_seq;
      if (tail.unflushed.pieces_size() > 0) {
        (void)deps_.store->AppendDeltas({DeltaRow{id, std::move(tail.unflushed)}});
      }
    }
    auto r = deps_.store->CancelJob(caller, id, reason, last_seq);
    if (r.ok()) {
      deps_.hub->Publish(TransitionEvent(*r));
      if (session && attempt > 0) {
        session->SendCancel(id, attempt, reason);
      } else if (r->attempt() > 0) {
        // Possibly running on another replica's worker: tell that replica.
        absl::Status n = deps_.store->NotifyCancelled(id);
        if (!n.ok()) spdlog::warn("cancel notification for {} failed: {}", id, n.ToString());
      }
      *job = std::move(*r);
    } else if (session && attempt > 0 &&
               r.status().code() != absl::StatusCode::kFailedPrecondition) {
      // The attempt already ended here but the cancel was not recorded (database error):
      // stop the worker anyway. The job's lease is no longer extended, so the reaper
      // requeues it, and the caller, told UNAVAILABLE, cancels again.
      session->SendCancel(id, attempt, reason);
    }
    Audit(*ctx, "cancel", caller, id, r.status());
    return r.status();
  });
}

grpc::ServerUnaryReactor* JobServiceImpl::ListJobs(grpc::CallbackServerContext* ctx,
                                                   const v1::ListJobsRequest* request,
                                                   v1::ListJobsResponse* response) {
  if (request->page_size() < 0 || request->page_size() > 1000) {
    return FinishNow(ctx, absl::InvalidArgumentError("page_size must be between 0 and 1000"));
  }
  if (!v1::JobState_IsValid(request->state())) {
    return FinishNow(ctx, absl::InvalidArgumentError("state is not a known job state"));
  }
  auto caller = Authorize(*ctx, "ListJobs", JobAccess::kList);
  if (!caller.ok()) return FinishNow(ctx, caller.status());
  ListQuery q;
  q.caller = *std::move(caller);
  q.state = request->state();
  q.type = request->type();
  q.page_size = request->page_size() == 0 ? 50 : request->page_size();
  q.page_token = request->page_token();
  return RunOnExecutor(ctx, deps_.executor, [this, response, q] {
    auto r = deps_.store->ListJobs(q);
    if (r.ok()) {
      for (auto& j : r->jobs) *response->add_jobs() = std::move(j);
      response->set_next_page_token(r->next_page_token);
    }
    return r.status();
  });
}

grpc::ServerUnaryReactor* JobServiceImpl::RetryJob(grpc::CallbackServerContext* ctx,
                                                   const v1::RetryJobRequest* request,
                                                   v1::Job* job) {
  absl::Status valid = ValidateJobId(request->job_id());
  if (!valid.ok()) return FinishNow(ctx, valid);
  auto authorized = Authorize(*ctx, "RetryJob", JobAccess::kRetry);
  if (!authorized.ok()) return FinishNow(ctx, authorized.status());
  Caller caller = *std::move(authorized);
  return RunOnExecutor(ctx, deps_.executor, [this, ctx, request, job, caller] {
    auto r = deps_.store->RetryJob(caller, request->job_id());
    if (r.ok()) {
      deps_.hub->Publish(TransitionEvent(*r));
      deps_.dispatcher->Wake();
      *job = std::move(*r);
    }
    Audit(*ctx, "retry", caller, request->job_id(), r.status());
    return r.status();
  });
}

grpc::ServerUnaryReactor* JobServiceImpl::PutCachedResult(grpc::CallbackServerContext* ctx,
                                                          const v1::PutCachedResultRequest* request,
                                                          v1::PutCachedResultResponse* response) {
  absl::Status valid = ValidatePutCachedResult(*request, deps_.limits);
  if (!valid.ok()) return FinishNow(ctx, valid);
  auto authorized = Authorize(*ctx, "PutCachedResult", JobAccess::kPutCache);
  if (!authorized.ok()) return FinishNow(ctx, authorized.status());
  Caller caller = *std::move(authorized);
  std::string key = CacheKey(caller.tenant_id, request->type(), request->input());
  if (key.empty()) return FinishNow(ctx, absl::InternalError("computing the cache key failed"));
  return RunOnExecutor(ctx, deps_.executor, [this, ctx, request, response, caller, key] {
    auto expires =
        deps_.store->PutCachedResult(caller.tenant_id, key, request->type(), request->result(),
                                     FromProtoDuration(request->ttl()));
    Audit(*ctx, "cache_put", caller, "", expires.status());
    if (!expires.ok()) return expires.status();
    response->set_key(HexString(key));
    *response->mutable_expires_at() = ToProtoTimestamp(*expires);
    return absl::OkStatus();
  });
}

}  // namespace aijobs::scheduler
