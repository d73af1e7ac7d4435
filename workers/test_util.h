// Test helpers for the worker's unit tests (not part of the library): a JobContext that
// records what a handler reports, and sinks that record what a provider delivers.
//
//   auto ctx = std::make_shared<FakeJobContext>(input);
//   handler.Start();
//   ASSERT_TRUE(ctx->WaitFinished(absl::Seconds(5)));
#pragma once

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "workers/job_handler.h"
#include "workers/llm_provider.h"

namespace aijobs::worker::testing {

// Parses JSON into a Struct; empty Struct on a parse error (the test then fails on content).
inline google::protobuf::Struct JsonStruct(const std::string& json) {
  google::protobuf::Struct s;
  (void)google::protobuf::util::JsonStringToMessage(json, &s);
  return s;
}

struct RecordedFailure {
  std::string code;
  std::string message;
  bool retryable = false;
  absl::Duration retry_after;
};

class FakeJobContext : public JobContext {
 public:
  explicit FakeJobContext(google::protobuf::Struct input, int attempt = 1)
      : input_(std::move(input)), attempt_(attempt) {}

  const std::string& job_id() const override { return job_id_; }
  int attempt() const override { return attempt_; }
  const google::protobuf::Struct& input() const override { return input_; }
  absl::Time deadline() const override { return absl::InfiniteFuture(); }

  void EmitDelta(const std::string& text) override {
    absl::MutexLock lock(&mu_);
    if (finished_) ++reports_after_finish_;
    deltas_.push_back(text);
  }
  void Succeed(google::protobuf::Struct result) override {
    absl::MutexLock lock(&mu_);
    if (finished_) ++reports_after_finish_;
    finished_ = true;
    result_ = std::move(result);
  }
  void Fail(const std::string& code, const std::string& message, bool retryable,
            absl::Duration retry_after) override {
    absl::MutexLock lock(&mu_);
    if (finished_) ++reports_after_finish_;
    finished_ = true;
    failure_ = RecordedFailure{code, message, retryable, retry_after};
  }

  bool WaitFinished(absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(absl::Condition(&finished_), timeout);
  }
  // Waits until at least n deltas arrived. One waiter at a time.
  bool WaitDeltas(size_t n, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    wait_n_ = n;
    return mu_.AwaitWithTimeout(absl::Condition(this, &FakeJobContext::HasEnoughDeltas), timeout);
  }

  std::vector<std::string> deltas() const {
    absl::MutexLock lock(&mu_);
    return deltas_;
  }
  std::optional<google::protobuf::Struct> result() const {
    absl::MutexLock lock(&mu_);
    return result_;
  }
  std::optional<RecordedFailure> failure() const {
    absl::MutexLock lock(&mu_);
    return failure_;
  }
  int reports_after_finish() const {
    absl::MutexLock lock(&mu_);
    return reports_after_finish_;
  }

 private:
  const google::protobuf::Struct input_;
  const int attempt_;
  const std::string job_id_ = "job-1";
  mutable absl::Mutex mu_;
  size_t wait_n_ = 0;
  bool HasEnoughDeltas() const { return deltas_.size() >= wait_n_; }
  bool finished_ = false;
  int reports_after_finish_ = 0;
  std::vector<std::string> deltas_;
  std::optional<google::protobuf::Struct> result_;
  std::optional<RecordedFailure> failure_;
};

// Records one chat call.
class RecordingChatSink : public ChatSink {
 public:
  void OnDelta(const std::string& text) override {
    absl::MutexLock lock(&mu_);
    if (finished_) ++events_after_finish_;
    deltas_.push_back(text);
  }
  void OnDone(const Usage& usage, const std::string& model) override {
    absl::MutexLock lock(&mu_);
    if (finished_) ++events_after_finish_;
    finished_ = true;
    usage_ = usage;
    model_ = model;
  }
  void OnError(const ProviderError& error) override {
    absl::MutexLock lock(&mu_);
    if (finished_) ++events_after_finish_;
    finished_ = true;
    error_ = error;
  }
  bool WaitFinished(absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(absl::Condition(&finished_), timeout);
  }
  bool finished() const {
    absl::MutexLock lock(&mu_);
    return finished_;
  }
  // Waits until at least n deltas arrived. One waiter at a time.
  bool WaitDeltas(size_t n, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    wait_n_ = n;
    return mu_.AwaitWithTimeout(absl::Condition(this, &RecordingChatSink::HasEnoughDeltas),
                                timeout);
  }
  std::vector<std::string> deltas() const {
    absl::MutexLock lock(&mu_);
    return deltas_;
  }
  std::string text() const {
    std::string t;
    for (const std::string& d : deltas()) t += d;
    return t;
  }
  Usage usage() const {
    absl::MutexLock lock(&mu_);
    return usage_;
  }
  std::string model() const {
    absl::MutexLock lock(&mu_);
    return model_;
  }
  std::optional<ProviderError> error() const {
    absl::MutexLock lock(&mu_);
    return error_;
  }
  int events_after_finish() const {
    absl::MutexLock lock(&mu_);
    return events_after_finish_;
  }

 protected:
  mutable absl::Mutex mu_;
  bool finished_ = false;
  int events_after_finish_ = 0;
  std::vector<std::string> deltas_;
  Usage usage_;
  std::string model_;
  std::optional<ProviderError> error_;
  size_t wait_n_ = 0;
  bool HasEnoughDeltas() const { return deltas_.size() >= wait_n_; }
};

}  // namespace aijobs::worker::testing
