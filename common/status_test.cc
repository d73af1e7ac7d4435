#include "common/status.h"

#include <gtest/gtest.h>

namespace aijobs {
namespace {

TEST(StatusTest, RoundTripsCodeAndMessage) {
  absl::Status s = absl::NotFoundError("job 42 not found");
  grpc::Status g = ToGrpcStatus(s);
  EXPECT_EQ(g.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(g.error_message(), "job 42 not found");
  EXPECT_EQ(FromGrpcStatus(g), s);
  EXPECT_EQ(DescribeGrpcStatus(g), "NOT_FOUND: job 42 not found");
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
}

TEST(IsTransientTest, OnlyRetryableCodes) {
  EXPECT_TRUE(IsTransient(absl::UnavailableError("x")));
  EXPECT_TRUE(IsTransient(absl::AbortedError("x")));
  EXPECT_TRUE(IsTransient(absl::DeadlineExceededError("x")));
  EXPECT_FALSE(IsTransient(absl::OkStatus()));
  EXPECT_FALSE(IsTransient(absl::InvalidArgumentError("x")));
  EXPECT_FALSE(IsTransient(absl::InternalError("x")));
  EXPECT_FALSE(IsTransient(absl::FailedPreconditionError("x")));
  EXPECT_FALSE(IsTransient(absl::AlreadyExistsError("x")));
}

}  // namespace
}  // namespace aijobs
