// JobService's streaming edge cases against an in-process gRPC server and a scripted store.
#include "scheduler/job_service.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <memory>

#include "absl/synchronization/notification.h"
#include "common/executor.h"
#include "scheduler/event_hub.h"
#include "scheduler/job_type_registry.h"
#include "scheduler/testing/fake_job_store.h"

namespace aijobs::scheduler {
namespace {

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

TEST(JobServiceTest, WatchCancelledWhileItsJobIsDeletedFinishesOnce) {
  GatedStore store;
  EventHub hub;
  auto executor = std::make_unique<Executor>("test-exec", 2);
  JobTypeRegistry types(&store);
  JobServiceDeps deps;
  deps.store = &store;
  deps.hub = &hub;
  deps.dispatcher = nullptr;  // Watches never dispatch.
  deps.batcher = nullptr;     // ...nor submit.
  deps.executor = executor.get();
  deps.types = &types;
  JobServiceImpl service(deps);
  grpc::ServerBuilder builder;
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  auto channel = server->InProcessChannel(grpc::ChannelArguments());
  auto stub = v1::JobService::NewStub(channel);

  grpc::ClientContext ctx;
  v1::WatchJobRequest req;
  req.set_job_id("7d0b3c1e-1b7e-4d8e-9a51-0c8a3a8f2a11");
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

}  // namespace
}  // namespace aijobs::scheduler
