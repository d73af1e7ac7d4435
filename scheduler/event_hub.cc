#include "scheduler/event_hub.h"

#include <algorithm>
#include <functional>

#include "common/time_util.h"

namespace aijobs::scheduler {
namespace {

using Piece = v1::internal::DeltaBatch::Piece;

bool IsTerminal(v1::JobState s) {
  return s == v1::SUCCEEDED || s == v1::FAILED || s == v1::CANCELLED;
}

void AppendPieceEvents(const std::string& job_id, int32_t attempt, const std::vector<Piece>& pieces,
                       std::vector<v1::JobEvent>* out) {
  for (const Piece& p : pieces) {
    v1::JobEvent& e = out->emplace_back();
    e.set_job_id(job_id);
    e.set_seq(p.seq());
    *e.mutable_time() = MicrosToTimestamp(p.time_us());
    e.mutable_output_delta()->set_attempt(attempt);
    e.mutable_output_delta()->set_text(p.text());
  }
}

}  // namespace

v1::JobEvent TransitionEvent(const v1::Job& job) {
  v1::JobEvent e;
  e.set_job_id(job.id());
  e.set_seq(job.last_seq());
  *e.mutable_time() = job.updated_at();
  if (IsTerminal(job.state())) {
    *e.mutable_final_job() = job;
  } else {
    v1::StateChange* sc = e.mutable_state_change();
    sc->set_state(job.state());
    sc->set_attempt(job.attempt());
    if (job.has_error() && job.state() != v1::RUNNING) *sc->mutable_error() = job.error();
    sc->set_discard_output(job.state() == v1::RUNNING && job.attempt() > 1);
  }
  return e;
}

EventHub::EventHub() : shards_(new Shard[kShards]) {}

EventHub::Shard& EventHub::ShardFor(const std::string& job_id) {
  return shards_[std::hash<std::string>{}(job_id) % kShards];
}

void EventHub::Deliver(Channel& channel, const v1::JobEvent& event) {
  for (const auto& w : channel.watchers) w->OnEvent(event);
}

void EventHub::EraseIfIdle(Shard& shard, const std::string& job_id) {
  auto it = shard.channels.find(job_id);
  if (it == shard.channels.end()) return;
  const Channel& c = it->second;
  if (c.watchers.empty() && !c.running && c.pending.empty() && c.in_flight.empty() &&
      c.tail.empty()) {
    shard.channels.erase(it);
  }
}

void EventHub::StartAttempt(const std::string& job_id, int32_t attempt, int64_t seq) {
  Shard& shard = ShardFor(job_id);
  absl::MutexLock lock(&shard.mu);
  Channel& c = shard.channels[job_id];
  c.running = true;
  c.attempt = attempt;
  c.seq = std::max(c.seq, seq);
  if (c.buffered_attempt != attempt) {
    // Output of an earlier attempt that never got persisted is superseded anyway.
    c.pending.clear();
    c.buffered_attempt = attempt;
  }
}

bool EventHub::AppendDelta(const std::string& job_id, int32_t attempt, const std::string& text) {
  Shard& shard = ShardFor(job_id);
  absl::MutexLock lock(&shard.mu);
  auto it = shard.channels.find(job_id);
  if (it == shard.channels.end()) return false;
  Channel& c = it->second;
  if (!c.running || c.attempt != attempt) return false;
  Piece& piece = c.pending.emplace_back();
  piece.set_seq(++c.seq);
  piece.set_text(text);
  piece.set_time_us(NowMicros());
  if (!c.watchers.empty()) {
    v1::JobEvent e;
    e.set_job_id(job_id);
    e.set_seq(piece.seq());
    *e.mutable_time() = MicrosToTimestamp(piece.time_us());
    e.mutable_output_delta()->set_attempt(attempt);
    e.mutable_output_delta()->set_text(text);
    Deliver(c, e);
  }
  return true;
}

EventHub::AttemptTail EventHub::EndAttempt(const std::string& job_id, int32_t attempt) {
  AttemptTail tail;
  Shard& shard = ShardFor(job_id);
  absl::MutexLock lock(&shard.mu);
  auto it = shard.channels.find(job_id);
  if (it == shard.channels.end()) return tail;
  Channel& c = it->second;
  tail.last_seq = c.seq;
  if (!c.running || c.attempt != attempt) return tail;
  tail.found = true;
  c.running = false;
  tail.unflushed.set_attempt(attempt);
  // In-flight rows may be written twice (by the flusher and with the transition); readers
  // skip pieces whose seq they already passed.
  for (const auto& p : c.in_flight) *tail.unflushed.add_pieces() = p;
  for (const auto& p : c.pending) *tail.unflushed.add_pieces() = p;
  c.tail.insert(c.tail.end(), c.pending.begin(), c.pending.end());
  c.pending.clear();
  return tail;
}

int64_t EventHub::RunningSeq(const std::string& job_id) {
  Shard& shard = ShardFor(job_id);
  absl::MutexLock lock(&shard.mu);
  auto it = shard.channels.find(job_id);
  if (it == shard.channels.end() || !it->second.running) return 0;
  return it->second.seq;
}

void EventHub::Publish(const v1::JobEvent& event) {
  Shard& shard = ShardFor(event.job_id());
  absl::MutexLock lock(&shard.mu);
  auto it = shard.channels.find(event.job_id());
  if (it == shard.channels.end()) return;
  Channel& c = it->second;
  c.seq = std::max(c.seq, event.seq());
  c.tail.clear();  // the transition was written together with the tail
  Deliver(c, event);
  EraseIfIdle(shard, event.job_id());
}

std::vector<DeltaRow> EventHub::TakePending() {
  std::vector<DeltaRow> rows;
  for (int i = 0; i < kShards; ++i) {
    Shard& shard = shards_[i];
    absl::MutexLock lock(&shard.mu);
    for (auto& [job_id, c] : shard.channels) {
      if (c.pending.empty() || !c.running) continue;
      DeltaRow& row = rows.emplace_back();
      row.job_id = job_id;
      row.batch.set_attempt(c.buffered_attempt);
      for (auto& p : c.pending) *row.batch.add_pieces() = p;
      c.in_flight.insert(c.in_flight.end(), std::make_move_iterator(c.pending.begin()),
                         std::make_move_iterator(c.pending.end()));
      c.pending.clear();
    }
  }
  return rows;
}

void EventHub::ConfirmFlushed(const std::vector<DeltaRow>& rows, bool ok) {
  for (const DeltaRow& row : rows) {
    Shard& shard = ShardFor(row.job_id);
    absl::MutexLock lock(&shard.mu);
    auto it = shard.channels.find(row.job_id);
    if (it == shard.channels.end()) continue;
    Channel& c = it->second;
    int64_t last = row.batch.pieces(row.batch.pieces_size() - 1).seq();
    std::vector<Piece> keep;
    for (auto& p : c.in_flight) {
      if (p.seq() > last) {
        keep.push_back(std::move(p));
      } else if (!ok && c.buffered_attempt == row.batch.attempt()) {
        // Not persisted: retried on the next flush while the attempt runs; once it ended,
        // kept in the tail (which its final transition writes) so subscribers still see it.
        (c.running ? c.pending : c.tail).push_back(p);
      }
    }
    if (!ok) {
      auto by_seq = [](const Piece& a, const Piece& b) { return a.seq() < b.seq(); };
      std::sort(c.pending.begin(), c.pending.end(), by_seq);
      std::sort(c.tail.begin(), c.tail.end(), by_seq);
      c.tail.erase(std::unique(c.tail.begin(), c.tail.end(),
                               [](const Piece& a, const Piece& b) { return a.seq() == b.seq(); }),
                   c.tail.end());
    }
    c.in_flight = std::move(keep);
    EraseIfIdle(shard, row.job_id);
  }
}

std::vector<v1::JobEvent> EventHub::Subscribe(const std::string& job_id,
                                              std::shared_ptr<EventSink> sink) {
  std::vector<v1::JobEvent> buffered;
  Shard& shard = ShardFor(job_id);
  absl::MutexLock lock(&shard.mu);
  Channel& c = shard.channels[job_id];
  c.watchers.push_back(std::move(sink));
  AppendPieceEvents(job_id, c.buffered_attempt, c.in_flight, &buffered);
  AppendPieceEvents(job_id, c.buffered_attempt, c.tail, &buffered);
  AppendPieceEvents(job_id, c.buffered_attempt, c.pending, &buffered);
  std::sort(buffered.begin(), buffered.end(),
            [](const v1::JobEvent& a, const v1::JobEvent& b) { return a.seq() < b.seq(); });
  return buffered;
}

void EventHub::Unsubscribe(const std::string& job_id, const EventSink* sink) {
  Shard& shard = ShardFor(job_id);
  absl::MutexLock lock(&shard.mu);
  auto it = shard.channels.find(job_id);
  if (it == shard.channels.end()) return;
  auto& w = it->second.watchers;
  w.erase(std::remove_if(w.begin(), w.end(), [sink](const auto& s) { return s.get() == sink; }),
          w.end());
  EraseIfIdle(shard, job_id);
}

size_t EventHub::ChannelCount() {
  size_t n = 0;
  for (int i = 0; i < kShards; ++i) {
    absl::MutexLock lock(&shards_[i].mu);
    n += shards_[i].channels.size();
  }
  return n;
}

}  // namespace aijobs::scheduler
