#include "scheduler/unary_call.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/status.h"
#include "common/uuid.h"
#include "spdlog/spdlog.h"

namespace aijobs::scheduler {
namespace {

// How long a caller turned away by a full executor is asked to wait.
constexpr absl::Duration kOverloadRetryAfter = absl::Seconds(1);

}  // namespace

// What a client is told about a failure. A database error is logged in full here and
// answered with a sentence for people and a reference to that log line: libpq's text can
// carry the server's address and internals ("connection to server at ... failed", "ERROR:
// timestamp out of range"), which are the operator's business, not the caller's.
grpc::Status ToClientStatus(const absl::Status& s) {
  if (s.ok() || !absl::StrContains(s.message(), "PostgreSQL")) return ToGrpcStatus(s);
  const std::string ref = NewUuid().substr(0, 8);
  spdlog::warn("database error {} answered as {}: {}", ref, absl::StatusCodeToString(s.code()),
               std::string(s.message()));
  std::string text;
  switch (s.code()) {
    case absl::StatusCode::kUnavailable:
      text = "the job database is unavailable; retry later";
      break;
    case absl::StatusCode::kDeadlineExceeded:
      text = "the job database did not answer in time; retry later";
      break;
    case absl::StatusCode::kInvalidArgument:
      text = "the job database refused a value of this request";
      break;
    default:
      text = "internal error";
  }
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()),
                      absl::StrCat(text, " (scheduler log reference ", ref, ")"));
}

grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* ctx, const absl::Status& s) {
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(ToClientStatus(s));
  return reactor;
}

// The answer to work an executor refused (`refused`: its RESOURCE_EXHAUSTED). Adds the retry
// hint to the trailing metadata, so call it before Finish.
grpc::Status Overloaded(grpc::CallbackServerContext* ctx, const absl::Status& refused) {
  std::string seconds = absl::StrCat(absl::ToInt64Seconds(kOverloadRetryAfter));
  ctx->AddTrailingMetadata("retry-after", seconds);
  ctx->AddTrailingMetadata("x-http-header-retry-after", seconds);
  return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                      absl::StrCat("scheduler overloaded (", refused.message(), "); retry in ",
                                   absl::FormatDuration(kOverloadRetryAfter)));
}

// Runs `work` (database calls) on the executor, never on gRPC's thread, and finishes the
// call with the status it returns; RESOURCE_EXHAUSTED at once when the executor is full.
grpc::ServerUnaryReactor* RunOnExecutor(grpc::CallbackServerContext* ctx, Executor* executor,
                                        std::function<absl::Status()> work) {
  auto* reactor = ctx->DefaultReactor();
  absl::Status queued = executor->TryRun(
      [reactor, work = std::move(work)] { reactor->Finish(ToClientStatus(work())); });
  if (!queued.ok()) reactor->Finish(Overloaded(ctx, queued));
  return reactor;
}

}  // namespace aijobs::scheduler
