#include "scheduler/pg_quota_store.h"

#include <algorithm>
#include <numeric>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/pg/array.h"
#include "common/status_macros.h"

namespace aijobs::scheduler {

absl::StatusOr<std::vector<TokenGrant>> PgQuotaStore::TakeTokens(
    const std::vector<TokenRequest>& requests) {
  std::vector<TokenGrant> out(requests.size());
  if (requests.empty()) return out;
  // Buckets are locked in key order: two replicas taking the same buckets cannot deadlock.
  std::vector<size_t> order(requests.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return requests[a].key < requests[b].key; });
  pg::ArrayBuilder keys, tokens, rates, bursts;
  for (size_t i : order) {
    keys.Add(requests[i].key);
    tokens.Add(requests[i].tokens);
    rates.Add(absl::StrCat(requests[i].rate));
    bursts.Add(absl::StrCat(requests[i].burst));
  }
  pg::Params p;
  p.Add(keys.Finish()).Add(tokens.Finish()).Add(rates.Finish()).Add(bursts.Finish());
  // The SET expressions all see the row as it was: `avail` is computed twice the same way.
  // A new bucket starts full (burst) minus what it grants at once.
  static constexpr char kSql[] =
      "INSERT INTO quota_buckets AS b (key, tokens, rate, burst, requested, granted, updated_at) "
      "SELECT k, t_burst - least(n, floor(t_burst)), t_rate, t_burst, n, "
      "least(n, floor(t_burst))::int8, now() "
      "FROM unnest($1::text[], $2::int8[], $3::float8[], $4::float8[]) AS t(k, n, t_rate, t_burst) "
      "ON CONFLICT (key) DO UPDATE SET "
      "granted = least(EXCLUDED.requested, floor(least(EXCLUDED.burst, b.tokens + EXCLUDED.rate * "
      "extract(epoch FROM now() - b.updated_at))))::int8, "
      "tokens = least(EXCLUDED.burst, b.tokens + EXCLUDED.rate * extract(epoch FROM now() - "
      "b.updated_at)) - least(EXCLUDED.requested, floor(least(EXCLUDED.burst, b.tokens + "
      "EXCLUDED.rate * extract(epoch FROM now() - b.updated_at)))), "
      "rate = EXCLUDED.rate, burst = EXCLUDED.burst, requested = EXCLUDED.requested, "
      "updated_at = now() "
      "RETURNING key, granted, tokens";
  ASSIGN_OR_RETURN(auto conn, pool_->Acquire());
  auto r = conn->ExecParams(kSql, p);
  if (!r.ok()) return r.status();
  absl::flat_hash_map<std::string, TokenGrant> by_key;
  for (int i = 0; i < r->rows(); ++i) {
    TokenGrant g;
    g.granted = r->GetInt(i, 1);
    double left = 0;
    (void)absl::SimpleAtod(r->GetString(i, 2), &left);
    g.left = left;
    by_key[r->GetString(i, 0)] = g;
  }
  for (size_t i = 0; i < requests.size(); ++i) {
    auto it = by_key.find(requests[i].key);
    if (it == by_key.end()) return absl::InternalError("a quota bucket was not returned");
    out[i] = it->second;
  }
  return out;
}

}  // namespace aijobs::scheduler
