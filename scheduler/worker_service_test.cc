// WorkerServiceImpl behind a real gRPC server (TCP on port 0) with an in-memory store, a real
// Dispatcher, EventHub and AttemptFinisher, and a raw bidi client playing the worker:
//  - a stream whose write is stuck (the worker stopped reading) still ends when the
//    scheduler drops it or the worker cancels: the session goes, its attempts are requeued,
//    and the server shuts down;
//  - heartbeats reconcile the attempts a worker reports with the ones assigned to it.
#include "scheduler/worker_service.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/executor.h"
#include "common/time_util.h"
#include "common/uuid.h"
#include "scheduler/job_type_registry.h"
#include "scheduler/testing/fake_job_store.h"
#include "scheduler/testing/recording_sink.h"

namespace aijobs::scheduler {
namespace {

constexpr absl::Duration kWait = absl::Seconds(10);

// Just what the dispatcher, the finisher and hello use: queued jobs handed out by ClaimJobs,
// finished attempts recorded (tests wait on them with a deadline).
class MemoryJobStore : public FakeJobStore {
 public:
  v1::Job AddQueued(const std::string& type, size_t input_bytes = 16) {
    v1::Job job;
    job.set_id(NewUuid());
    job.set_type(type);
    job.set_state(v1::QUEUED);
    job.set_max_attempts(3);
    job.set_last_seq(1);
    (*job.mutable_input()->mutable_fields())["prompt"].set_string_value(
        std::string(input_bytes, 'x'));
    absl::MutexLock lock(&mu_);
    queued_.push_back(job);
    return job;
  }

  // Blocks until pred(finished attempts) holds or the deadline passes.
  bool WaitFinished(const std::function<bool(const std::vector<AttemptOutcome>&)>& pred,
                    absl::Duration timeout = kWait) {
    absl::MutexLock lock(&mu_);
    auto cond = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return pred(finished_); };
    return mu_.AwaitWithTimeout(absl::Condition(&cond), timeout);
  }
  std::vector<AttemptOutcome> finished() {
    absl::MutexLock lock(&mu_);
    return finished_;
  }
  bool all_claimed() {
    absl::MutexLock lock(&mu_);
    return queued_.empty();
  }

  absl::StatusOr<std::vector<ClaimedJob>> ClaimJobs(const std::vector<std::string>& types,
                                                    int limit, const std::string&, absl::Duration,
                                                    absl::Duration default_timeout) override {
    absl::MutexLock lock(&mu_);
    std::vector<ClaimedJob> out;
    while (!queued_.empty() && static_cast<int>(out.size()) < limit) {
      ClaimedJob c;
      c.job = std::move(queued_.front());
      queued_.erase(queued_.begin());
      c.job.set_state(v1::RUNNING);
      c.job.set_attempt(c.job.attempt() + 1);
      c.job.set_last_seq(c.job.last_seq() + 1);
      c.deadline = absl::Now() + default_timeout;
      out.push_back(std::move(c));
    }
    return out;
  }
  absl::Status AppendDeltas(const std::vector<DeltaRow>&) override { return absl::OkStatus(); }
  absl::StatusOr<std::vector<v1::Job>> FinishAttempts(
      const std::vector<AttemptOutcome>& outcomes) override {
    absl::MutexLock lock(&mu_);
    std::vector<v1::Job> out;
    for (const AttemptOutcome& o : outcomes) {
      finished_.push_back(o);
      v1::Job& job = out.emplace_back();
      job.set_id(o.job_id);
      job.set_attempt(o.attempt);
      job.set_state(o.kind == AttemptOutcome::Kind::kSucceeded ? v1::SUCCEEDED : v1::QUEUED);
      *job.mutable_error() = o.error;
      job.set_last_seq(o.last_seq + 1);
    }
    return out;
  }
  absl::Status RegisterJobTypes(const std::vector<std::string>&) override {
    return absl::OkStatus();
  }

 private:
  absl::Mutex mu_;
  std::vector<v1::Job> queued_ ABSL_GUARDED_BY(mu_);
  std::vector<AttemptOutcome> finished_ ABSL_GUARDED_BY(mu_);
};

// Polls `pred` until it holds or `timeout` passes (for state with no notification to wait on).
bool WaitFor(const std::function<bool()>& pred, absl::Duration timeout = kWait) {
  absl::Time give_up = absl::Now() + timeout;
  while (!pred()) {
    if (absl::Now() > give_up) return false;
    absl::SleepFor(absl::Milliseconds(2));
  }
  return true;
}

// One scheduler's worker side, serving on 127.0.0.1:<port>.
struct TestScheduler {
  explicit TestScheduler(int max_claim_batch = 256,
                         absl::Duration heartbeat_interval = absl::Seconds(5)) {
    finisher = std::make_unique<AttemptFinisher>(&store, &hub, [](const v1::Job&) {});
    DispatcherOptions d;
    d.poll_interval = absl::Hours(1);  // only explicit wake-ups claim
    d.max_claim_batch = max_claim_batch;
    dispatcher = std::make_unique<Dispatcher>(&store, &hub, finisher.get(), d);
    JobTypeRegistryOptions t;
    t.refresh_in_background = false;
    types = std::make_unique<JobTypeRegistry>(&store, t);
    WorkerServiceDeps deps;
    deps.store = &store;
    deps.hub = &hub;
    deps.dispatcher = dispatcher.get();
    deps.finisher = finisher.get();
    deps.executor = &executor;
    deps.types = types.get();
    deps.replica_id = "test-replica";
    deps.heartbeat_interval = heartbeat_interval;
    service = std::make_unique<WorkerServiceImpl>(deps);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service.get());
    server = builder.BuildAndStart();
  }
  ~TestScheduler() {
    if (server) server->Shutdown(absl::ToChronoTime(absl::Now()));
    dispatcher->Stop();
    finisher->Stop();
  }

  // Shuts the gRPC server down (cancelling calls after one second) on another thread; returns
  // whether that finished within `timeout`. If not, the server is leaked with the thread.
  bool ShutdownWithin(absl::Duration timeout) {
    auto done = std::make_shared<absl::Notification>();
    grpc::Server* s = server.get();
    std::thread([s, done] {
      s->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
      done->Notify();
    }).detach();
    if (done->WaitForNotificationWithTimeout(timeout)) {
      server.reset();
      return true;
    }
    (void)server.release();
    return false;
  }

  std::shared_ptr<WorkerSession> OnlySession() {
    auto sessions = dispatcher->Sessions();
    return sessions.size() == 1 ? sessions[0] : nullptr;
  }

  MemoryJobStore store;
  EventHub hub;
  std::unique_ptr<AttemptFinisher> finisher;
  std::unique_ptr<Dispatcher> dispatcher;
  Executor executor{"worker-service-test", 1};
  std::unique_ptr<JobTypeRegistry> types;
  std::unique_ptr<WorkerServiceImpl> service;
  int port = 0;
  std::unique_ptr<grpc::Server> server;
};

// A worker speaking the protocol by hand over one stream.
struct RawWorker {
  explicit RawWorker(int port) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(-1);
    // Keep the stream's flow-control window at its initial size: a worker that stops reading
    // then holds the scheduler's write after a few tens of KiB.
    args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
    channel = grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(port),
                                        grpc::InsecureChannelCredentials(), args);
    stub = v1::WorkerService::NewStub(channel);
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Minutes(1)));
    stream = stub->Connect(&context);
  }
  ~RawWorker() {
    context.TryCancel();
    if (!finished) (void)stream->Finish();
  }
  grpc::Status Finish() {
    finished = true;
    return stream->Finish();
  }

  bool Hello(int slots) {
    v1::WorkerMessage m;
    m.mutable_hello()->set_worker_id("raw-worker");
    m.mutable_hello()->add_job_types("chat");
    m.mutable_hello()->set_slots(slots);
    return stream->Write(m);
  }
  // Reads until `n` assignments arrived in all (welcome and cancels are skipped).
  std::vector<v1::Assignment> ReadAssignments(size_t n) {
    std::vector<v1::Assignment> out;
    v1::SchedulerMessage m;
    while (out.size() < n && stream->Read(&m)) {
      for (const auto& a : m.assignments()) out.push_back(a);
    }
    return out;
  }
  bool Heartbeat(const std::vector<v1::Assignment>& running) {
    v1::WorkerMessage m;
    auto* hb = m.mutable_heartbeat();
    for (const auto& a : running) {
      auto* r = hb->add_running();
      r->set_job_id(a.job_id());
      r->set_attempt(a.attempt());
    }
    return stream->Write(m);
  }

  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::WorkerService::Stub> stub;
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReaderWriter<v1::WorkerMessage, v1::SchedulerMessage>> stream;
  bool finished = false;
};

bool AllLost(const std::vector<AttemptOutcome>& finished, size_t n) {
  if (finished.size() < n) return false;
  for (const AttemptOutcome& o : finished) {
    if (o.error.code() != "WORKER_LOST") return false;
  }
  return true;
}

// Queues jobs with 1 MiB inputs and waits until all are assigned to the worker that stopped
// reading: far more than a stream window, so the scheduler's write to it is stuck.
constexpr int kBigJobs = 16;
void FillStuckStream(TestScheduler& s, RawWorker& w) {
  ASSERT_TRUE(w.Hello(kBigJobs));
  ASSERT_TRUE(WaitFor([&] { return s.OnlySession() != nullptr; }));
  for (int i = 0; i < kBigJobs; ++i) s.store.AddQueued("chat", 1 << 20);
  s.dispatcher->Wake();
  ASSERT_TRUE(WaitFor([&] {
    auto session = s.OnlySession();
    return session && s.store.all_claimed() && session->RunningCount() == kBigJobs;
  }));
}

// Regression (issue 10, item 6): a hello with 10,000 job types was accepted, wrote 10,000
// rows and a 59 KB log line. It is refused before anything is recorded.
TEST(WorkerServiceTest, HelloWithTooManyJobTypesIsRefusedAndRecordsNothing) {
  TestScheduler s;
  RawWorker w(s.port);
  v1::WorkerMessage m;
  m.mutable_hello()->set_worker_id("greedy");
  for (int i = 0; i < 10000; ++i) m.mutable_hello()->add_job_types(absl::StrCat("t", i));
  m.mutable_hello()->set_slots(1);
  ASSERT_TRUE(w.stream->Write(m));
  v1::SchedulerMessage reply;
  EXPECT_FALSE(w.stream->Read(&reply));
  grpc::Status st = w.Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("at most 64"), std::string::npos) << st.error_message();
  EXPECT_EQ(s.types->IsKnown("t1").code(), absl::StatusCode::kUnavailable)
      << "nothing was registered (and nothing was ever read)";
  EXPECT_TRUE(s.dispatcher->Sessions().empty());
}

TEST(WorkerServiceTest, DroppingAStreamWithAStuckWriteEndsItAndRequeues) {
  // Leaked if the server cannot shut down: its threads still use it.
  auto* s = new TestScheduler(/*max_claim_batch=*/1);
  auto* w = new RawWorker(s->port);
  FillStuckStream(*s, *w);
  if (HasFatalFailure()) return;
  std::shared_ptr<WorkerSession> session = s->OnlySession();
  ASSERT_NE(session, nullptr);

  session->Abort("no heartbeat from worker");  // what the lease keeper does
  session.reset();

  EXPECT_TRUE(s->store.WaitFinished([](const auto& f) { return AllLost(f, kBigJobs); }))
      << "the dropped session's attempts were not requeued: its stream never finished";
  EXPECT_TRUE(s->dispatcher->Sessions().empty());
  bool shut_down = s->ShutdownWithin(absl::Seconds(10));
  ASSERT_TRUE(shut_down) << "Server::Shutdown hangs: a worker stream was never finished";
  delete w;
  delete s;
}

TEST(WorkerServiceTest, WorkerCancellingAStreamWithAStuckWriteEndsIt) {
  auto* s = new TestScheduler(/*max_claim_batch=*/1);
  auto* w = new RawWorker(s->port);
  FillStuckStream(*s, *w);
  if (HasFatalFailure()) return;

  w->context.TryCancel();

  EXPECT_TRUE(s->store.WaitFinished([](const auto& f) { return AllLost(f, kBigJobs); }))
      << "the cancelled session's attempts were not requeued: its stream never finished";
  EXPECT_TRUE(s->dispatcher->Sessions().empty());
  bool shut_down = s->ShutdownWithin(absl::Seconds(10));
  ASSERT_TRUE(shut_down) << "Server::Shutdown hangs: a worker stream was never finished";
  delete w;
  delete s;
}

TEST(WorkerServiceTest, ShutdownEndsAStreamWithAStuckWrite) {
  auto* s = new TestScheduler(/*max_claim_batch=*/1);
  auto* w = new RawWorker(s->port);
  FillStuckStream(*s, *w);
  if (HasFatalFailure()) return;

  bool shut_down = s->ShutdownWithin(absl::Seconds(10));
  ASSERT_TRUE(shut_down) << "Server::Shutdown hangs: a worker stream was never finished";
  EXPECT_TRUE(s->store.WaitFinished([](const auto& f) { return AllLost(f, kBigJobs); }));
  EXPECT_TRUE(s->dispatcher->Sessions().empty());
  delete w;
  delete s;
}

// A hung worker (SIGSTOP, a stuck loop) keeps its stream open but sends nothing: after two
// heartbeat intervals of silence it is offered no jobs, until it is heard from again.
TEST(WorkerServiceTest, SilentWorkerGetsNoJobsUntilItIsHeardFromAgain) {
  constexpr absl::Duration kInterval = absl::Milliseconds(100);
  TestScheduler s(256, kInterval);
  RawWorker w(s.port);
  ASSERT_TRUE(w.Hello(4));
  ASSERT_TRUE(WaitFor([&] { return s.OnlySession() != nullptr; }));
  std::shared_ptr<WorkerSession> session = s.OnlySession();
  EXPECT_EQ(session->FreeSlots(), 4);
  absl::SleepFor(3 * kInterval);  // two intervals missed

  s.store.AddQueued("chat");
  s.dispatcher->Wake();
  absl::SleepFor(2 * kInterval);
  EXPECT_EQ(session->FreeSlots(), 0);
  EXPECT_FALSE(s.store.all_claimed()) << "a job was claimed for a worker that went silent";
  EXPECT_EQ(session->RunningCount(), 0);

  // A heartbeat brings it back and the waiting job goes to it.
  ASSERT_TRUE(w.Heartbeat({}));
  std::vector<v1::Assignment> a = w.ReadAssignments(1);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_TRUE(s.store.all_claimed());
}

TEST(WorkerServiceTest, AttemptMissingFromHeartbeatIsLostAtOnce) {
  TestScheduler s;
  RawWorker w(s.port);
  ASSERT_TRUE(w.Hello(4));
  ASSERT_TRUE(WaitFor([&] { return s.OnlySession() != nullptr; }));
  std::shared_ptr<WorkerSession> session = s.OnlySession();

  s.store.AddQueued("chat");
  s.dispatcher->Wake();
  std::vector<v1::Assignment> a = w.ReadAssignments(1);
  ASSERT_EQ(a.size(), 1u);
  absl::Time before = session->last_heartbeat();
  ASSERT_TRUE(w.Heartbeat({a[0]}));
  ASSERT_TRUE(WaitFor([&] { return session->last_heartbeat() > before; }));

  // Assigned after the heartbeat just received: the next heartbeat may not list it yet.
  s.store.AddQueued("chat");
  s.dispatcher->Wake();
  std::vector<v1::Assignment> b = w.ReadAssignments(1);
  ASSERT_EQ(b.size(), 1u);

  // The worker no longer runs either attempt (say it restarted a job runner and lost them).
  ASSERT_TRUE(w.Heartbeat({}));
  ASSERT_TRUE(s.store.WaitFinished([](const auto& f) { return !f.empty(); }))
      << "an attempt the worker stopped reporting was not failed";
  std::vector<AttemptOutcome> finished = s.store.finished();
  ASSERT_EQ(finished.size(), 1u);
  EXPECT_EQ(finished[0].job_id, a[0].job_id());
  EXPECT_EQ(finished[0].attempt, a[0].attempt());
  EXPECT_EQ(finished[0].kind, AttemptOutcome::Kind::kRetryableFailure);
  EXPECT_EQ(finished[0].error.code(), "WORKER_LOST");
  EXPECT_TRUE(finished[0].error.retryable());
  EXPECT_EQ(session->RunningAttempt(a[0].job_id()), 0) << "its slot is free again";
  EXPECT_EQ(session->RunningAttempt(b[0].job_id()), b[0].attempt())
      << "an attempt assigned after the previous heartbeat is not judged yet";

  // Two heartbeats later it is: the first lists it, the second does not.
  ASSERT_TRUE(w.Heartbeat({b[0]}));
  ASSERT_TRUE(w.Heartbeat({}));
  ASSERT_TRUE(s.store.WaitFinished([](const auto& f) { return f.size() >= 2; }));
  finished = s.store.finished();
  ASSERT_EQ(finished.size(), 2u);
  EXPECT_EQ(finished[1].job_id, b[0].job_id());
  EXPECT_EQ(finished[1].error.code(), "WORKER_LOST");
  EXPECT_EQ(session->RunningCount(), 0);
}

TEST(WorkerServiceTest, CompletionBesideAHeartbeatThatOmitsItCounts) {
  TestScheduler s;
  RawWorker w(s.port);
  ASSERT_TRUE(w.Hello(4));
  ASSERT_TRUE(WaitFor([&] { return s.OnlySession() != nullptr; }));
  s.store.AddQueued("chat");
  s.dispatcher->Wake();
  std::vector<v1::Assignment> a = w.ReadAssignments(1);
  ASSERT_EQ(a.size(), 1u);
  ASSERT_TRUE(w.Heartbeat({a[0]}));

  // The worker finished the attempt: one message carries its completion and a heartbeat that
  // no longer lists it.
  v1::WorkerMessage m;
  m.mutable_heartbeat();
  v1::JobComplete* c = m.add_completions();
  c->set_job_id(a[0].job_id());
  c->set_attempt(a[0].attempt());
  (*c->mutable_result()->mutable_fields())["text"].set_string_value("done");
  ASSERT_TRUE(w.stream->Write(m));

  ASSERT_TRUE(s.store.WaitFinished([](const auto& f) { return !f.empty(); }));
  std::vector<AttemptOutcome> finished = s.store.finished();
  ASSERT_EQ(finished.size(), 1u);
  ASSERT_EQ(finished[0].kind, AttemptOutcome::Kind::kSucceeded)
      << "the completion was dropped: " << finished[0].error.code();
  EXPECT_EQ(finished[0].result.fields().at("text").string_value(), "done");
}

// Regression (issue 12): the scheduler appended a worker's JobOutput to any running job, so
// anyone who could say hello could write into other workers' jobs (and their watchers saw
// it). Output and completions count only for attempts assigned on the sender's own stream.
TEST(WorkerServiceTest, OutputAndCompletionsForAnotherStreamsAttemptAreRefused) {
  TestScheduler s;
  RawWorker owner(s.port);
  ASSERT_TRUE(owner.Hello(1));
  ASSERT_TRUE(WaitFor([&] { return s.OnlySession() != nullptr; }));
  s.store.AddQueued("chat");
  s.dispatcher->Wake();
  std::vector<v1::Assignment> a = owner.ReadAssignments(1);
  ASSERT_EQ(a.size(), 1u);
  auto sink = std::make_shared<RecordingSink>();
  s.hub.Subscribe(a[0].job_id(), sink);

  RawWorker intruder(s.port);
  ASSERT_TRUE(intruder.Hello(1));
  ASSERT_TRUE(WaitFor([&] { return s.dispatcher->Sessions().size() == 2; }));
  v1::WorkerMessage forged;
  v1::JobOutput* out = forged.add_outputs();
  out->set_job_id(a[0].job_id());
  out->set_attempt(a[0].attempt());
  out->set_text("forged answer");
  v1::JobComplete* c = forged.add_completions();
  c->set_job_id(a[0].job_id());
  c->set_attempt(a[0].attempt());
  (*c->mutable_result()->mutable_fields())["text"].set_string_value("forged answer");
  ASSERT_TRUE(intruder.stream->Write(forged));

  // The owner's own output goes through (and shows the intruder's message was handled first:
  // one stream's messages are handled in order, and the owner writes after it).
  ASSERT_TRUE(intruder.Heartbeat({}));
  absl::SleepFor(absl::Milliseconds(200));
  v1::WorkerMessage real;
  v1::JobOutput* mine = real.add_outputs();
  mine->set_job_id(a[0].job_id());
  mine->set_attempt(a[0].attempt());
  mine->set_text("real answer");
  ASSERT_TRUE(owner.stream->Write(real));
  ASSERT_TRUE(WaitFor([&] { return !sink->events().empty(); }));
  for (const v1::JobEvent& e : sink->events()) {
    EXPECT_NE(e.output_delta().text(), "forged answer");
  }
  EXPECT_EQ(sink->events()[0].output_delta().text(), "real answer");
  EXPECT_TRUE(s.store.finished().empty()) << "a completion from another stream was counted";
  int running_it = 0;
  for (const auto& session : s.dispatcher->Sessions()) {
    running_it += session->RunningAttempt(a[0].job_id()) == a[0].attempt();
  }
  EXPECT_EQ(running_it, 1) << "the attempt still runs, on its owner's stream only";
}

}  // namespace
}  // namespace aijobs::scheduler
