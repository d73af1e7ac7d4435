// Job handlers: one class per job type, looked up by type in a HandlerRegistry. A handler is
// created per attempt, started once, and reports through its JobContext; it must not block
// (start an asynchronous LlmCall and return).
//
//   registry.Register("chat", [&provider](std::shared_ptr<JobContext> ctx) {
//     return std::make_shared<ChatHandler>(std::move(ctx), &provider); });
//   std::shared_ptr<JobHandler> h = registry.Create("chat", ctx);  h->Start();
#pragma once

#include <google/protobuf/struct.pb.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace aijobs::worker {

// What a handler sees of its job, and how it reports. Thread-safe. After the first
// Succeed/Fail (or after the worker cancelled the job) every further report is ignored, so a
// handler never needs to guard against reporting twice.
class JobContext {
 public:
  virtual ~JobContext() = default;

  virtual const std::string& job_id() const = 0;
  virtual int attempt() const = 0;
  virtual const google::protobuf::Struct& input() const = 0;
  // When the attempt is aborted as TIMEOUT; absl::InfiniteFuture() when it has none.
  virtual absl::Time deadline() const = 0;

  // Streams a piece of output to watchers. The text of all deltas, concatenated, is the
  // job's streamed output.
  virtual void EmitDelta(const std::string& text) = 0;
  // Finishes the attempt successfully with `result`.
  virtual void Succeed(google::protobuf::Struct result) = 0;
  // Finishes the attempt with a failure; `code` is a JobFailure code ("INVALID_INPUT",
  // "PROVIDER_ERROR", "SIM_FAILURE", ...). A zero `retry_after` means no hint.
  virtual void Fail(const std::string& code, const std::string& message, bool retryable,
                    absl::Duration retry_after = absl::ZeroDuration()) = 0;
};

class JobHandler {
 public:
  virtual ~JobHandler() = default;
  // Starts the job; returns without waiting for it. May report (e.g. Fail for bad input)
  // before returning.
  virtual void Start() = 0;
  // The cancellation hook: aborts the work (the worker has already reported the outcome:
  // CANCELLED or TIMEOUT). Called at most once, possibly concurrently with Start() or with
  // provider callbacks; after it returns the handler should report nothing more (reports are
  // ignored anyway).
  virtual void Cancel() = 0;
};

using HandlerFactory = std::function<std::shared_ptr<JobHandler>(std::shared_ptr<JobContext>)>;

// Maps job types to handler factories. Fill it before the worker starts; read-only after.
class HandlerRegistry {
 public:
  // Registers `factory` for `type`. ALREADY_EXISTS if the type is taken.
  absl::Status Register(const std::string& type, HandlerFactory factory);
  // Returns a new handler for `type`, or nullptr when no handler is registered for it.
  std::shared_ptr<JobHandler> Create(const std::string& type,
                                     std::shared_ptr<JobContext> context) const;
  bool Has(const std::string& type) const { return factories_.count(type) > 0; }
  // The registered types, sorted.
  std::vector<std::string> Types() const;

 private:
  std::map<std::string, HandlerFactory> factories_;
};

}  // namespace aijobs::worker
