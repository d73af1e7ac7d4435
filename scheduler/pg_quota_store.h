// PgQuotaStore: the QuotaStore on PostgreSQL (table quota_buckets, schema migration 7): one
// statement (one round trip) takes tokens from many buckets.
//
//   PgQuotaStore quotas(&pool);
#pragma once

#include "common/pg/pool.h"
#include "scheduler/quota_store.h"

namespace aijobs::scheduler {

class PgQuotaStore : public QuotaStore {
 public:
  explicit PgQuotaStore(pg::Pool* pool) : pool_(pool) {}
  absl::StatusOr<std::vector<TokenGrant>> TakeTokens(
      const std::vector<TokenRequest>& requests) override;

 private:
  pg::Pool* pool_;
};

}  // namespace aijobs::scheduler
