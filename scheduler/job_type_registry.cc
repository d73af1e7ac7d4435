#include "scheduler/job_type_registry.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace aijobs::scheduler {

JobTypeRegistry::JobTypeRegistry(JobStore* store, JobTypeRegistryOptions options)
    : store_(store), options_(std::move(options)) {
  known_ = {"chat", "embed"};
  if (options_.refresh_in_background) thread_ = std::thread([this] { Loop(); });
}

JobTypeRegistry::~JobTypeRegistry() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

absl::Status JobTypeRegistry::IsKnown(const std::string& type) {
  absl::MutexLock lock(&mu_);
  if (known_.contains(type)) return absl::OkStatus();
  refresh_requested_ = true;  // perhaps registered on another replica since the last read
  if (last_success_ == absl::InfinitePast()) {
    return absl::UnavailableError(
        absl::StrCat("job types could not be loaded: database unavailable; retry (",
                     last_error_.ok() ? "not read yet" : last_error_.ToString(), ")"));
  }
  if (options_.clock() - last_success_ > options_.max_staleness) {
    // The reads since failed or hang: the type may well have been registered meanwhile.
    return absl::UnavailableError(
        absl::StrCat("job types could not be loaded: database unavailable; retry (last read ",
                     last_error_.ok() ? "still running" : last_error_.ToString(), ")"));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown job type \"", type,
                   "\": no worker has registered it and it is not built in (chat, embed)"));
}

void JobTypeRegistry::Register(const std::vector<std::string>& types) {
  {
    absl::MutexLock lock(&mu_);
    bool all_known = true;
    for (const auto& t : types) all_known &= known_.contains(t);
    if (all_known) return;
    for (const auto& t : types) known_.insert(t);
  }
  absl::Status s = store_->RegisterJobTypes(types);
  if (!s.ok()) spdlog::warn("recording job types failed: {}", s.ToString());
}

void JobTypeRegistry::Serve(const std::vector<std::string>& types) {
  absl::MutexLock lock(&mu_);
  for (const auto& t : types) {
    ++served_[t];
    known_.insert(t);
  }
}

void JobTypeRegistry::Unserve(const std::vector<std::string>& types) {
  absl::MutexLock lock(&mu_);
  for (const auto& t : types) {
    auto it = served_.find(t);
    if (it != served_.end() && --it->second <= 0) served_.erase(it);
  }
}

absl::Status JobTypeRegistry::Refresh() {
  std::vector<std::string> served;
  bool upkeep;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [t, n] : served_) served.push_back(t);
    upkeep = options_.clock() - last_upkeep_ >= options_.upkeep_interval;
  }
  if (upkeep) {
    absl::Status seen = store_->RegisterJobTypes(served);
    auto forgotten = store_->ForgetJobTypes(options_.type_ttl);
    if (forgotten.ok() && *forgotten > 0) {
      spdlog::info("forgot {} job types no worker served for {}", *forgotten,
                   absl::FormatDuration(options_.type_ttl));
    }
    if (seen.ok() && forgotten.ok()) {
      absl::MutexLock lock(&mu_);
      last_upkeep_ = options_.clock();
    }
  }
  auto types = store_->KnownJobTypes(options_.type_ttl);
  absl::MutexLock lock(&mu_);
  if (!types.ok()) {
    last_error_ = types.status();
    return types.status();
  }
  // Replaced, not merged: a type unseen for the ttl leaves the list.
  known_ = {"chat", "embed"};
  for (auto& t : *types) known_.insert(std::move(t));
  for (const auto& [t, n] : served_) known_.insert(t);
  last_success_ = options_.clock();
  last_error_ = absl::OkStatus();
  return absl::OkStatus();
}

void JobTypeRegistry::Loop() {
  absl::Time last_read = absl::InfinitePast();  // real time: it paces the reads
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      while (true) {
        if (stopping_) return;
        absl::Time now = absl::Now();
        absl::Time due = last_read + options_.refresh_interval;
        if (refresh_requested_) due = std::min(due, last_read + options_.min_refresh_gap);
        if (now >= due) break;
        // Already asked: only stopping can cut the wait short. Otherwise a request can.
        bool asked = refresh_requested_;
        auto wake = [this, asked]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
          return stopping_ || (!asked && refresh_requested_);
        };
        mu_.AwaitWithDeadline(absl::Condition(&wake), due);
      }
      refresh_requested_ = false;  // a request during the read asks for another one
    }
    absl::Status s = Refresh();
    if (!s.ok()) spdlog::warn("reading known job types failed: {}", s.ToString());
    last_read = absl::Now();
  }
}

}  // namespace aijobs::scheduler
