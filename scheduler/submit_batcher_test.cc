// SubmitBatcher with a fake store: concurrent submits share INSERT statements within a count
// and byte budget, each caller gets its own outcome, a transient failure reaches every caller
// of that batch, and a job the database refuses fails alone.
#include "scheduler/submit_batcher.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/uuid.h"
#include "scheduler/testing/fake_job_store.h"

namespace aijobs::scheduler {
namespace {

using ::testing::ElementsAre;

constexpr absl::Duration kWait = absl::Seconds(10);

// Records every InsertJobs batch. While the gate is closed, InsertJobs blocks, so the test
// decides when a batch "commits"; calls whose number is in fail_calls return UNAVAILABLE.
// The other calls answer UNIMPLEMENTED.
class GatedJobStore : public FakeJobStore {
 public:
  void OpenGate() {
    absl::MutexLock lock(&mu_);
    gate_open_ = true;
  }
  void FailCall(int n) {
    absl::MutexLock lock(&mu_);
    fail_calls_.push_back(n);
  }
  // Waits until `n` InsertJobs calls have started.
  bool WaitForCalls(int n) {
    absl::MutexLock lock(&mu_);
    auto started = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return calls_started_ >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&started), kWait);
  }
  std::vector<size_t> batch_sizes() {
    absl::MutexLock lock(&mu_);
    return batch_sizes_;
  }
  // Input bytes of every call that committed.
  std::vector<size_t> batch_bytes() {
    absl::MutexLock lock(&mu_);
    return batch_bytes_;
  }

  absl::StatusOr<std::vector<SubmitOutcome>> InsertJobs(const std::vector<NewJob>& jobs) override {
    absl::MutexLock lock(&mu_);
    int call = ++calls_started_;
    batch_sizes_.push_back(jobs.size());
    auto open = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return gate_open_; };
    mu_.Await(absl::Condition(&open));
    if (std::find(fail_calls_.begin(), fail_calls_.end(), call) != fail_calls_.end()) {
      return absl::UnavailableError("database is restarting");
    }
    size_t bytes = 0;
    for (const NewJob& j : jobs) {
      bytes += j.spec.ByteSizeLong();
      // As PostgreSQL refuses a whole statement for one value it cannot take.
      if (j.idempotency_key && j.idempotency_key->find('\0') != std::string::npos) {
        return absl::InvalidArgumentError(
            "PostgreSQL: ERROR:  malformed array literal: \"{\"k1\",\"" + std::string("...") +
            "\" (parameter $8)");
      }
    }
    batch_bytes_.push_back(bytes);
    std::vector<SubmitOutcome> out;
    for (const NewJob& j : jobs) {
      SubmitOutcome& o = out.emplace_back();
      o.job.set_id(j.id);
      o.job.set_type(j.type);
      o.job.set_state(v1::QUEUED);
      o.job.set_tenant_id(j.caller.tenant_id);
      o.job.set_last_seq(1);
    }
    return out;
  }

 private:
  absl::Mutex mu_;
  bool gate_open_ ABSL_GUARDED_BY(mu_) = false;
  int calls_started_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<int> fail_calls_ ABSL_GUARDED_BY(mu_);
  std::vector<size_t> batch_sizes_ ABSL_GUARDED_BY(mu_);
  std::vector<size_t> batch_bytes_ ABSL_GUARDED_BY(mu_);
};

// Collects the answers of many submits.
class Answers {
 public:
  explicit Answers(size_t n) : results_(n) {}
  SubmitBatcher::Callback For(size_t i) {
    return [this, i](absl::StatusOr<SubmitOutcome> r) {
      absl::MutexLock lock(&mu_);
      results_[i] = std::move(r);
      ++done_;
    };
  }
  bool WaitAll(absl::Duration timeout = kWait) {
    absl::MutexLock lock(&mu_);
    auto all = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return done_ == results_.size(); };
    return mu_.AwaitWithTimeout(absl::Condition(&all), timeout);
  }
  absl::StatusOr<SubmitOutcome> Get(size_t i) {
    absl::MutexLock lock(&mu_);
    return results_[i].value_or(absl::InternalError("no answer"));
  }
  size_t done() {
    absl::MutexLock lock(&mu_);
    return done_;
  }

 private:
  absl::Mutex mu_;
  std::vector<std::optional<absl::StatusOr<SubmitOutcome>>> results_ ABSL_GUARDED_BY(mu_);
  size_t done_ ABSL_GUARDED_BY(mu_) = 0;
};

NewJob MakeJob(const std::string& tenant = "default") {
  NewJob j;
  j.id = NewUuid();
  j.type = "chat";
  j.caller.tenant_id = tenant;
  return j;
}

TEST(SubmitBatcherTest, ConcurrentSubmitsAreGroupedAndEachGetsItsOwnJob) {
  constexpr int kSubmits = 32;
  GatedJobStore store;
  std::atomic<int> inserted_batches{0};
  SubmitBatcher batcher(
      &store, [&] { inserted_batches++; }, /*writers=*/4);

  Answers answers(kSubmits);
  std::vector<std::string> ids(kSubmits);
  std::vector<std::thread> threads;
  for (int i = 0; i < kSubmits; ++i) {
    ids[i] = NewUuid();
    threads.emplace_back([&, i] {
      NewJob j = MakeJob("tenant-" + std::to_string(i));
      j.id = ids[i];
      batcher.Submit(std::move(j), answers.For(i));
    });
  }
  for (auto& t : threads) t.join();
  // Every submit is queued before the first batch commits.
  store.OpenGate();
  ASSERT_TRUE(answers.WaitAll());

  std::vector<size_t> sizes = store.batch_sizes();
  size_t total = 0;
  for (size_t s : sizes) total += s;
  EXPECT_EQ(total, static_cast<size_t>(kSubmits));
  EXPECT_LT(sizes.size(), static_cast<size_t>(kSubmits)) << "submits were not grouped";
  // At most one blocked batch per writer, then one batch for everything else.
  EXPECT_LE(sizes.size(), 5u);
  for (int i = 0; i < kSubmits; ++i) {
    absl::StatusOr<SubmitOutcome> r = answers.Get(i);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->job.id(), ids[i]) << "caller " << i << " got someone else's job";
    EXPECT_EQ(r->job.tenant_id(), "tenant-" + std::to_string(i));
    EXPECT_FALSE(r->existing);
  }
  batcher.Stop();
  EXPECT_EQ(inserted_batches.load(), static_cast<int>(sizes.size()));
}

TEST(SubmitBatcherTest, StoreErrorReachesEveryCallerOfThatBatch) {
  GatedJobStore store;
  store.FailCall(2);
  std::atomic<int> inserted_batches{0};
  SubmitBatcher batcher(
      &store, [&] { inserted_batches++; }, /*writers=*/1);

  Answers answers(4);
  batcher.Submit(MakeJob(), answers.For(0));
  ASSERT_TRUE(store.WaitForCalls(1));  // batch 1 = {0}, blocked in the store
  batcher.Submit(MakeJob(), answers.For(1));
  batcher.Submit(MakeJob(), answers.For(2));
  batcher.Submit(MakeJob(), answers.For(3));
  store.OpenGate();
  ASSERT_TRUE(answers.WaitAll());

  EXPECT_THAT(store.batch_sizes(), ElementsAre(1u, 3u));
  EXPECT_TRUE(answers.Get(0).ok()) << answers.Get(0).status();
  for (size_t i = 1; i < 4; ++i) {
    absl::Status s = answers.Get(i).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << i << ": " << s;
    EXPECT_EQ(s.message(), "database is restarting");
  }
  EXPECT_EQ(inserted_batches.load(), 1) << "on_inserted runs only for committed batches";
}

// Regression (issue 10 item 4): one submit the database refused (a NUL in its idempotency
// key broke the statement's array literal) failed every other submit of its batch.
TEST(SubmitBatcherTest, RefusedItemFailsAloneAndTheRestOfItsBatchCommits) {
  GatedJobStore store;
  std::atomic<int> inserted_batches{0};
  SubmitBatcher batcher(
      &store, [&] { inserted_batches++; }, /*writers=*/1);
  constexpr size_t kSubmits = 9;
  Answers answers(kSubmits);
  batcher.Submit(MakeJob(), answers.For(0));
  ASSERT_TRUE(store.WaitForCalls(1));  // batch 1 = {0}, blocked in the store
  std::vector<std::thread> threads;
  for (size_t i = 1; i < kSubmits; ++i) {
    threads.emplace_back([&, i] {
      NewJob j = MakeJob();
      j.idempotency_key = i == 5 ? std::string("k\0x", 3) : "key-" + std::to_string(i);
      batcher.Submit(std::move(j), answers.For(i));
    });
  }
  for (auto& t : threads) t.join();
  store.OpenGate();
  ASSERT_TRUE(answers.WaitAll());
  for (size_t i = 0; i < kSubmits; ++i) {
    absl::StatusOr<SubmitOutcome> r = answers.Get(i);
    if (i == 5) {
      EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
      EXPECT_THAT(std::string(r.status().message()), ::testing::HasSubstr("malformed array"));
    } else {
      EXPECT_TRUE(r.ok()) << i << ": " << r.status();
    }
  }
  EXPECT_EQ(store.batch_sizes()[1], kSubmits - 1) << "the others were in one batch";
  EXPECT_LE(store.batch_sizes().size(), 10u) << "splitting costs a few statements";
}

// Regression (issue 9 bug 2): batches were capped by count only, so many large inputs made
// one statement too big to carry and every submit in it failed.
TEST(SubmitBatcherTest, BatchesStayWithinTheByteBudget) {
  GatedJobStore store;
  SubmitBatcher batcher(&store, nullptr, /*writers=*/1, /*max_batch=*/1024,
                        /*max_batch_bytes=*/4000);
  constexpr size_t kSubmits = 12;
  Answers answers(kSubmits);
  batcher.Submit(MakeJob(), answers.For(0));
  ASSERT_TRUE(store.WaitForCalls(1));
  for (size_t i = 1; i < kSubmits; ++i) {
    NewJob j = MakeJob();
    (*j.spec.mutable_input()->mutable_fields())["text"].set_string_value(
        std::string(i == kSubmits - 1 ? 10000 : 1000, 'x'));
    batcher.Submit(std::move(j), answers.For(i));
  }
  store.OpenGate();
  ASSERT_TRUE(answers.WaitAll());
  for (size_t i = 0; i < kSubmits; ++i) EXPECT_TRUE(answers.Get(i).ok()) << i;
  std::vector<size_t> bytes = store.batch_bytes();
  EXPECT_GE(bytes.size(), 4u);
  for (size_t b : bytes) {
    if (b > 10000) continue;  // one input over the budget goes alone
    EXPECT_LE(b, 4000u);
  }
}

TEST(SubmitBatcherTest, StopAnswersQueuedSubmitsThenRefusesNewOnes) {
  GatedJobStore store;
  SubmitBatcher batcher(&store, nullptr, /*writers=*/1);
  Answers answers(3);
  batcher.Submit(MakeJob(), answers.For(0));
  ASSERT_TRUE(store.WaitForCalls(1));
  batcher.Submit(MakeJob(), answers.For(1));
  batcher.Submit(MakeJob(), answers.For(2));
  store.OpenGate();
  batcher.Stop();
  EXPECT_EQ(answers.done(), 3u) << "Stop returned before answering queued submits";
  for (size_t i = 0; i < 3; ++i) EXPECT_TRUE(answers.Get(i).ok()) << i;

  absl::Status late;
  bool answered = false;
  batcher.Submit(MakeJob(), [&](absl::StatusOr<SubmitOutcome> r) {
    late = r.status();
    answered = true;
  });
  EXPECT_TRUE(answered) << "a submit after Stop is answered at once";
  EXPECT_EQ(late.code(), absl::StatusCode::kUnavailable);
}

TEST(SubmitBatcherTest, JobWhoseCallerStoppedWaitingIsNotCreated) {
  GatedJobStore store;
  SubmitBatcher batcher(&store, nullptr, /*writers=*/1);
  Answers answers(3);
  // The first batch blocks the only writer; the next two wait behind it, one of them with a
  // deadline that passes meanwhile.
  batcher.Submit(MakeJob(), answers.For(0));
  ASSERT_TRUE(store.WaitForCalls(1));
  batcher.Submit(MakeJob(), answers.For(1), absl::Now() + absl::Milliseconds(20));
  batcher.Submit(MakeJob(), answers.For(2), absl::Now() + absl::Hours(1));
  absl::SleepFor(absl::Milliseconds(50));
  store.OpenGate();
  ASSERT_TRUE(answers.WaitAll());
  EXPECT_TRUE(answers.Get(0).ok());
  absl::Status late = answers.Get(1).status();
  EXPECT_EQ(late.code(), absl::StatusCode::kDeadlineExceeded) << late;
  EXPECT_THAT(std::string(late.message()), ::testing::HasSubstr("was not created"));
  EXPECT_TRUE(answers.Get(2).ok());
  batcher.Stop();
  // The expired job never reached the store: the second statement held only the live one.
  EXPECT_THAT(store.batch_sizes(), ElementsAre(1u, 1u));
}

}  // namespace
}  // namespace aijobs::scheduler
