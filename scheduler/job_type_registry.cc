#include "scheduler/job_type_registry.h"

#include "absl/time/clock.h"
#include "spdlog/spdlog.h"

namespace aijobs::scheduler {

JobTypeRegistry::JobTypeRegistry(JobStore* store) : store_(store) {
  known_.insert("chat");
  known_.insert("embed");
}

bool JobTypeRegistry::IsKnown(const std::string& type) {
  {
    absl::MutexLock lock(&mu_);
    if (known_.contains(type)) return true;
    if (absl::Now() - last_refresh_ < absl::Seconds(1)) return false;
    last_refresh_ = absl::Now();
  }
  auto types = store_->KnownJobTypes();
  if (!types.ok()) {
    spdlog::warn("reading known job types failed: {}", types.status().ToString());
    return false;
  }
  absl::MutexLock lock(&mu_);
  for (auto& t : *types) known_.insert(t);
  return known_.contains(type);
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

}  // namespace aijobs::scheduler
