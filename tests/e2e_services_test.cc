// The standard services every aijobs gRPC server registers: server reflection (so grpcurl
// and grpc_cli can explore the API) and grpc.health.v1. Spoken on the wire with the generic
// API and hand-encoded protobuf, so the test needs no extra generated code.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <string>

#include "absl/synchronization/notification.h"
#include "tests/e2e_cluster.h"

namespace aijobs::testing {
namespace {

// A length-delimited protobuf field (wire type 2) with a short value.
std::string StringField(int field, const std::string& value) {
  std::string out;
  out.push_back(static_cast<char>(field << 3 | 2));
  out.push_back(static_cast<char>(value.size()));  // values here are < 128 bytes
  return out + value;
}

grpc::ByteBuffer ToBuffer(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

std::string FromBuffer(const grpc::ByteBuffer& buffer) {
  grpc::Slice slice;
  if (!buffer.TrySingleSlice(&slice).ok()) (void)buffer.DumpToSingleSlice(&slice);
  return std::string(reinterpret_cast<const char*>(slice.begin()), slice.size());
}

// Sends one request on a bidi-streaming method and returns the first response's bytes.
absl::StatusOr<std::string> BidiRoundTrip(const std::string& address, const std::string& method,
                                          const std::string& request) {
  grpc::GenericStub stub(CreateTestChannel(address));
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auto call = stub.PrepareCall(&ctx, method, &cq);
  auto step = [&cq](int expected_tag) {
    void* tag = nullptr;
    bool ok = false;
    return cq.Next(&tag, &ok) && ok && tag == reinterpret_cast<void*>(expected_tag);
  };
  call->StartCall(reinterpret_cast<void*>(1));
  if (!step(1)) return absl::UnavailableError("call did not start");
  call->Write(ToBuffer(request), reinterpret_cast<void*>(2));
  if (!step(2)) return absl::UnavailableError("write failed");
  grpc::ByteBuffer response;
  call->Read(&response, reinterpret_cast<void*>(3));
  if (!step(3)) return absl::UnavailableError("no response");
  call->WritesDone(reinterpret_cast<void*>(4));
  step(4);
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  step(5);
  return FromBuffer(response);
}

class E2eServicesTest : public E2eTest {};

TEST_F(E2eServicesTest, ReflectionListsTheApiServices) {
  ASSERT_NO_FATAL_FAILURE(StartScheduler());
  // ServerReflectionRequest{list_services: "*"} (field 7).
  auto response = BidiRoundTrip(scheduler_address(),
                                "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                                StringField(7, "*"));
  ASSERT_TRUE(response.ok()) << response.status();
  for (const char* service :
       {"aijobs.v1.JobService", "aijobs.v1.WorkerService", "grpc.health.v1.Health"}) {
    EXPECT_NE(response->find(service), std::string::npos)
        << service << " missing from the reflection response";
  }
}

TEST_F(E2eServicesTest, HealthCheckSaysServing) {
  ASSERT_NO_FATAL_FAILURE(StartScheduler());
  grpc::GenericStub stub(CreateTestChannel(scheduler_address()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::ByteBuffer request = ToBuffer(""), response;  // HealthCheckRequest{service: ""}
  absl::Notification done;
  grpc::Status status;
  stub.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                 [&](grpc::Status s) {
                   status = std::move(s);
                   done.Notify();
                 });
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(15)));
  ASSERT_TRUE(status.ok()) << status.error_message();
  // HealthCheckResponse{status: SERVING (1)}: field 1, varint 1.
  EXPECT_EQ(FromBuffer(response), std::string("\x08\x01", 2));
}

}  // namespace
}  // namespace aijobs::testing
