#include "gateway/client_limits.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace aijobs::gateway {
namespace {

// The bytes of a literal IPv4 or IPv6 address (brackets allowed), or empty.
std::vector<uint8_t> AddressBytes(absl::string_view ip) {
  std::string s(absl::StripAsciiWhitespace(ip));
  if (s.size() > 2 && s.front() == '[' && s.back() == ']') s = s.substr(1, s.size() - 2);
  uint8_t buf[16];
  if (inet_pton(AF_INET, s.c_str(), buf) == 1) return {buf, buf + 4};
  if (inet_pton(AF_INET6, s.c_str(), buf) == 1) {
    // An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is that IPv4 address.
    static const uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (std::equal(kMapped, kMapped + 12, buf)) return {buf + 12, buf + 16};
    return {buf, buf + 16};
  }
  return {};
}

std::string Canonical(absl::string_view ip) {
  std::vector<uint8_t> b = AddressBytes(ip);
  char out[INET6_ADDRSTRLEN] = {0};
  if (b.size() == 4) {
    inet_ntop(AF_INET, b.data(), out, sizeof(out));
  } else if (b.size() == 16) {
    inet_ntop(AF_INET6, b.data(), out, sizeof(out));
  } else {
    return "";
  }
  return out;
}

}  // namespace

absl::StatusOr<TrustedProxies> TrustedProxies::Parse(absl::string_view list) {
  TrustedProxies t;
  for (absl::string_view entry : absl::StrSplit(list, ',', absl::SkipWhitespace())) {
    entry = absl::StripAsciiWhitespace(entry);
    absl::string_view addr = entry;
    int prefix = -1;
    if (size_t slash = entry.find('/'); slash != absl::string_view::npos) {
      addr = entry.substr(0, slash);
      if (!absl::SimpleAtoi(entry.substr(slash + 1), &prefix) || prefix < 0) prefix = -2;
    }
    Net n;
    n.bytes = AddressBytes(addr);
    const int max = static_cast<int>(n.bytes.size()) * 8;
    if (n.bytes.empty() || prefix == -2 || prefix > max || prefix < -1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "trusted proxy \"", entry, "\" is not an IP address or network (a.b.c.d/n, x::/n)"));
    }
    n.prefix = prefix < 0 ? max : prefix;
    t.nets_.push_back(std::move(n));
  }
  return t;
}

bool TrustedProxies::Contains(absl::string_view ip) const {
  std::vector<uint8_t> b = AddressBytes(ip);
  if (b.empty()) return false;
  for (const Net& n : nets_) {
    if (n.bytes.size() != b.size()) continue;
    int bits = n.prefix;
    bool match = true;
    for (size_t i = 0; i < b.size() && bits > 0 && match; ++i, bits -= 8) {
      const uint8_t mask = bits >= 8 ? 0xff : static_cast<uint8_t>(0xff << (8 - bits));
      match = (b[i] & mask) == (n.bytes[i] & mask);
    }
    if (match) return true;
  }
  return false;
}

std::string ClientAddress(absl::string_view peer_ip, absl::string_view forwarded_for,
                          const TrustedProxies& proxies) {
  std::string client = Canonical(peer_ip);
  if (client.empty()) client = std::string(peer_ip);
  if (proxies.empty() || !proxies.Contains(client)) return client;
  std::vector<absl::string_view> hops = absl::StrSplit(forwarded_for, ',');
  for (auto it = hops.rbegin(); it != hops.rend(); ++it) {
    std::string hop = Canonical(*it);
    if (hop.empty()) break;  // not an address: believe nothing further left
    client = hop;
    if (!proxies.Contains(hop)) break;
  }
  return client;
}

bool PerClientCounter::TryAcquire(const std::string& ip, int limit) {
  absl::MutexLock lock(&mu_);
  int& n = held_[ip];
  if (limit > 0 && n >= limit) {
    if (n == 0) held_.erase(ip);
    return false;
  }
  ++n;
  return true;
}

void PerClientCounter::Release(const std::string& ip) {
  absl::MutexLock lock(&mu_);
  auto it = held_.find(ip);
  if (it == held_.end()) return;
  if (--it->second <= 0) held_.erase(it);
}

int PerClientCounter::Held(const std::string& ip) {
  absl::MutexLock lock(&mu_);
  auto it = held_.find(ip);
  return it == held_.end() ? 0 : it->second;
}

PerClientRate::PerClientRate(double per_minute, double burst)
    : per_second_(per_minute / 60.0), burst_(std::max(1.0, burst)) {}

bool PerClientRate::Allow(const std::string& ip, absl::Time now, absl::Duration* retry_after) {
  absl::MutexLock lock(&mu_);
  EvictFullLocked(now);
  auto [it, inserted] = buckets_.try_emplace(ip, Bucket{burst_, now});
  Bucket& b = it->second;
  if (!inserted) {
    b.tokens = std::min(burst_, b.tokens + absl::ToDoubleSeconds(now - b.at) * per_second_);
    b.at = now;
  }
  if (b.tokens >= 1) {
    b.tokens -= 1;
    return true;
  }
  const double wait_s = per_second_ > 0 ? (1 - b.tokens) / per_second_ : 3600;
  *retry_after = absl::Seconds(std::ceil(wait_s));
  return false;
}

void PerClientRate::EvictFullLocked(absl::Time now) {
  if (per_second_ <= 0) return;
  const absl::Duration refill = absl::Seconds(burst_ / per_second_);
  if (now - last_eviction_ < std::max(refill, absl::Seconds(10))) return;
  last_eviction_ = now;
  absl::erase_if(buckets_, [&](const auto& kv) {
    return kv.second.tokens + absl::ToDoubleSeconds(now - kv.second.at) * per_second_ >= burst_;
  });
}

size_t PerClientRate::TrackedForTest() {
  absl::MutexLock lock(&mu_);
  return buckets_.size();
}

}  // namespace aijobs::gateway
