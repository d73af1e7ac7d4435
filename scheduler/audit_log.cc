#include "scheduler/audit_log.h"

#include "absl/time/clock.h"
#include "common/text.h"
#include "spdlog/spdlog.h"

namespace aijobs::scheduler {
namespace {

constexpr size_t kMaxBatch = 500;
constexpr int kWriteTries = 5;

}  // namespace

AuditLog::AuditLog(AuditStore* store, AuditOptions options)
    : store_(store),
      options_(options),
      queue_(1, kMaxBatch, [this](std::vector<AuditEntry>& batch) { Write(batch); }),
      retention_([this] { RetentionLoop(); }) {}

AuditLog::~AuditLog() { Stop(); }

void AuditLog::Record(AuditEntry entry) {
  if (entry.time == absl::InfinitePast()) entry.time = absl::Now();
  if (buffered_.fetch_add(1) >= options_.max_buffered) {
    buffered_.fetch_sub(1);
    if (dropped_.fetch_add(1) % 10000 == 0) {
      spdlog::error(
          "audit log buffer full ({} entries): the database is not taking them; "
          "dropping entries ({} so far)",
          options_.max_buffered, dropped_.load());
    }
    return;
  }
  if (!queue_.Push(std::move(entry))) buffered_.fetch_sub(1);
}

void AuditLog::Write(std::vector<AuditEntry>& batch) {
  absl::Duration backoff = absl::Milliseconds(100);
  absl::Status s;
  for (int i = 0; i < kWriteTries; ++i) {
    s = store_->AppendAudit(batch);
    if (s.ok() || stop_.HasBeenNotified()) break;
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Seconds(5));
  }
  if (!s.ok()) {
    dropped_.fetch_add(static_cast<int64_t>(batch.size()));
    spdlog::error("writing {} audit entries failed ({} tries): {}", batch.size(), kWriteTries,
                  s.ToString());
  }
  buffered_.fetch_sub(batch.size());
}

void AuditLog::RetentionLoop() {
  while (!stop_.WaitForNotificationWithTimeout(options_.retention_interval)) {
    int total = 0;
    while (!stop_.HasBeenNotified()) {
      auto n = store_->DeleteAuditBefore(absl::Now() - options_.retention, 1000);
      if (!n.ok()) {
        spdlog::warn("audit retention sweep failed: {}", n.status().ToString());
        break;
      }
      total += *n;
      if (*n < 1000) break;
    }
    if (total > 0) spdlog::info("retention: deleted {} audit entries", total);
  }
}

void AuditLog::Flush() { queue_.Flush(); }

void AuditLog::Stop() {
  queue_.Stop();  // writes what is queued
  if (!stop_.HasBeenNotified()) stop_.Notify();
  if (retention_.joinable()) retention_.join();
}

void RecordRefusal(AuditLog* audit, const grpc::ServerContextBase& ctx,
                   const std::string& tenant_id, const std::string& target,
                   const absl::Status& refusal) {
  if (audit == nullptr) return;
  AuditEntry e = NewAuditEntry(ctx, "auth_refused", tenant_id, "");
  e.target = target;
  e.code = absl::StatusCodeToString(refusal.code());
  e.message = std::string(refusal.message());
  audit->Record(std::move(e));
}

AuditEntry NewAuditEntry(const grpc::ServerContextBase& ctx, const std::string& action,
                         const std::string& tenant_id, const std::string& subject) {
  AuditEntry e;
  e.time = absl::Now();
  e.action = action;
  e.peer = ctx.peer();
  e.tenant_id = tenant_id;
  e.subject = subject;
  auto it = ctx.client_metadata().find("x-request-id");
  if (it != ctx.client_metadata().end()) {
    e.request_id = Utf8Prefix(std::string(it->second.data(), it->second.size()), 128);
  }
  return e;
}

}  // namespace aijobs::scheduler
