// Conversions between absl::Status (used inside every module) and grpc::Status (used only
// at the RPC edge).
//
//   absl::Status s = store.GetJob(id).status();
//   if (!s.ok()) return aijobs::ToGrpcStatus(s);
//   absl::Status back = aijobs::FromGrpcStatus(grpc_status);
//   if (IsTransient(s)) { /* back off and try the same call again */ }
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace aijobs {

// Returns the grpc::Status with the same code and message.
grpc::Status ToGrpcStatus(const absl::Status& status);

// Returns the absl::Status with the same code and message.
absl::Status FromGrpcStatus(const grpc::Status& status);

// Returns "CODE_NAME: message" for logs and the CLI, e.g. "NOT_FOUND: job 1 not found".
std::string DescribeGrpcStatus(const grpc::Status& status);

// Returns true for the codes that mean "the same call may succeed later": UNAVAILABLE (retry
// the call), ABORTED (retry the transaction) and DEADLINE_EXCEEDED. Any other error will fail
// again the same way, so a retry loop must not spin on it.
bool IsTransient(const absl::Status& status);

}  // namespace aijobs
