#include "common/status_macros.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>

namespace aijobs {
namespace {

absl::Status Fails() { return absl::NotFoundError("missing"); }
absl::StatusOr<std::unique_ptr<std::string>> Value(bool ok) {
  if (!ok) return absl::UnavailableError("down");
  return std::make_unique<std::string>("v");
}

absl::Status UsesReturnIfError(bool fail, int* reached) {
  if (fail) RETURN_IF_ERROR(Fails());
  RETURN_IF_ERROR(absl::OkStatus());
  ++*reached;
  return absl::OkStatus();
}

absl::StatusOr<std::string> UsesAssignOrReturn(bool ok) {
  ASSIGN_OR_RETURN(std::unique_ptr<std::string> v, Value(ok));  // move-only values work
  std::string out;
  ASSIGN_OR_RETURN(out, absl::StatusOr<std::string>(*v + "!"));  // into an existing lvalue
  return out;
}

TEST(StatusMacrosTest, ReturnIfErrorReturnsTheFirstFailure) {
  int reached = 0;
  EXPECT_EQ(UsesReturnIfError(true, &reached).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(reached, 0);
  EXPECT_TRUE(UsesReturnIfError(false, &reached).ok());
  EXPECT_EQ(reached, 1);
}

TEST(StatusMacrosTest, AssignOrReturnMovesTheValueOrReturnsTheStatus) {
  EXPECT_EQ(*UsesAssignOrReturn(true), "v!");
  EXPECT_EQ(UsesAssignOrReturn(false).status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace aijobs
