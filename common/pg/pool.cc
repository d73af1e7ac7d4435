#include "common/pg/pool.h"

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace aijobs::pg {

Pool::Lease::~Lease() {
  if (pool_ != nullptr && conn_ != nullptr) pool_->Release(std::move(conn_));
}

Pool::Pool(std::string conninfo, int size, int statement_timeout_ms, bool synchronous_commit,
           bool transaction_pooler)
    : conninfo_(std::move(conninfo)),
      size_(size),
      statement_timeout_ms_(statement_timeout_ms),
      synchronous_commit_(synchronous_commit),
      transaction_pooler_(transaction_pooler) {}

absl::StatusOr<Pool::Lease> Pool::Acquire(absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  int dropped = 0;
  {
    absl::MutexLock lock(&mu_);
    auto ready = [this]()
                     ABSL_SHARED_LOCKS_REQUIRED(mu_) { return !idle_.empty() || open_ < size_; };
    if (!mu_.AwaitWithDeadline(absl::Condition(&ready), deadline)) {
      return absl::DeadlineExceededError(
          absl::StrCat("no database connection free within ", absl::FormatDuration(timeout)));
    }
    // Idle sessions a database restart closed are dropped here, not handed out to fail
    // their caller's statement.
    while (!idle_.empty()) {
      auto conn = std::move(idle_.back());
      idle_.pop_back();
      if (conn->IdleSessionAlive()) return Lease(this, std::move(conn));
      --open_;
      ++dropped;
    }
    ++open_;
  }
  if (dropped > 0) {
    spdlog::warn("database: dropped {} pooled connection(s) the server had closed; reconnecting",
                 dropped);
  }
  auto conn =
      Connection::Open(conninfo_, statement_timeout_ms_, synchronous_commit_, transaction_pooler_);
  if (!conn.ok()) {
    absl::MutexLock lock(&mu_);
    --open_;
    return conn.status();
  }
  return Lease(this, std::move(*conn));
}

void Pool::Release(std::unique_ptr<Connection> conn) {
  absl::MutexLock lock(&mu_);
  if (conn->healthy()) {
    idle_.push_back(std::move(conn));
  } else {
    --open_;
  }
}

}  // namespace aijobs::pg
