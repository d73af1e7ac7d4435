// EventHub: the in-process fan-out of job events to watchers, and the owner of output
// sequence numbers for attempts running on this replica.
//
// Deltas reach watchers the moment a worker sends them; they are buffered here and written
// to job_events in coalesced rows by the flusher (TakePending / ConfirmFlushed). A watcher
// that subscribes gets the buffered, not-yet-persisted events, so reading the database
// after subscribing leaves no gap.
//
//   hub.StartAttempt(job_id, attempt, running_seq);
//   hub.AppendDelta(job_id, attempt, "Hello");          // delivered at once
//   auto buffered = hub.Subscribe(job_id, watcher);      // then read job_events after a seq
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "aijobs/v1/internal.pb.h"
#include "aijobs/v1/job.pb.h"
#include "scheduler/job_store.h"

namespace aijobs::scheduler {

// Receives events for one job. Called with hub locks held: must not block and must not call
// back into the hub.
class EventSink {
 public:
  virtual ~EventSink() = default;
  virtual void OnEvent(const v1::JobEvent& event) = 0;
};

class EventHub {
 public:
  EventHub();

  // Starts an attempt on this replica; its deltas get seqs after `seq`.
  void StartAttempt(const std::string& job_id, int32_t attempt, int64_t seq);

  // Gives the delta the next seq of the attempt, delivers it to watchers and buffers it.
  // Returns false (and drops the text) when the attempt is not running here.
  bool AppendDelta(const std::string& job_id, int32_t attempt, const std::string& text);

  struct AttemptTail {
    bool found = false;
    int64_t last_seq = 0;                // highest seq used for the job on this replica
    v1::internal::DeltaBatch unflushed;  // deltas not confirmed persisted (may be empty)
  };
  // Ends the attempt (later deltas are dropped) and returns what must be persisted with
  // its final transition. The unflushed deltas stay visible to new subscribers until the
  // next Publish of a transition for the job.
  AttemptTail EndAttempt(const std::string& job_id, int32_t attempt);

  // Highest seq used for a job running here, 0 if it is not.
  int64_t RunningSeq(const std::string& job_id);

  // Delivers a transition event written by the store (state change or final job).
  void Publish(const v1::JobEvent& event);

  // For the flusher: takes every buffered delta not yet handed out, one row per attempt.
  std::vector<DeltaRow> TakePending();
  // Marks rows from TakePending as persisted (ok) or hands them back for the next take.
  void ConfirmFlushed(const std::vector<DeltaRow>& rows, bool ok);

  // Registers `sink` for the job's events and returns the buffered events it would
  // otherwise miss, in seq order.
  std::vector<v1::JobEvent> Subscribe(const std::string& job_id, std::shared_ptr<EventSink> sink);
  void Unsubscribe(const std::string& job_id, const EventSink* sink);

  // Number of jobs with state in the hub (watched or running), for metrics and tests.
  size_t ChannelCount();

 private:
  struct Channel {
    std::vector<std::shared_ptr<EventSink>> watchers;
    bool running = false;
    int32_t attempt = 0;
    int64_t seq = 0;
    int32_t buffered_attempt = 0;
    std::vector<v1::internal::DeltaBatch::Piece> pending;    // not yet taken by the flusher
    std::vector<v1::internal::DeltaBatch::Piece> in_flight;  // taken, not yet confirmed
    std::vector<v1::internal::DeltaBatch::Piece> tail;  // ended attempt, awaiting its transition
  };
  struct Shard {
    absl::Mutex mu;
    absl::flat_hash_map<std::string, Channel> channels ABSL_GUARDED_BY(mu);
  };
  static constexpr int kShards = 16;

  Shard& ShardFor(const std::string& job_id);
  static void Deliver(Channel& channel, const v1::JobEvent& event);
  static void EraseIfIdle(Shard& shard, const std::string& job_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);

  std::unique_ptr<Shard[]> shards_;
};

// Builds the event that announces a transition the store made: final_job for a terminal
// job, a state change otherwise.
v1::JobEvent TransitionEvent(const v1::Job& job);

}  // namespace aijobs::scheduler
