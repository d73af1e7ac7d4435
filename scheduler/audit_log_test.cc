#include "scheduler/audit_log.h"

#include <gtest/gtest.h>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"

namespace aijobs::scheduler {
namespace {

class FakeAuditStore : public AuditStore {
 public:
  absl::Status AppendAudit(const std::vector<AuditEntry>& entries) override {
    if (block_ != nullptr) block_->WaitForNotification();
    absl::MutexLock lock(&mu_);
    if (failures_left_ > 0) {
      --failures_left_;
      return absl::UnavailableError("database down");
    }
    for (const auto& e : entries) entries_.push_back(e);
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<AuditEntry>> ListAudit(const AuditQuery&) override {
    absl::MutexLock lock(&mu_);
    return entries_;
  }
  absl::StatusOr<int> DeleteAuditBefore(absl::Time cutoff, int) override {
    absl::MutexLock lock(&mu_);
    int n = 0;
    for (auto it = entries_.begin(); it != entries_.end();) {
      if (it->time < cutoff) {
        it = entries_.erase(it);
        ++n;
      } else {
        ++it;
      }
    }
    return n;
  }
  size_t size() {
    absl::MutexLock lock(&mu_);
    return entries_.size();
  }

  absl::Mutex mu_;
  int failures_left_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<AuditEntry> entries_ ABSL_GUARDED_BY(mu_);
  absl::Notification* block_ = nullptr;
};

AuditEntry Entry(const std::string& action) {
  AuditEntry e;
  e.action = action;
  e.tenant_id = "t1";
  e.code = "OK";
  return e;
}

TEST(AuditLogTest, WritesEntriesAndRetriesTransientFailures) {
  FakeAuditStore store;
  {
    absl::MutexLock lock(&store.mu_);
    store.failures_left_ = 2;
  }
  AuditLog log(&store, {});
  log.Record(Entry("submit"));
  log.Record(Entry("cancel"));
  log.Flush();
  auto entries = store.ListAudit({});
  ASSERT_EQ(entries->size(), 2u);
  EXPECT_NE((*entries)[0].time, absl::InfinitePast()) << "the time is set when recorded";
}

TEST(AuditLogTest, ABoundedBufferDropsRatherThanGrowsWhileTheDatabaseIsAway) {
  FakeAuditStore store;
  absl::Notification unblock;
  store.block_ = &unblock;
  AuditOptions o;
  o.max_buffered = 10;
  AuditLog log(&store, o);
  for (int i = 0; i < 100; ++i) log.Record(Entry("submit"));
  unblock.Notify();
  log.Flush();
  EXPECT_LE(store.size(), 10u);
  EXPECT_GE(store.size(), 1u);
}

TEST(AuditLogTest, RetentionDeletesOldEntries) {
  FakeAuditStore store;
  AuditOptions o;
  o.retention = absl::Hours(1);
  o.retention_interval = absl::Milliseconds(20);
  AuditLog log(&store, o);
  AuditEntry old = Entry("submit");
  old.time = absl::Now() - absl::Hours(2);
  log.Record(old);
  log.Record(Entry("cancel"));
  log.Flush();
  for (int i = 0; i < 500 && store.size() != 1; ++i) absl::SleepFor(absl::Milliseconds(10));
  auto entries = store.ListAudit({});
  ASSERT_EQ(entries->size(), 1u);
  EXPECT_EQ((*entries)[0].action, "cancel");
}

}  // namespace
}  // namespace aijobs::scheduler
