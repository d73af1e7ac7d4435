#include "scheduler/worker_session.h"

#include <iterator>

#include "absl/container/flat_hash_set.h"
#include "common/time_util.h"

namespace aijobs::scheduler {

int WorkerSession::FreeSlots() {
  absl::MutexLock lock(&mu_);
  if (draining_ || closed_) return 0;
  if (silence_limit_ > absl::ZeroDuration() && absl::Now() - last_seen_ > silence_limit_) return 0;
  return std::max(0, slots_ - static_cast<int>(running_.size()));
}

void WorkerSession::Assign(const std::vector<ClaimedJob>& jobs) {
  std::vector<v1::Assignment> out;
  out.reserve(jobs.size());
  {
    absl::MutexLock lock(&mu_);
    absl::Time now = absl::Now();
    for (const ClaimedJob& c : jobs) {
      running_[c.job.id()] = Running{c.job.attempt(), c.deadline, now};
      v1::Assignment& a = out.emplace_back();
      a.set_job_id(c.job.id());
      a.set_attempt(c.job.attempt());
      a.set_max_attempts(c.job.max_attempts());
      a.set_type(c.job.type());
      *a.mutable_input() = c.job.input();
      *a.mutable_deadline() = ToProtoTimestamp(c.deadline);
    }
  }
  SendAssignments(std::move(out));
}

bool WorkerSession::EndAttempt(const std::string& job_id, int32_t attempt) {
  absl::MutexLock lock(&mu_);
  auto it = running_.find(job_id);
  if (it == running_.end() || it->second.attempt != attempt) return false;
  running_.erase(it);
  return true;
}

int32_t WorkerSession::RunningAttempt(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  auto it = running_.find(job_id);
  return it == running_.end() ? 0 : it->second.attempt;
}

std::vector<std::pair<std::string, int32_t>> WorkerSession::RunningAttempts() {
  absl::MutexLock lock(&mu_);
  std::vector<std::pair<std::string, int32_t>> out;
  out.reserve(running_.size());
  for (const auto& [id, r] : running_) out.emplace_back(id, r.attempt);
  return out;
}

std::vector<std::pair<std::string, int32_t>> WorkerSession::OverdueAttempts(absl::Time cutoff) {
  absl::MutexLock lock(&mu_);
  std::vector<std::pair<std::string, int32_t>> out;
  for (const auto& [id, r] : running_) {
    if (r.deadline < cutoff) out.emplace_back(id, r.attempt);
  }
  return out;
}

int WorkerSession::RunningCount() {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(running_.size());
}

void WorkerSession::SetSilenceLimit(absl::Duration limit) {
  absl::MutexLock lock(&mu_);
  silence_limit_ = limit;
}

bool WorkerSession::Touch() {
  absl::MutexLock lock(&mu_);
  absl::Time now = absl::Now();
  bool was_silent = silence_limit_ > absl::ZeroDuration() && now - last_seen_ > silence_limit_;
  last_seen_ = now;
  return was_silent;
}

absl::Time WorkerSession::last_seen() {
  absl::MutexLock lock(&mu_);
  return last_seen_;
}

void WorkerSession::SetDraining() {
  absl::MutexLock lock(&mu_);
  draining_ = true;
}

void WorkerSession::MarkClosed() {
  absl::MutexLock lock(&mu_);
  closed_ = true;
}

bool WorkerSession::closed() {
  absl::MutexLock lock(&mu_);
  return closed_;
}

std::vector<std::pair<std::string, int32_t>> WorkerSession::Heartbeat(
    const v1::Heartbeat& heartbeat) {
  absl::flat_hash_set<std::pair<std::string, int32_t>> reported;
  reported.reserve(heartbeat.running_size());
  for (const v1::RunningJob& r : heartbeat.running()) reported.emplace(r.job_id(), r.attempt());
  absl::MutexLock lock(&mu_);
  // Until the first heartbeat, the session's start counts as the previous one: nothing was
  // assigned before it.
  absl::Time previous = last_heartbeat_;
  last_heartbeat_ = absl::Now();
  std::vector<std::pair<std::string, int32_t>> lost;
  for (auto it = running_.begin(); it != running_.end();) {
    auto next = std::next(it);
    if (it->second.assigned_at < previous && !reported.contains({it->first, it->second.attempt})) {
      lost.emplace_back(it->first, it->second.attempt);
      running_.erase(it);
    }
    it = next;
  }
  return lost;
}

absl::Time WorkerSession::last_heartbeat() {
  absl::MutexLock lock(&mu_);
  return last_heartbeat_;
}

}  // namespace aijobs::scheduler
