// Per-client protections of the public front door: which address a request comes from (the
// peer, or the X-Forwarded-For entry added by a trusted proxy), caps on what one address may
// hold open (connections, event streams), and a request rate per address for anonymous
// callers. One address cannot take what the others need.
//
//   TrustedProxies proxies = *TrustedProxies::Parse("10.0.0.0/8,127.0.0.1");
//   std::string ip = ClientAddress(peer_ip, request["X-Forwarded-For"], proxies);
//   PerClientCounter streams;   if (!streams.TryAcquire(ip, 32)) ... 429;  streams.Release(ip);
//   PerClientRate anon(60, 20); if (absl::Duration wait; !anon.Allow(ip, now, &wait)) ... 429;
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace aijobs::gateway {

// A list of addresses and networks (CIDR, IPv4 or IPv6) whose X-Forwarded-For is believed.
class TrustedProxies {
 public:
  // "10.0.0.0/8,192.168.1.7,fd00::/8" ("" = none). INVALID_ARGUMENT naming a bad entry.
  static absl::StatusOr<TrustedProxies> Parse(absl::string_view list);
  bool Contains(absl::string_view ip) const;
  bool empty() const { return nets_.empty(); }

 private:
  struct Net {
    std::vector<uint8_t> bytes;  // 4 or 16
    int prefix = 0;
  };
  std::vector<Net> nets_;
};

// The client's address: `peer_ip` unless it is a trusted proxy; then the X-Forwarded-For
// entries are walked from the right (each proxy appends the address it received from) and the
// first one that is not a trusted proxy is the client. A malformed entry ends the walk at the
// last trusted hop's word for it, never at a value the client chose.
std::string ClientAddress(absl::string_view peer_ip, absl::string_view forwarded_for,
                          const TrustedProxies& proxies);

// How many of something each address holds (connections, open streams).
class PerClientCounter {
 public:
  // Takes one for `ip` when it holds fewer than `limit` (0: unlimited).
  bool TryAcquire(const std::string& ip, int limit);
  void Release(const std::string& ip);
  int Held(const std::string& ip);

 private:
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, int> held_ ABSL_GUARDED_BY(mu_);
};

// A token bucket per address: `per_minute` requests a minute on average, bursts of `burst`.
// Addresses idle long enough to have a full bucket are forgotten, so memory stays bounded by
// the addresses active in the last burst / rate.
class PerClientRate {
 public:
  PerClientRate(double per_minute, double burst);
  // Whether `ip` may make a request at `now`; if not, `*retry_after` says when it may.
  bool Allow(const std::string& ip, absl::Time now, absl::Duration* retry_after);
  size_t TrackedForTest();

 private:
  struct Bucket {
    double tokens;
    absl::Time at;
  };
  void EvictFullLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const double per_second_;
  const double burst_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, Bucket> buckets_ ABSL_GUARDED_BY(mu_);
  absl::Time last_eviction_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

}  // namespace aijobs::gateway
