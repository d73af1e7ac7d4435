#include "gateway/client_limits.h"

#include <gtest/gtest.h>

namespace aijobs::gateway {
namespace {

TEST(TrustedProxies, ParsesAddressesAndNetworks) {
  auto t = TrustedProxies::Parse("10.0.0.0/8, 192.168.1.7 ,fd00::/8,[::1]");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_TRUE(t->Contains("10.200.3.4"));
  EXPECT_FALSE(t->Contains("11.0.0.1"));
  EXPECT_TRUE(t->Contains("192.168.1.7"));
  EXPECT_FALSE(t->Contains("192.168.1.8"));
  EXPECT_TRUE(t->Contains("fd12::1"));
  EXPECT_TRUE(t->Contains("::1"));
  EXPECT_TRUE(t->Contains("::ffff:10.1.1.1"));  // IPv4-mapped
  EXPECT_FALSE(t->Contains("not-an-ip"));
  for (const char* bad : {"10.0.0.0/33", "example.com", "10.0.0.0/x", "1.2.3.4/-1"}) {
    EXPECT_FALSE(TrustedProxies::Parse(bad).ok()) << bad;
  }
  EXPECT_TRUE(TrustedProxies::Parse("")->empty());
}

TEST(ClientAddress, BelievesForwardedForOnlyFromTrustedProxies) {
  auto proxies = *TrustedProxies::Parse("10.0.0.0/8");
  // Not through a trusted proxy: the header is the client's own word, ignored.
  EXPECT_EQ(ClientAddress("203.0.113.9", "1.1.1.1", proxies), "203.0.113.9");
  // Through the proxy: the address it appended.
  EXPECT_EQ(ClientAddress("10.0.0.5", "198.51.100.7", proxies), "198.51.100.7");
  // A client forging entries to the left is still found by the rightmost untrusted hop.
  EXPECT_EQ(ClientAddress("10.0.0.5", "6.6.6.6, 198.51.100.7, 10.0.0.9", proxies), "198.51.100.7");
  // A malformed hop stops the walk at what the trusted proxies said.
  EXPECT_EQ(ClientAddress("10.0.0.5", "198.51.100.7, junk", proxies), "10.0.0.5");
  EXPECT_EQ(ClientAddress("10.0.0.5", "", proxies), "10.0.0.5");
  EXPECT_EQ(ClientAddress("::ffff:127.0.0.1", "", proxies), "127.0.0.1");
}

TEST(PerClientCounter, CapsEachAddressAlone) {
  PerClientCounter c;
  EXPECT_TRUE(c.TryAcquire("a", 2));
  EXPECT_TRUE(c.TryAcquire("a", 2));
  EXPECT_FALSE(c.TryAcquire("a", 2));
  EXPECT_TRUE(c.TryAcquire("b", 2));
  c.Release("a");
  EXPECT_TRUE(c.TryAcquire("a", 2));
  EXPECT_TRUE(c.TryAcquire("c", 0));  // 0: unlimited
  EXPECT_EQ(c.Held("a"), 2);
}

TEST(PerClientRate, RefillsAndSaysWhenToRetryAndForgetsIdleAddresses) {
  PerClientRate r(/*per_minute=*/60, /*burst=*/3);
  absl::Time t = absl::FromUnixSeconds(1000);
  absl::Duration wait;
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(r.Allow("a", t, &wait));
  EXPECT_FALSE(r.Allow("a", t, &wait));
  EXPECT_EQ(wait, absl::Seconds(1));
  EXPECT_TRUE(r.Allow("b", t, &wait)) << "another address has its own bucket";
  EXPECT_TRUE(r.Allow("a", t + absl::Seconds(1), &wait));
  // Much later both buckets are full again and are forgotten.
  EXPECT_TRUE(r.Allow("c", t + absl::Minutes(10), &wait));
  EXPECT_EQ(r.TrackedForTest(), 1u);
}

}  // namespace
}  // namespace aijobs::gateway
