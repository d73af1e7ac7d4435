// RETURN_IF_ERROR and ASSIGN_OR_RETURN for functions returning absl::Status or
// absl::StatusOr<T>, as Google's and gRPC's code bases spell them.
//
//   RETURN_IF_ERROR(ApplyMigrations(*conn));
//   ASSIGN_OR_RETURN(auto conn, pg::Connection::Open(url));
//   ASSIGN_OR_RETURN(std::vector<Job> jobs, store->ListJobs(query));
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Returns the status of `expr` from the enclosing function when it is not OK.
#define RETURN_IF_ERROR(expr)                                 \
  do {                                                        \
    const ::absl::Status aijobs_status_macro_status = (expr); \
    if (!aijobs_status_macro_status.ok()) {                   \
      return aijobs_status_macro_status;                      \
    }                                                         \
  } while (false)

#define AIJOBS_STATUS_MACROS_CONCAT_INNER(a, b) a##b
#define AIJOBS_STATUS_MACROS_CONCAT(a, b) AIJOBS_STATUS_MACROS_CONCAT_INNER(a, b)

// Evaluates `rexpr` (an absl::StatusOr<T>); returns its status from the enclosing function when
// it is not OK, else moves its value into `lhs` (a declaration or an lvalue).
#define ASSIGN_OR_RETURN(lhs, rexpr) \
  AIJOBS_ASSIGN_OR_RETURN_IMPL(AIJOBS_STATUS_MACROS_CONCAT(aijobs_statusor_, __LINE__), lhs, rexpr)

#define AIJOBS_ASSIGN_OR_RETURN_IMPL(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                 \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = *std::move(statusor)
