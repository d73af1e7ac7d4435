// JobTypeRegistry: which job types may be submitted — the built-ins plus every type a
// worker has offered (recorded in the database, so any replica knows it).
//
//   if (!registry.IsKnown("summarize")) return InvalidArgument(...);
#pragma once

#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "scheduler/job_store.h"

namespace aijobs::scheduler {

class JobTypeRegistry {
 public:
  explicit JobTypeRegistry(JobStore* store);

  // True for built-in types and types any worker registered. May read the database on a
  // miss (at most once per second).
  bool IsKnown(const std::string& type);
  // Records types offered by a worker (blocking: call from an executor).
  void Register(const std::vector<std::string>& types);

 private:
  JobStore* store_;
  absl::Mutex mu_;
  absl::flat_hash_set<std::string> known_ ABSL_GUARDED_BY(mu_);
  absl::Time last_refresh_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

}  // namespace aijobs::scheduler
