// A JobStore for unit tests: every call answers UNIMPLEMENTED (naming the call), except
// NotifyNewJobs and NotifyCancelled, which succeed. A test subclasses it and overrides just
// the calls the code under test makes, so a new JobStore method means one edit here.
//
//   class RecordingStore : public FakeJobStore {
//     absl::Status AppendDeltas(const std::vector<DeltaRow>& rows) override { ... }
//   };
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "scheduler/job_store.h"

namespace aijobs::scheduler {

class FakeJobStore : public JobStore {
 public:
  absl::StatusOr<std::vector<SubmitOutcome>> InsertJobs(const std::vector<NewJob>&) override {
    return absl::UnimplementedError("InsertJobs");
  }
  absl::StatusOr<v1::Job> GetJob(const Caller&, const std::string&) override {
    return absl::UnimplementedError("GetJob");
  }
  absl::StatusOr<ListPage> ListJobs(const ListQuery&) override {
    return absl::UnimplementedError("ListJobs");
  }
  absl::StatusOr<std::vector<ClaimedJob>> ClaimJobs(const std::vector<std::string>&, int,
                                                    const std::string&, absl::Duration,
                                                    absl::Duration) override {
    return absl::UnimplementedError("ClaimJobs");
  }
  absl::Status ExtendLeases(const std::vector<std::string>&, absl::Duration) override {
    return absl::UnimplementedError("ExtendLeases");
  }
  absl::Status AppendDeltas(const std::vector<DeltaRow>&) override {
    return absl::UnimplementedError("AppendDeltas");
  }
  absl::StatusOr<std::vector<v1::Job>> FinishAttempts(const std::vector<AttemptOutcome>&) override {
    return absl::UnimplementedError("FinishAttempts");
  }
  absl::StatusOr<std::vector<v1::Job>> RequeueExpiredLeases(int) override {
    return absl::UnimplementedError("RequeueExpiredLeases");
  }
  absl::StatusOr<std::vector<v1::Job>> ExpireQueuedJobs(int) override {
    return absl::UnimplementedError("ExpireQueuedJobs");
  }
  absl::StatusOr<std::vector<v1::Job>> ReleaseAttempts(
      const std::vector<std::pair<std::string, int32_t>>&, const v1::JobError&) override {
    return absl::UnimplementedError("ReleaseAttempts");
  }
  absl::StatusOr<v1::Job> CancelJob(const Caller&, const std::string&, const std::string&,
                                    int64_t) override {
    return absl::UnimplementedError("CancelJob");
  }
  absl::StatusOr<v1::Job> RetryJob(const Caller&, const std::string&) override {
    return absl::UnimplementedError("RetryJob");
  }
  absl::StatusOr<EventPage> ReadEvents(const Caller&, const std::string&, int64_t, int) override {
    return absl::UnimplementedError("ReadEvents");
  }
  absl::StatusOr<std::vector<std::pair<std::string, int64_t>>> LatestSeqs(
      const std::vector<std::string>&) override {
    return absl::UnimplementedError("LatestSeqs");
  }
  absl::StatusOr<int> DeleteFinishedBefore(absl::Time, int) override {
    return absl::UnimplementedError("DeleteFinishedBefore");
  }
  absl::StatusOr<std::optional<SubmitOutcome>> InsertFromCache(const NewJob&) override {
    return absl::UnimplementedError("InsertFromCache");
  }
  absl::StatusOr<absl::Time> PutCachedResult(const std::string&, const std::string&,
                                             const std::string&, const google::protobuf::Struct&,
                                             absl::Duration) override {
    return absl::UnimplementedError("PutCachedResult");
  }
  absl::StatusOr<int> DeleteExpiredCacheEntries(int) override {
    return absl::UnimplementedError("DeleteExpiredCacheEntries");
  }
  absl::Status RegisterJobTypes(const std::vector<std::string>&) override {
    return absl::UnimplementedError("RegisterJobTypes");
  }
  absl::StatusOr<std::vector<std::string>> KnownJobTypes(absl::Duration) override {
    return absl::UnimplementedError("KnownJobTypes");
  }
  absl::StatusOr<int> ForgetJobTypes(absl::Duration) override {
    return absl::UnimplementedError("ForgetJobTypes");
  }
  absl::Status NotifyNewJobs() override { return absl::OkStatus(); }
  absl::Status NotifyCancelled(const std::string&) override { return absl::OkStatus(); }
};

}  // namespace aijobs::scheduler
