#include "scheduler/submit_batcher.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace aijobs::scheduler {

SubmitBatcher::SubmitBatcher(JobStore* store, std::function<void()> on_inserted, int writers,
                             int max_batch, size_t max_batch_bytes)
    : store_(store),
      on_inserted_(std::move(on_inserted)),
      max_batch_bytes_(max_batch_bytes),
      queue_(writers, max_batch, [this](std::vector<Pending>& batch) { Insert(batch); }) {}

void SubmitBatcher::Submit(NewJob job, Callback done, absl::Time deadline) {
  Pending p{std::move(job), std::move(done), deadline};
  if (!queue_.Push(std::move(p))) {
    p.done(absl::UnavailableError("scheduler is shutting down; retry on another replica"));
  }
}

namespace {

// What a job adds to the insert statement's parameters.
size_t JobBytes(const NewJob& j) {
  return j.spec.ByteSizeLong() + j.type.size() + j.caller.tenant_id.size() +
         j.caller.subject.size() + j.idempotency_key.value_or("").size() + j.cache_key.size() + 96;
}

}  // namespace

void SubmitBatcher::Insert(std::vector<Pending>& batch) {
  // Callers who stopped waiting get no job (what is left is written below).
  const absl::Time now = absl::Now();
  size_t live = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    if (batch[i].deadline <= now) {
      batch[i].done(absl::DeadlineExceededError(
          "the call's deadline passed before the job was stored; the job was not created"));
      continue;
    }
    if (live != i) batch[live] = std::move(batch[i]);
    ++live;
  }
  batch.resize(live);
  if (quota_ != nullptr && quota_->enabled() && !batch.empty()) {
    std::vector<const NewJob*> jobs;
    jobs.reserve(batch.size());
    for (const Pending& p : batch) jobs.push_back(&p.job);
    absl::StatusOr<std::vector<absl::Status>> admitted = quota_->Admit(jobs);
    if (!admitted.ok()) {
      for (Pending& p : batch) p.done(admitted.status());
      return;
    }
    live = 0;
    for (size_t i = 0; i < batch.size(); ++i) {
      if (!(*admitted)[i].ok()) {
        batch[i].done((*admitted)[i]);
        continue;
      }
      if (live != i) batch[live] = std::move(batch[i]);
      ++live;
    }
    batch.resize(live);
  }
  // Cut the batch into statements within the byte budget (a job larger than the budget goes
  // alone; validation caps one job's input).
  size_t begin = 0;
  while (begin < batch.size()) {
    size_t end = begin + 1;
    size_t bytes = JobBytes(batch[begin].job);
    while (end < batch.size()) {
      size_t next = JobBytes(batch[end].job);
      if (bytes + next > max_batch_bytes_) break;
      bytes += next;
      ++end;
    }
    InsertRange(batch, begin, end);
    begin = end;
  }
}

void SubmitBatcher::InsertRange(std::vector<Pending>& batch, size_t begin, size_t end) {
  std::vector<NewJob> jobs;
  jobs.reserve(end - begin);
  for (size_t i = begin; i < end; ++i) jobs.push_back(std::move(batch[i].job));
  auto outcomes = store_->InsertJobs(jobs);
  if (outcomes.ok()) {
    if (on_inserted_) on_inserted_();
    for (size_t i = begin; i < end; ++i) batch[i].done(std::move((*outcomes)[i - begin]));
    return;
  }
  // A transient error says nothing about any one job: every caller gets it and may retry
  // (nothing was committed; idempotency keys make a retry safe anyway).
  if (IsTransient(outcomes.status())) {
    for (size_t i = begin; i < end; ++i) batch[i].done(outcomes.status());
    return;
  }
  if (end - begin == 1) {
    batch[begin].done(
        absl::Status(outcomes.status().code(),
                     absl::StrCat("this job could not be stored: ", outcomes.status().message())));
    return;
  }
  // The database refused something in this batch: split it, so the other callers' jobs
  // commit and only the refused one fails.
  for (size_t i = begin; i < end; ++i) batch[i].job = std::move(jobs[i - begin]);
  size_t mid = begin + (end - begin) / 2;
  InsertRange(batch, begin, mid);
  InsertRange(batch, mid, end);
}

}  // namespace aijobs::scheduler
