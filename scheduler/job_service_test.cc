// JobService against an in-process gRPC server and a scripted store: streaming edge cases,
// job-type checks while the database is down, and backpressure from the executor lanes.
#include "common/uuid.h"
#include "scheduler/job_service.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/executor.h"
#include "common/time_util.h"
#include "scheduler/event_hub.h"
#include "scheduler/job_type_registry.h"
#include "scheduler/testing/fake_job_store.h"

namespace aijobs::scheduler {
namespace {

constexpr char kJobId[] = "7d0b3c1e-1b7e-4d8e-9a51-0c8a3a8f2a11";

// ReadEvents blocks until released, then answers NOT_FOUND: the job was deleted (retention)
// while its watch was waiting for the database.
class GatedStore : public FakeJobStore {
 public:
  absl::StatusOr<EventPage> ReadEvents(const Caller&, const std::string& id, int64_t,
                                       int) override {
    entered_.Notify();
    release_.WaitForNotification();
    return absl::NotFoundError("job " + id + " not found");
  }
  absl::Notification entered_;
  absl::Notification release_;
};

// Holds calls until opened. Open is idempotent: a test opens it where it means to and again
// on every way out (OpenOnExit), so a failed assertion cannot leave the server stuck.
class Gate {
 public:
  void Open() {
    absl::MutexLock lock(&mu_);
    open_ = true;
  }
  void Wait() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&open_));
  }

 private:
  absl::Mutex mu_;
  bool open_ ABSL_GUARDED_BY(mu_) = false;
};

struct OpenOnExit {
  ~OpenOnExit() { gate.Open(); }
  Gate& gate;
};

// An in-process server around one JobServiceImpl.
struct TestServer {
  explicit TestServer(JobServiceDeps deps) : service(deps) {
    grpc::ServerBuilder builder;
    builder.RegisterService(&service);
    server = builder.BuildAndStart();
    stub = v1::JobService::NewStub(server->InProcessChannel(grpc::ChannelArguments()));
  }
  ~TestServer() { server->Shutdown(); }

  JobServiceImpl service;
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<v1::JobService::Stub> stub;
};

JobServiceDeps DepsFor(JobStore* store, EventHub* hub, Executor* executor, JobTypeRegistry* types) {
  JobServiceDeps deps;
  deps.store = store;
  deps.hub = hub;
  deps.dispatcher = nullptr;  // These tests never dispatch...
  deps.batcher = nullptr;     // ...nor reach the batcher.
  deps.executor = executor;
  deps.types = types;
  return deps;
}

// A JobServiceImpl on `store`, with a hub, an executor and a type registry of its own.
struct ServiceOn {
  explicit ServiceOn(JobStore* store)
      : types(store), server(DepsFor(store, &hub, &executor, &types)) {}
  EventHub hub;
  Executor executor{"test-exec", 2};
  JobTypeRegistry types;
  TestServer server;
};

void SetDeadline(grpc::ClientContext* ctx, absl::Duration d) {
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + d));
}

bool WaitFor(const std::function<bool()>& done, absl::Duration timeout = absl::Seconds(10)) {
  absl::Time until = absl::Now() + timeout;
  while (!done()) {
    if (absl::Now() > until) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return true;
}

TEST(JobServiceTest, WatchCancelledWhileItsJobIsDeletedFinishesOnce) {
  GatedStore store;
  EventHub hub;
  auto executor = std::make_unique<Executor>("test-exec", 2);
  JobTypeRegistry types(&store);
  JobServiceDeps deps = DepsFor(&store, &hub, executor.get(), &types);
  JobServiceImpl service(deps);
  grpc::ServerBuilder builder;
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  auto channel = server->InProcessChannel(grpc::ChannelArguments());
  auto stub = v1::JobService::NewStub(channel);

  grpc::ClientContext ctx;
  v1::WatchJobRequest req;
  req.set_job_id(kJobId);
  auto reader = stub->WatchJob(&ctx, req);
  ASSERT_TRUE(store.entered_.WaitForNotificationWithTimeout(absl::Seconds(10)));
  // The client goes away: the server finishes the call with CANCELLED...
  ctx.TryCancel();
  v1::JobEvent event;
  EXPECT_FALSE(reader->Read(&event));
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  absl::Time until = absl::Now() + absl::Seconds(10);
  while (service.WatchCount() != 0 && absl::Now() < until) absl::SleepFor(absl::Milliseconds(1));
  ASSERT_EQ(service.WatchCount(), 0u);
  // ...and only then does the database read come back NOT_FOUND. Finishing the call a
  // second time here aborted the scheduler (GRPC_CALL_ERROR_TOO_MANY_OPERATIONS).
  store.release_.Notify();
  executor.reset();  // Joins: the read has run to completion.
  server->Shutdown();
}

v1::SubmitJobRequest SummarizeRequest() {
  v1::SubmitJobRequest req;
  req.set_type("summarize");
  (*req.mutable_input()->mutable_fields())["text"].set_string_value("a long text");
  return req;
}

// KnownJobTypes fails as it does while the database is down.
class TypesDownStore : public FakeJobStore {
 public:
  absl::StatusOr<std::vector<std::string>> KnownJobTypes(absl::Duration) override {
    return absl::UnavailableError("connection to the database refused");
  }
};

// Issue 9, bug 3: an outage used to be answered INVALID_ARGUMENT "unknown job type", which
// tells the caller to fix a request that was fine.
TEST(JobServiceTest, SubmitAnswersUnavailableWhenJobTypesCannotBeLoaded) {
  TypesDownStore store;
  ServiceOn service(&store);
  TestServer& t = service.server;

  grpc::ClientContext ctx;
  SetDeadline(&ctx, absl::Seconds(10));
  v1::Job job;
  grpc::Status s = t.stub->SubmitJob(&ctx, SummarizeRequest(), &job);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  EXPECT_NE(s.error_message().find("retry"), std::string::npos) << s.error_message();
}

// GetJob fails with libpq's own words, as PgJobStore passes them on.
class LeakyErrorStore : public FakeJobStore {
 public:
  absl::StatusOr<v1::Job> GetJob(const Caller&, const std::string&) override {
    return absl::UnavailableError(
        "cannot connect to PostgreSQL: connection to server at \"10.9.8.7\", port 5432 "
        "failed: Connection refused\n\tIs the server running on that host?");
  }
};

// Regression (issue 10, item 9): database errors reached clients verbatim, with the
// database's address and libpq's internals.
TEST(JobServiceTest, DatabaseErrorsAreAnsweredForPeopleAndLoggedInFull) {
  LeakyErrorStore store;
  ServiceOn service(&store);
  TestServer& t = service.server;
  grpc::ClientContext ctx;
  SetDeadline(&ctx, absl::Seconds(10));
  v1::GetJobRequest req;
  req.set_job_id(NewUuid());
  v1::Job job;
  grpc::Status s = t.stub->GetJob(&ctx, req, &job);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(s.error_message().find("10.9.8.7"), std::string::npos) << s.error_message();
  EXPECT_EQ(s.error_message().find("PostgreSQL"), std::string::npos) << s.error_message();
  EXPECT_NE(s.error_message().find("the job database is unavailable; retry later"),
            std::string::npos)
      << s.error_message();
  EXPECT_NE(s.error_message().find("scheduler log reference"), std::string::npos);
}

// KnownJobTypes blocks until released (a pool that cannot connect).
class TypesBlockedStore : public FakeJobStore {
 public:
  absl::StatusOr<std::vector<std::string>> KnownJobTypes(absl::Duration) override {
    release_.Wait();
    return std::vector<std::string>{"summarize"};
  }
  Gate release_;
};

// Issue 9, bug 3: the type check ran the query on gRPC's callback thread, so a database that
// hung hung every submit (and the thread the other calls need).
TEST(JobServiceTest, SubmitDoesNotWaitForABlockedJobTypeQuery) {
  TypesBlockedStore store;
  EventHub hub;
  Executor executor("test-exec", 2);
  JobTypeRegistry types(&store);
  {
    TestServer t(DepsFor(&store, &hub, &executor, &types));
    OpenOnExit open{store.release_};
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(3));
    v1::Job job;
    grpc::Status s = t.stub->SubmitJob(&ctx, SummarizeRequest(), &job);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
    store.release_.Open();
  }
}

// GetJob blocks until released; counts the calls that reached it.
class GetBlockedStore : public FakeJobStore {
 public:
  absl::StatusOr<v1::Job> GetJob(const Caller&, const std::string& id) override {
    entered_.fetch_add(1);
    release_.Wait();
    v1::Job job;
    job.set_id(id);
    return job;
  }
  std::atomic<int> entered_{0};
  Gate release_;
};

// Issue 9, bug 4: the executor queue had no bound, so an overloaded scheduler queued without
// limit instead of telling callers to slow down.
TEST(JobServiceTest, UnaryCallAnswersResourceExhaustedWhenItsLaneIsFull) {
  GetBlockedStore store;
  EventHub hub;
  auto executor = std::make_unique<Executor>("unary", 1, /*max_queue=*/1);
  JobTypeRegistry types(&store);
  TestServer t(DepsFor(&store, &hub, executor.get(), &types));
  OpenOnExit open{store.release_};

  v1::GetJobRequest req;
  req.set_job_id(kJobId);
  // One call runs (blocked in the store), one waits in the queue...
  grpc::ClientContext running_ctx, queued_ctx;
  v1::Job running_job, queued_job;
  absl::Notification running_done, queued_done;
  grpc::Status running_status, queued_status;
  t.stub->async()->GetJob(&running_ctx, &req, &running_job, [&](grpc::Status s) {
    running_status = s;
    running_done.Notify();
  });
  ASSERT_TRUE(WaitFor([&] { return store.entered_.load() == 1; }));
  t.stub->async()->GetJob(&queued_ctx, &req, &queued_job, [&](grpc::Status s) {
    queued_status = s;
    queued_done.Notify();
  });
  ASSERT_TRUE(WaitFor([&] { return executor->QueueLength() == 1; }));
  // ...so the next one is turned away at once, with a hint when to come back.
  grpc::ClientContext ctx;
  SetDeadline(&ctx, absl::Seconds(3));
  v1::Job job;
  grpc::Status rejected = t.stub->GetJob(&ctx, req, &job);
  EXPECT_EQ(rejected.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << rejected.error_message();
  EXPECT_NE(rejected.error_message().find("retry in"), std::string::npos)
      << rejected.error_message();
  auto md = ctx.GetServerTrailingMetadata();
  auto retry_after = md.find("retry-after");
  ASSERT_NE(retry_after, md.end());
  EXPECT_EQ(std::string(retry_after->second.data(), retry_after->second.size()), "1");
  EXPECT_NE(md.find("x-http-header-retry-after"), md.end());

  // The calls that were accepted still complete.
  store.release_.Open();
  ASSERT_TRUE(running_done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  ASSERT_TRUE(queued_done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_TRUE(running_status.ok()) << running_status.error_message();
  EXPECT_TRUE(queued_status.ok()) << queued_status.error_message();
  executor.reset();
}

// ReadEvents blocks until released (counting the reads that reached it); InsertFromCache
// answers a cache hit.
class WatchBlockedStore : public FakeJobStore {
 public:
  absl::StatusOr<EventPage> ReadEvents(const Caller&, const std::string& id, int64_t,
                                       int) override {
    entered_.fetch_add(1);
    release_.Wait();
    return absl::NotFoundError("job " + id + " not found");
  }
  absl::StatusOr<std::optional<SubmitOutcome>> InsertFromCache(const NewJob& nj) override {
    SubmitOutcome out;
    out.job.set_id(nj.id);
    out.job.set_state(v1::SUCCEEDED);
    out.job.set_cached(true);
    return std::optional<SubmitOutcome>(std::move(out));
  }
  std::atomic<int> entered_{0};
  Gate release_;
};

// Issue 9, bug 4: watch replays shared the executor with every unary call, so a burst of
// watches (each replay a database read) delayed submits behind them.
TEST(JobServiceTest, FullWatchLaneDoesNotDelaySubmits) {
  WatchBlockedStore store;
  EventHub hub;
  auto unary = std::make_unique<Executor>("unary", 2);
  auto watch = std::make_unique<Executor>("watch", 2, /*max_queue=*/1);
  JobTypeRegistry types(&store);
  JobServiceDeps deps = DepsFor(&store, &hub, unary.get(), &types);
  deps.watch_executor = watch.get();
  auto t = std::make_unique<TestServer>(deps);
  OpenOnExit open{store.release_};

  v1::WatchJobRequest wreq;
  wreq.set_job_id(kJobId);
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<v1::JobEvent>>> readers;
  auto open_watch = [&] {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    readers.push_back(t->stub->WatchJob(contexts.back().get(), wreq));
  };
  // Two replays hold the lane's threads; one more waits in its queue.
  open_watch();
  ASSERT_TRUE(WaitFor([&] { return store.entered_.load() == 1; }));
  open_watch();
  ASSERT_TRUE(WaitFor([&] { return store.entered_.load() == 2; }));
  open_watch();
  ASSERT_TRUE(WaitFor([&] { return t->service.WatchCount() == 3; }));

  // A submit (one that reads the response cache, so it needs the executor) is not held up.
  v1::SubmitJobRequest sreq;
  sreq.set_type("embed");
  auto* texts = (*sreq.mutable_input()->mutable_fields())["texts"].mutable_list_value();
  texts->add_values()->set_string_value("hello");
  *sreq.mutable_cache()->mutable_ttl() = ToProtoDuration(absl::Minutes(1));
  grpc::ClientContext sctx;
  SetDeadline(&sctx, absl::Seconds(3));
  v1::Job job;
  grpc::Status s = t->stub->SubmitJob(&sctx, sreq, &job);
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(job.cached());

  // One watch more than the lane holds is turned away.
  grpc::ClientContext rctx;
  SetDeadline(&rctx, absl::Seconds(3));
  auto rejected = t->stub->WatchJob(&rctx, wreq);
  v1::JobEvent event;
  EXPECT_FALSE(rejected->Read(&event));
  grpc::Status rs = rejected->Finish();
  EXPECT_EQ(rs.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << rs.error_message();

  for (auto& c : contexts) c->TryCancel();
  for (auto& r : readers) (void)r->Finish();
  store.release_.Open();
  watch.reset();
  unary.reset();
  t.reset();
}

}  // namespace
}  // namespace aijobs::scheduler
