// EventHub without a database: sequence numbers of an attempt's deltas, live fan-out, the
// buffered events a late subscriber gets, the flusher hand-off and attempt tails.
#include "scheduler/event_hub.h"

#include <gmock/gmock.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/time_util.h"
#include "scheduler/testing/recording_sink.h"

namespace aijobs::scheduler {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

const std::string kJob = "0b6c5c3e-1f0a-4c1e-9d5e-6a4f3b2c1d0e";
const std::string kOtherJob = "1b6c5c3e-1f0a-4c1e-9d5e-6a4f3b2c1d0e";

std::string Describe(const v1::JobEvent& e) {
  switch (e.event_case()) {
    case v1::JobEvent::kStateChange:
      return absl::StrCat(e.seq(), " state ", v1::JobState_Name(e.state_change().state()));
    case v1::JobEvent::kOutputDelta:
      return absl::StrCat(e.seq(), " a", e.output_delta().attempt(), " ", e.output_delta().text());
    case v1::JobEvent::kFinalJob:
      return absl::StrCat(e.seq(), " final ", v1::JobState_Name(e.final_job().state()));
    default:
      return absl::StrCat(e.seq(), " empty");
  }
}

std::vector<std::string> DescribeAll(const std::vector<v1::JobEvent>& events) {
  std::vector<std::string> out;
  for (const auto& e : events) out.push_back(Describe(e));
  return out;
}

std::vector<std::string> Pieces(const v1::internal::DeltaBatch& batch) {
  std::vector<std::string> out;
  for (const auto& p : batch.pieces()) out.push_back(absl::StrCat(p.seq(), " ", p.text()));
  return out;
}

v1::Job MakeJob(v1::JobState state, int32_t attempt, int64_t last_seq) {
  v1::Job job;
  job.set_id(kJob);
  job.set_type("chat");
  job.set_state(state);
  job.set_attempt(attempt);
  job.set_max_attempts(3);
  job.set_last_seq(last_seq);
  *job.mutable_updated_at() = MicrosToTimestamp(1'700'000'000'000'000);
  return job;
}

TEST(EventHubTest, DeltaSeqsContinueFromTheRunningEvent) {
  EventHub hub;
  auto sink = std::make_shared<RecordingSink>();
  hub.Subscribe(kJob, sink);
  hub.StartAttempt(kJob, 1, 2);
  EXPECT_EQ(hub.RunningSeq(kJob), 2);
  EXPECT_TRUE(hub.AppendDelta(kJob, 1, "Hel"));
  EXPECT_TRUE(hub.AppendDelta(kJob, 1, "lo"));
  EXPECT_TRUE(hub.AppendDelta(kJob, 1, "!"));
  EXPECT_EQ(hub.RunningSeq(kJob), 5);
  EXPECT_THAT(DescribeAll(sink->events()), ElementsAre("3 a1 Hel", "4 a1 lo", "5 a1 !"));
  for (const auto& e : sink->events()) EXPECT_EQ(e.job_id(), kJob);

  // A later attempt continues after its own RUNNING event.
  hub.EndAttempt(kJob, 1);
  hub.StartAttempt(kJob, 2, 7);
  EXPECT_TRUE(hub.AppendDelta(kJob, 2, "again"));
  EXPECT_EQ(DescribeAll(sink->events()).back(), "8 a2 again");
  // Other jobs have their own sequence.
  hub.StartAttempt(kOtherJob, 1, 2);
  EXPECT_TRUE(hub.AppendDelta(kOtherJob, 1, "x"));
  EXPECT_EQ(hub.RunningSeq(kOtherJob), 3);
  EXPECT_EQ(hub.RunningSeq(kJob), 8);
}

TEST(EventHubTest, AppendDeltaRejectsAttemptsNotRunningHere) {
  EventHub hub;
  auto sink = std::make_shared<RecordingSink>();
  hub.Subscribe(kJob, sink);
  EXPECT_FALSE(hub.AppendDelta(kJob, 1, "never started"));
  EXPECT_FALSE(hub.AppendDelta(kOtherJob, 1, "unknown job"));
  hub.StartAttempt(kJob, 2, 5);
  EXPECT_FALSE(hub.AppendDelta(kJob, 1, "stale attempt"));
  EXPECT_FALSE(hub.AppendDelta(kJob, 3, "future attempt"));
  EXPECT_TRUE(hub.AppendDelta(kJob, 2, "ok"));
  hub.EndAttempt(kJob, 2);
  EXPECT_FALSE(hub.AppendDelta(kJob, 2, "after the end"));
  EXPECT_EQ(hub.RunningSeq(kJob), 0);
  EXPECT_THAT(DescribeAll(sink->events()), ElementsAre("6 a2 ok"));
  // Dropped text is not buffered for the flusher either.
  std::vector<DeltaRow> rows = hub.TakePending();
  EXPECT_THAT(rows, IsEmpty());
}

TEST(EventHubTest, SubscriberReceivesLiveEventsInOrderUntilUnsubscribed) {
  EventHub hub;
  auto a = std::make_shared<RecordingSink>();
  auto b = std::make_shared<RecordingSink>();
  hub.StartAttempt(kJob, 1, 2);
  EXPECT_THAT(hub.Subscribe(kJob, a), IsEmpty());
  hub.AppendDelta(kJob, 1, "one");
  EXPECT_THAT(DescribeAll(hub.Subscribe(kJob, b)), ElementsAre("3 a1 one"));
  hub.AppendDelta(kJob, 1, "two");
  hub.AppendDelta(kJob, 1, "three");
  v1::internal::DeltaBatch unflushed = hub.EndAttempt(kJob, 1).unflushed;
  hub.Publish(TransitionEvent(MakeJob(v1::SUCCEEDED, 1, 6)));
  EXPECT_THAT(DescribeAll(a->events()),
              ElementsAre("3 a1 one", "4 a1 two", "5 a1 three", "6 final SUCCEEDED"));
  EXPECT_THAT(DescribeAll(b->events()), ElementsAre("4 a1 two", "5 a1 three", "6 final SUCCEEDED"));

  hub.Unsubscribe(kJob, a.get());
  hub.Publish(TransitionEvent(MakeJob(v1::QUEUED, 1, 7)));
  EXPECT_EQ(a->events().size(), 4u);
  EXPECT_EQ(b->events().size(), 4u);
  hub.Unsubscribe(kJob, b.get());
  EXPECT_EQ(hub.ChannelCount(), 0u) << "an idle job's channel is freed";
}

TEST(EventHubTest, SubscribeReturnsPendingInFlightAndTailEvents) {
  EventHub hub;
  hub.StartAttempt(kJob, 1, 2);
  hub.AppendDelta(kJob, 1, "a");
  hub.AppendDelta(kJob, 1, "b");
  std::vector<DeltaRow> rows = hub.TakePending();  // 3, 4 in flight to the database
  ASSERT_EQ(rows.size(), 1u);
  hub.AppendDelta(kJob, 1, "c");  // 5 pending

  auto s1 = std::make_shared<RecordingSink>();
  EXPECT_THAT(DescribeAll(hub.Subscribe(kJob, s1)), ElementsAre("3 a1 a", "4 a1 b", "5 a1 c"));

  hub.AppendDelta(kJob, 1, "d");  // 6 pending
  EventHub::AttemptTail tail = hub.EndAttempt(kJob, 1);
  ASSERT_TRUE(tail.found);
  // Ended, persisting in progress: in-flight and the tail are still served.
  auto s2 = std::make_shared<RecordingSink>();
  EXPECT_THAT(DescribeAll(hub.Subscribe(kJob, s2)),
              ElementsAre("3 a1 a", "4 a1 b", "5 a1 c", "6 a1 d"));

  hub.ConfirmFlushed(rows, true);  // 3, 4 are in the database now
  auto s3 = std::make_shared<RecordingSink>();
  EXPECT_THAT(DescribeAll(hub.Subscribe(kJob, s3)), ElementsAre("5 a1 c", "6 a1 d"));

  hub.Publish(TransitionEvent(MakeJob(v1::SUCCEEDED, 1, 7)));
  auto s4 = std::make_shared<RecordingSink>();
  EXPECT_THAT(hub.Subscribe(kJob, s4), IsEmpty());
  EXPECT_THAT(DescribeAll(s1->events()), ElementsAre("6 a1 d", "7 final SUCCEEDED"));
}

// Regression (fixed): EndAttempt copies in-flight pieces into the returned `unflushed` but keeps
// them only in Channel::in_flight, not in the tail (event_hub.cc:117-121). When the flusher's write
// of those pieces then fails, ConfirmFlushed(ok=false) drops them because the attempt is no longer
// running (event_hub.cc:175-177) and EraseIfIdle may even erase the channel. Until the
// AttemptFinisher commits them with the final transition, a watcher that subscribes gets neither
// them from Subscribe nor from job_events: it misses output, contrary to EndAttempt's contract
// ("unflushed deltas stay visible to new subscribers until the next Publish"). Fix: in
// ConfirmFlushed, when !ok and the channel is not running (or the row's attempt is the ended one),
// move the pieces into c.tail (kept sorted) instead of dropping.
TEST(EventHubTest, FailedFlushAfterEndAttemptKeepsPiecesVisible) {
  EventHub hub;
  hub.StartAttempt(kJob, 1, 2);
  hub.AppendDelta(kJob, 1, "a");
  hub.AppendDelta(kJob, 1, "b");
  std::vector<DeltaRow> rows = hub.TakePending();
  EventHub::AttemptTail tail = hub.EndAttempt(kJob, 1);
  EXPECT_THAT(Pieces(tail.unflushed), ElementsAre("3 a", "4 b"));
  hub.ConfirmFlushed(rows, false);  // the flusher's write failed
  auto sink = std::make_shared<RecordingSink>();
  EXPECT_THAT(DescribeAll(hub.Subscribe(kJob, sink)), ElementsAre("3 a1 a", "4 a1 b"));
}

TEST(EventHubTest, FailedFlushHandsPiecesBackInOrder) {
  EventHub hub;
  hub.StartAttempt(kJob, 1, 2);
  hub.StartAttempt(kOtherJob, 4, 10);
  hub.AppendDelta(kJob, 1, "a");
  hub.AppendDelta(kJob, 1, "b");
  hub.AppendDelta(kOtherJob, 4, "x");
  std::vector<DeltaRow> rows = hub.TakePending();
  ASSERT_EQ(rows.size(), 2u);
  for (const DeltaRow& row : rows) {
    if (row.job_id == kJob) {
      EXPECT_EQ(row.batch.attempt(), 1);
      EXPECT_THAT(Pieces(row.batch), ElementsAre("3 a", "4 b"));
    } else {
      EXPECT_EQ(row.job_id, kOtherJob);
      EXPECT_EQ(row.batch.attempt(), 4);
      EXPECT_THAT(Pieces(row.batch), ElementsAre("11 x"));
    }
  }
  EXPECT_THAT(hub.TakePending(), IsEmpty()) << "taken pieces are not handed out twice";

  hub.AppendDelta(kJob, 1, "c");  // arrives while the write is in flight
  hub.ConfirmFlushed(rows, false);
  std::vector<DeltaRow> retry = hub.TakePending();
  ASSERT_EQ(retry.size(), 2u);
  for (const DeltaRow& row : retry) {
    if (row.job_id == kJob) {
      EXPECT_THAT(Pieces(row.batch), ElementsAre("3 a", "4 b", "5 c"));
    } else {
      EXPECT_THAT(Pieces(row.batch), ElementsAre("11 x"));
    }
  }
  hub.ConfirmFlushed(retry, true);
  EXPECT_THAT(hub.TakePending(), IsEmpty());
  // Persisted pieces are no longer buffered for subscribers.
  auto sink = std::make_shared<RecordingSink>();
  EXPECT_THAT(hub.Subscribe(kJob, sink), IsEmpty());
}

TEST(EventHubTest, FailedFlushOfASupersededAttemptIsDropped) {
  EventHub hub;
  hub.StartAttempt(kJob, 1, 2);
  hub.AppendDelta(kJob, 1, "old");
  std::vector<DeltaRow> rows = hub.TakePending();
  hub.EndAttempt(kJob, 1);
  hub.Publish(TransitionEvent(MakeJob(v1::QUEUED, 1, 4)));
  hub.StartAttempt(kJob, 2, 5);
  hub.AppendDelta(kJob, 2, "new");
  hub.ConfirmFlushed(rows, false);
  std::vector<DeltaRow> retry = hub.TakePending();
  ASSERT_EQ(retry.size(), 1u);
  EXPECT_EQ(retry[0].batch.attempt(), 2);
  EXPECT_THAT(Pieces(retry[0].batch), ElementsAre("6 new"));
}

TEST(EventHubTest, EndAttemptReturnsUnflushedPiecesAndLastSeq) {
  EventHub hub;
  EventHub::AttemptTail none = hub.EndAttempt(kJob, 1);
  EXPECT_FALSE(none.found);
  EXPECT_EQ(none.last_seq, 0);

  hub.StartAttempt(kJob, 1, 2);
  hub.AppendDelta(kJob, 1, "a");
  hub.AppendDelta(kJob, 1, "b");
  std::vector<DeltaRow> rows = hub.TakePending();
  hub.AppendDelta(kJob, 1, "c");
  EXPECT_FALSE(hub.EndAttempt(kJob, 2).found) << "another attempt is not ended";
  EXPECT_EQ(hub.RunningSeq(kJob), 5);

  EventHub::AttemptTail tail = hub.EndAttempt(kJob, 1);
  EXPECT_TRUE(tail.found);
  EXPECT_EQ(tail.last_seq, 5);
  EXPECT_EQ(tail.unflushed.attempt(), 1);
  EXPECT_THAT(Pieces(tail.unflushed), ElementsAre("3 a", "4 b", "5 c"));
  EXPECT_THAT(hub.TakePending(), IsEmpty()) << "the flusher does not write an ended attempt";

  EventHub::AttemptTail again = hub.EndAttempt(kJob, 1);
  EXPECT_FALSE(again.found);
  EXPECT_EQ(again.last_seq, 5);
  EXPECT_EQ(again.unflushed.pieces_size(), 0);

  // Nothing buffered: an empty tail with the RUNNING event's seq.
  hub.StartAttempt(kOtherJob, 1, 2);
  EventHub::AttemptTail empty = hub.EndAttempt(kOtherJob, 1);
  EXPECT_TRUE(empty.found);
  EXPECT_EQ(empty.last_seq, 2);
  EXPECT_EQ(empty.unflushed.pieces_size(), 0);
}

TEST(EventHubTest, PublishOfATransitionClearsTheTail) {
  EventHub hub;
  hub.StartAttempt(kJob, 1, 2);
  hub.AppendDelta(kJob, 1, "a");
  hub.AppendDelta(kJob, 1, "b");
  hub.EndAttempt(kJob, 1);
  auto before = std::make_shared<RecordingSink>();
  EXPECT_THAT(DescribeAll(hub.Subscribe(kJob, before)), ElementsAre("3 a1 a", "4 a1 b"));

  hub.Publish(TransitionEvent(MakeJob(v1::QUEUED, 1, 5)));
  EXPECT_THAT(DescribeAll(before->events()), ElementsAre("5 state QUEUED"));
  auto after = std::make_shared<RecordingSink>();
  EXPECT_THAT(hub.Subscribe(kJob, after), IsEmpty());
  hub.Unsubscribe(kJob, before.get());
  hub.Unsubscribe(kJob, after.get());
  EXPECT_EQ(hub.ChannelCount(), 0u);
}

TEST(EventHubTest, PublishWithoutChannelIsIgnored) {
  EventHub hub;
  hub.Publish(TransitionEvent(MakeJob(v1::CANCELLED, 0, 2)));
  EXPECT_EQ(hub.ChannelCount(), 0u);
}

// The promise behind WatchJob: subscribe, then read what the database holds; together with
// the live events nothing is missing, whatever the flusher is doing meanwhile.
TEST(EventHubTest, SubscribeWhileFlushingLeavesNoGap) {
  constexpr int kDeltas = 3000;
  EventHub hub;
  hub.StartAttempt(kJob, 1, 2);
  absl::Mutex db_mu;
  std::set<int64_t> db;  // seqs "persisted" by the flusher
  std::atomic<bool> writing{true};

  std::thread flusher([&] {
    while (true) {
      bool last_round = !writing.load();
      std::vector<DeltaRow> rows = hub.TakePending();
      {
        absl::MutexLock lock(&db_mu);
        for (const auto& r : rows) {
          for (const auto& p : r.batch.pieces()) db.insert(p.seq());
        }
      }
      hub.ConfirmFlushed(rows, true);
      if (last_round) return;
      std::this_thread::yield();
    }
  });

  struct Watcher {
    std::shared_ptr<RecordingSink> sink = std::make_shared<RecordingSink>();
    std::vector<v1::JobEvent> buffered;
    std::set<int64_t> from_db;
  };
  std::vector<Watcher> watchers(8);
  std::thread subscriber([&] {
    for (auto& w : watchers) {
      w.buffered = hub.Subscribe(kJob, w.sink);
      absl::MutexLock lock(&db_mu);
      w.from_db = db;
    }
  });
  int appended = 0;
  for (int i = 0; i < kDeltas; ++i) appended += hub.AppendDelta(kJob, 1, absl::StrCat(i)) ? 1 : 0;
  subscriber.join();
  writing = false;
  flusher.join();
  ASSERT_EQ(appended, kDeltas);

  for (size_t w = 0; w < watchers.size(); ++w) {
    std::set<int64_t> seen = watchers[w].from_db;
    for (const auto& e : watchers[w].buffered) seen.insert(e.seq());
    int64_t prev = 0;
    for (const auto& e : watchers[w].sink->events()) {
      EXPECT_GT(e.seq(), prev) << "live events out of order";
      prev = e.seq();
      seen.insert(e.seq());
    }
    std::vector<int64_t> missing;
    for (int64_t seq = 3; seq < 3 + kDeltas; ++seq) {
      if (!seen.count(seq)) missing.push_back(seq);
    }
    EXPECT_THAT(missing, IsEmpty()) << "watcher " << w;
  }
}

TEST(TransitionEventTest, TerminalJobBecomesFinalJob) {
  v1::Job job = MakeJob(v1::SUCCEEDED, 2, 9);
  (*job.mutable_result()->mutable_fields())["text"].set_string_value("done");
  v1::JobEvent e = TransitionEvent(job);
  EXPECT_EQ(e.job_id(), kJob);
  EXPECT_EQ(e.seq(), 9);
  EXPECT_EQ(TimestampToMicros(e.time()), 1'700'000'000'000'000);
  ASSERT_TRUE(e.has_final_job());
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(e.final_job(), job));

  for (v1::JobState s : {v1::FAILED, v1::CANCELLED}) {
    v1::Job ended = MakeJob(s, 1, 4);
    ended.mutable_error()->set_code("X");
    v1::JobEvent f = TransitionEvent(ended);
    ASSERT_TRUE(f.has_final_job()) << v1::JobState_Name(s);
    EXPECT_EQ(f.final_job().error().code(), "X");
  }
}

TEST(TransitionEventTest, StateChangesCarryAttemptErrorAndDiscard) {
  v1::JobEvent first = TransitionEvent(MakeJob(v1::RUNNING, 1, 2));
  ASSERT_TRUE(first.has_state_change());
  EXPECT_EQ(first.seq(), 2);
  EXPECT_EQ(first.state_change().state(), v1::RUNNING);
  EXPECT_EQ(first.state_change().attempt(), 1);
  EXPECT_FALSE(first.state_change().discard_output());

  v1::Job requeued = MakeJob(v1::QUEUED, 1, 6);
  requeued.mutable_error()->set_code("RATE_LIMITED");
  requeued.mutable_error()->set_retryable(true);
  v1::JobEvent q = TransitionEvent(requeued);
  ASSERT_TRUE(q.has_state_change());
  EXPECT_EQ(q.state_change().state(), v1::QUEUED);
  EXPECT_EQ(q.state_change().error().code(), "RATE_LIMITED");
  EXPECT_FALSE(q.state_change().discard_output());

  v1::Job second = MakeJob(v1::RUNNING, 2, 7);
  second.mutable_error()->set_code("RATE_LIMITED");  // left over from attempt 1
  v1::JobEvent r = TransitionEvent(second);
  ASSERT_TRUE(r.has_state_change());
  EXPECT_EQ(r.state_change().attempt(), 2);
  EXPECT_TRUE(r.state_change().discard_output());
  EXPECT_FALSE(r.state_change().has_error());
}

}  // namespace
}  // namespace aijobs::scheduler
