// How the scheduler's RPCs answer: store errors turned into what a client may be told, the
// overload answer with its retry hint, and unary calls whose database work runs on an
// executor (never on gRPC's callback threads).
//
//   return RunOnExecutor(ctx, executor, [=] { return store->Something(); });
//   return FinishNow(ctx, absl::InvalidArgumentError("name must not be empty"));
#pragma once

#include <grpcpp/grpcpp.h>

#include <functional>

#include "absl/status/status.h"
#include "common/executor.h"

namespace aijobs::scheduler {

// What a client is told about a failure. A database error is logged in full and answered
// with a sentence for people and a reference to that log line: libpq's text can carry the
// server's address and internals, which are the operator's business, not the caller's.
grpc::Status ToClientStatus(const absl::Status& s);

// Finishes a unary call at once with `s`.
grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* ctx, const absl::Status& s);

// The answer to work an executor refused (`refused`: its RESOURCE_EXHAUSTED). Adds the retry
// hint to the trailing metadata, so call it before Finish.
grpc::Status Overloaded(grpc::CallbackServerContext* ctx, const absl::Status& refused);

// Runs `work` (database calls) on the executor and finishes the call with the status it
// returns; RESOURCE_EXHAUSTED at once when the executor is full.
grpc::ServerUnaryReactor* RunOnExecutor(grpc::CallbackServerContext* ctx, Executor* executor,
                                        std::function<absl::Status()> work);

}  // namespace aijobs::scheduler
