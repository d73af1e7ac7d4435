// WatchReadBatcher with a fake store: reads queued while one batch is being read are answered
// together by one ReadEventsBatch, each caller gets its own page, and a full queue refuses.
#include "scheduler/watch_read_batcher.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "scheduler/testing/fake_job_store.h"

namespace aijobs::scheduler {
namespace {

// ReadEventsBatch blocks until the gate opens and records the size of every batch.
class GatedStore : public FakeJobStore {
 public:
  void OpenGate() {
    absl::MutexLock lock(&mu_);
    open_ = true;
  }
  bool WaitForCalls(int n) {
    absl::MutexLock lock(&mu_);
    auto started = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return calls_ >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&started), absl::Seconds(10));
  }
  std::vector<size_t> sizes() {
    absl::MutexLock lock(&mu_);
    return sizes_;
  }
  absl::StatusOr<std::vector<absl::StatusOr<EventPage>>> ReadEventsBatch(
      const std::vector<EventQuery>& queries, int) override {
    absl::MutexLock lock(&mu_);
    ++calls_;
    sizes_.push_back(queries.size());
    auto open = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return open_; };
    mu_.Await(absl::Condition(&open));
    std::vector<absl::StatusOr<EventPage>> out;
    for (const EventQuery& q : queries) {
      if (q.job_id == "missing") {
        out.push_back(absl::NotFoundError("job missing not found"));
        continue;
      }
      EventPage page;
      page.job.set_id(q.job_id);
      out.push_back(std::move(page));
    }
    return out;
  }

 private:
  absl::Mutex mu_;
  bool open_ ABSL_GUARDED_BY(mu_) = false;
  int calls_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<size_t> sizes_ ABSL_GUARDED_BY(mu_);
};

TEST(WatchReadBatcherTest, ReadsQueuedMeanwhileShareOneBatchAndEachGetsItsOwnPage) {
  GatedStore store;
  WatchReadBatcher batcher(&store, /*readers=*/1);
  absl::Mutex mu;
  std::vector<std::string> got(6);
  int answered = 0;
  auto done = [&](int i) {
    return [&, i](absl::StatusOr<EventPage> page) {
      absl::MutexLock lock(&mu);
      got[i] = page.ok() ? page->job.id() : std::string(page.status().message());
      ++answered;
    };
  };
  ASSERT_TRUE(batcher.Read({Caller{}, "job-0", 0}, done(0)).ok());
  ASSERT_TRUE(store.WaitForCalls(1));
  for (int i = 1; i < 6; ++i) {
    std::string id = i == 3 ? "missing" : "job-" + std::to_string(i);
    ASSERT_TRUE(batcher.Read({Caller{}, id, 0}, done(i)).ok());
  }
  store.OpenGate();
  batcher.Stop();
  EXPECT_EQ(answered, 6);
  EXPECT_THAT(store.sizes(), ::testing::ElementsAre(1u, 5u));
  EXPECT_THAT(got, ::testing::ElementsAre("job-0", "job-1", "job-2", "job missing not found",
                                          "job-4", "job-5"));
}

TEST(WatchReadBatcherTest, AFullQueueRefusesWithoutCallingBack) {
  GatedStore store;
  WatchReadBatcher batcher(&store, /*readers=*/1, /*page_limit=*/10, /*max_batch=*/256,
                           /*max_pending=*/2);
  int called = 0;
  auto count = [&](absl::StatusOr<EventPage>) { ++called; };
  ASSERT_TRUE(batcher.Read({Caller{}, "a", 0}, count).ok());
  ASSERT_TRUE(batcher.Read({Caller{}, "b", 0}, count).ok());
  absl::Status refused = batcher.Read({Caller{}, "c", 0}, count);
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted) << refused;
  store.OpenGate();
  batcher.Stop();
  EXPECT_EQ(called, 2);
}

}  // namespace
}  // namespace aijobs::scheduler
