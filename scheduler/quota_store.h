// QuotaStore: token buckets every replica shares (in PostgreSQL), so a limit set for a tenant
// or a user holds once for the whole cluster, not once per replica. PgQuotaStore is the real
// one.
//
//   auto grants = quotas.TakeTokens({{"t:acme", 5, /*rate=*/100, /*burst=*/200}});
//   if ((*grants)[0].granted < 5) ...  // only that many may go ahead
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace aijobs::scheduler {

struct TokenRequest {
  std::string key;     // the bucket, e.g. "t:<tenant>" or "u:<tenant>:<subject>"
  int64_t tokens = 1;  // how many are wanted
  double rate = 0;     // refill per second
  double burst = 0;    // capacity
};

struct TokenGrant {
  int64_t granted = 0;  // at most the tokens asked for
  double left = 0;      // tokens in the bucket afterwards (for the retry hint)
};

class QuotaStore {
 public:
  virtual ~QuotaStore() = default;
  // Takes up to each request's tokens from its bucket (refilled by its rate since its last
  // use, capped at its burst; a new bucket starts full), atomically per bucket and for all
  // replicas. Grants are in the order of `requests`; keys must be distinct.
  virtual absl::StatusOr<std::vector<TokenGrant>> TakeTokens(
      const std::vector<TokenRequest>& requests) = 0;
};

}  // namespace aijobs::scheduler
