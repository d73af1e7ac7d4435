// AttemptFinisher with a scripted store: a finished result is never dropped. Transient
// database errors are retried until the write succeeds, a batch the database refuses is
// split so only the refused outcome fails (its job FAILED with the reason), and batches stay
// within their byte budget.
#include "scheduler/attempt_finisher.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/uuid.h"
#include "scheduler/event_hub.h"
#include "scheduler/testing/fake_job_store.h"

namespace aijobs::scheduler {
namespace {

using ::testing::HasSubstr;
using Kind = AttemptOutcome::Kind;

constexpr absl::Duration kWait = absl::Seconds(10);

// FinishAttempts: blocks while the gate is closed, fails the first `transient_failures` calls
// with UNAVAILABLE, refuses (INVALID_ARGUMENT, as PostgreSQL does for a malformed value) every
// batch holding a result with field "poison", and otherwise records each outcome as written.
class ScriptedStore : public FakeJobStore {
 public:
  void OpenGate() {
    absl::MutexLock lock(&mu_);
    gate_open_ = true;
  }
  void FailTransiently(int calls, absl::StatusCode code = absl::StatusCode::kUnavailable) {
    absl::MutexLock lock(&mu_);
    transient_failures_ = calls;
    transient_code_ = code;
  }
  bool WaitForCalls(int n) {
    absl::MutexLock lock(&mu_);
    auto started = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return calls_ >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&started), kWait);
  }
  // Waits until `n` distinct jobs were written.
  bool WaitForWritten(size_t n) {
    absl::MutexLock lock(&mu_);
    auto done = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return written_.size() >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&done), kWait);
  }
  std::map<std::string, AttemptOutcome> written() {
    absl::MutexLock lock(&mu_);
    return written_;
  }
  // Result + error + output bytes of every call that reached the "database".
  std::vector<size_t> call_bytes() {
    absl::MutexLock lock(&mu_);
    return call_bytes_;
  }
  int calls() {
    absl::MutexLock lock(&mu_);
    return calls_;
  }

  absl::StatusOr<std::vector<v1::Job>> FinishAttempts(
      const std::vector<AttemptOutcome>& outcomes) override {
    absl::MutexLock lock(&mu_);
    ++calls_;
    auto open = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return gate_open_; };
    mu_.Await(absl::Condition(&open));
    if (transient_failures_ > 0) {
      --transient_failures_;
      return absl::Status(transient_code_, "database is restarting");
    }
    size_t bytes = 0;
    for (const AttemptOutcome& o : outcomes) {
      bytes += o.result.ByteSizeLong() + o.error.ByteSizeLong() + o.unflushed.ByteSizeLong();
      if (o.result.fields().count("poison")) {
        return absl::InvalidArgumentError(
            "PostgreSQL: ERROR:  invalid byte sequence for encoding \"UTF8\" (parameter $4)");
      }
    }
    call_bytes_.push_back(bytes);
    std::vector<v1::Job> jobs;
    for (const AttemptOutcome& o : outcomes) {
      written_[o.job_id] = o;
      v1::Job& job = jobs.emplace_back();
      job.set_id(o.job_id);
      job.set_attempt(o.attempt);
      job.set_state(o.kind == Kind::kSucceeded ? v1::SUCCEEDED : v1::FAILED);
      if (o.kind != Kind::kSucceeded) *job.mutable_error() = o.error;
      job.set_last_seq(o.last_seq + 1);
    }
    return jobs;
  }

 private:
  absl::Mutex mu_;
  bool gate_open_ ABSL_GUARDED_BY(mu_) = false;
  int transient_failures_ ABSL_GUARDED_BY(mu_) = 0;
  absl::StatusCode transient_code_ ABSL_GUARDED_BY(mu_) = absl::StatusCode::kUnavailable;
  int calls_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, AttemptOutcome> written_ ABSL_GUARDED_BY(mu_);
  std::vector<size_t> call_bytes_ ABSL_GUARDED_BY(mu_);
};

AttemptFinisherOptions FastOptions() {
  AttemptFinisherOptions o;
  o.threads = 1;
  o.initial_backoff = absl::Microseconds(100);
  o.max_backoff = absl::Milliseconds(1);
  return o;
}

AttemptOutcome Success(const std::string& text) {
  AttemptOutcome o;
  o.job_id = NewUuid();
  o.attempt = 1;
  o.kind = Kind::kSucceeded;
  (*o.result.mutable_fields())["text"].set_string_value(text);
  o.last_seq = 5;
  return o;
}

v1::internal::DeltaBatch Output(const std::string& text) {
  v1::internal::DeltaBatch batch;
  batch.set_attempt(1);
  auto* piece = batch.add_pieces();
  piece->set_seq(5);
  piece->set_text(text);
  return batch;
}

// Regression (issue 9 bug 2): a batch the database refused was retried 50 times as a whole
// and then dropped, losing every finished result in it. Now only the refused outcome fails,
// and its job is ended FAILED with the reason instead of silently staying RUNNING.
TEST(AttemptFinisherTest, RefusedOutcomeFailsAloneAndTheRestOfItsBatchIsWritten) {
  ScriptedStore store;
  EventHub hub;
  AttemptFinisher finisher(&store, &hub, nullptr, FastOptions());
  finisher.Submit(Success("first"), {});
  ASSERT_TRUE(store.WaitForCalls(1));  // batch 1 = {first}, held in the store
  std::vector<AttemptOutcome> batch;
  for (int i = 0; i < 7; ++i) batch.push_back(Success(absl::StrCat("answer ", i)));
  (*batch[4].result.mutable_fields())["poison"].set_bool_value(true);
  const std::string bad_id = batch[4].job_id;
  for (const AttemptOutcome& o : batch) finisher.Submit(o, Output("partial " + o.job_id));
  store.OpenGate();
  ASSERT_TRUE(store.WaitForWritten(8)) << "finished results were dropped";
  finisher.Flush();

  std::map<std::string, AttemptOutcome> written = store.written();
  for (const AttemptOutcome& o : batch) {
    ASSERT_TRUE(written.count(o.job_id)) << o.job_id;
    const AttemptOutcome& w = written[o.job_id];
    if (o.job_id == bad_id) continue;
    EXPECT_EQ(w.kind, Kind::kSucceeded);
    EXPECT_EQ(w.result.fields().at("text").string_value(),
              o.result.fields().at("text").string_value());
    EXPECT_EQ(w.unflushed.pieces_size(), 1) << "its output is written with it";
  }
  const AttemptOutcome& bad = written[bad_id];
  EXPECT_EQ(bad.kind, Kind::kFatalFailure);
  EXPECT_EQ(bad.attempt, 1) << "still fenced by its attempt";
  EXPECT_EQ(bad.error.code(), "RESULT_NOT_STORED");
  EXPECT_THAT(bad.error.message(), HasSubstr("invalid byte sequence"));
  EXPECT_FALSE(bad.error.retryable());
  // Splitting costs a few statements, not a retry storm.
  EXPECT_LE(store.calls(), 12);
}

// Regression (issue 9 bug 2): after 50 transient failures in a row the batch was dropped.
TEST(AttemptFinisherTest, TransientErrorsAreRetriedUntilTheWriteSucceeds) {
  for (absl::StatusCode code : {absl::StatusCode::kUnavailable, absl::StatusCode::kAborted,
                                absl::StatusCode::kDeadlineExceeded}) {
    ScriptedStore store;
    store.FailTransiently(120, code);
    store.OpenGate();
    EventHub hub;
    AttemptFinisher finisher(&store, &hub, nullptr, FastOptions());
    AttemptOutcome o = Success("paid for");
    finisher.Submit(o, {});
    ASSERT_TRUE(store.WaitForWritten(1)) << absl::StatusCodeToString(code);
    EXPECT_EQ(store.written().at(o.job_id).kind, Kind::kSucceeded);
    EXPECT_EQ(store.calls(), 121);
  }
}

// Regression (issue 9 bug 2): batches were capped by count only, so large results could
// make one statement too big to carry.
TEST(AttemptFinisherTest, BatchesStayWithinTheByteBudget) {
  ScriptedStore store;
  EventHub hub;
  AttemptFinisherOptions options = FastOptions();
  options.max_batch_bytes = 4000;
  AttemptFinisher finisher(&store, &hub, nullptr, options);
  finisher.Submit(Success("first"), {});
  ASSERT_TRUE(store.WaitForCalls(1));
  for (int i = 0; i < 10; ++i) finisher.Submit(Success(std::string(1000, 'a' + i)), {});
  // One outcome over the budget on its own still goes (alone).
  finisher.Submit(Success(std::string(10000, 'z')), {});
  store.OpenGate();
  ASSERT_TRUE(store.WaitForWritten(12));
  finisher.Flush();
  std::vector<size_t> bytes = store.call_bytes();
  EXPECT_GE(bytes.size(), 5u);
  for (size_t b : bytes) {
    if (b > 10000) continue;  // the big one
    EXPECT_LE(b, 4000u);
  }
}

TEST(AttemptFinisherTest, StopEndsRetriesOfAnOutage) {
  ScriptedStore store;
  store.FailTransiently(1 << 30);
  store.OpenGate();
  EventHub hub;
  AttemptFinisherOptions options = FastOptions();
  options.max_backoff = absl::Seconds(30);  // Stop must not wait out a backoff
  AttemptFinisher finisher(&store, &hub, nullptr, options);
  finisher.Submit(Success("x"), {});
  ASSERT_TRUE(store.WaitForCalls(3));
  absl::Time start = absl::Now();
  finisher.Stop();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  EXPECT_TRUE(store.written().empty());
}

}  // namespace
}  // namespace aijobs::scheduler
