// JobTypeRegistry: which job types may be submitted — the built-ins plus every type a
// worker served within the type ttl (recorded in the database with when it was last seen,
// so any replica knows it). The database list is refreshed on a background thread
// (periodically, and soon after an unknown type is asked about), so IsKnown never waits for
// the database and is safe on gRPC's threads. The types this replica's connected workers
// serve are marked seen every upkeep interval; types unseen for the ttl are forgotten (then
// refused at submit, so a queue nobody serves stops growing).
//
//   absl::Status s = registry.IsKnown("summarize");
//   if (!s.ok()) return s;  // INVALID_ARGUMENT: no such type; UNAVAILABLE: retry later
#pragma once

#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "scheduler/job_store.h"

namespace aijobs::scheduler {

struct JobTypeRegistryOptions {
  // How often the database list is re-read when nobody asks.
  absl::Duration refresh_interval = absl::Seconds(10);
  // The least time between two reads: an unknown type asked about asks for a read, at most
  // this often.
  absl::Duration min_refresh_gap = absl::Seconds(1);
  // A list older than this is not trusted to call a type unknown: the answer is UNAVAILABLE
  // until a read succeeds again.
  absl::Duration max_staleness = absl::Seconds(30);
  // Off in tests that drive Refresh themselves.
  bool refresh_in_background = true;
  // A type no worker has served for this long is no longer known.
  absl::Duration type_ttl = absl::Hours(24);
  // How often the served types are marked seen and the unseen ones forgotten.
  absl::Duration upkeep_interval = absl::Minutes(1);
  // Judges staleness (tests inject one).
  std::function<absl::Time()> clock = [] { return absl::Now(); };
};

class JobTypeRegistry {
 public:
  explicit JobTypeRegistry(JobStore* store, JobTypeRegistryOptions options = {});
  // Stops the refresh thread (waits for a read in flight).
  ~JobTypeRegistry();
  JobTypeRegistry(const JobTypeRegistry&) = delete;
  JobTypeRegistry& operator=(const JobTypeRegistry&) = delete;

  // Answers from memory, never blocking on the database: OK for built-in types, types this
  // replica's workers registered and types in the last list read; INVALID_ARGUMENT ("unknown
  // job type") when the list was read successfully within max_staleness; UNAVAILABLE when
  // it never was, or not for longer than that (the database is down: retry). An unknown
  // type asks the background thread for a fresh read.
  absl::Status IsKnown(const std::string& type);
  // Records types offered by a worker: known here at once, then written to the database
  // (blocking: call from an executor).
  void Register(const std::vector<std::string>& types);
  // A worker serving `types` connected to this replica / went away (memory only, never
  // blocks). Types served by a connected worker stay known and are marked seen.
  void Serve(const std::vector<std::string>& types);
  void Unserve(const std::vector<std::string>& types);
  // Reads the database list now and merges it in (blocking). The background thread calls
  // it; returns the read's status.
  absl::Status Refresh();

 private:
  void Loop();

  JobStore* store_;
  const JobTypeRegistryOptions options_;
  absl::Mutex mu_;
  absl::flat_hash_set<std::string> known_ ABSL_GUARDED_BY(mu_);
  // Type -> connected workers of this replica serving it.
  absl::flat_hash_map<std::string, int> served_ ABSL_GUARDED_BY(mu_);
  // When (options_.clock) served types were last marked seen; InfinitePast before.
  absl::Time last_upkeep_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  // When (options_.clock) the last successful read ended; InfinitePast before the first.
  absl::Time last_success_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::Status last_error_ ABSL_GUARDED_BY(mu_);  // of the last read; OK when it succeeded
  bool refresh_requested_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;  // last: it uses the members above
};

}  // namespace aijobs::scheduler
