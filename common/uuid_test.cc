#include "common/uuid.h"

#include <gtest/gtest.h>

#include <cstring>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace aijobs {
namespace {

TEST(UuidTest, NewUuidIsCanonicalVersion4AndUnique) {
  std::set<std::string> seen;
  for (int i = 0; i < 100000; ++i) {
    std::string id = NewUuid();
    ASSERT_TRUE(IsUuid(id)) << id;
    ASSERT_EQ(id[14], '4') << id;
    ASSERT_TRUE(id[19] == '8' || id[19] == '9' || id[19] == 'a' || id[19] == 'b') << id;
    seen.insert(id);
  }
  EXPECT_EQ(seen.size(), 100000u);
}

TEST(UuidTest, UniqueAcrossThreads) {
  constexpr int kThreads = 4, kPerThread = 20000;
  std::vector<std::vector<std::string>> ids(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&ids, t] {
      for (int i = 0; i < kPerThread; ++i) ids[t].push_back(NewUuid());
    });
  }
  for (auto& t : threads) t.join();
  std::set<std::string> seen;
  for (const auto& v : ids) seen.insert(v.begin(), v.end());
  EXPECT_EQ(seen.size(), static_cast<size_t>(kThreads * kPerThread));
}

// Every random bit must come from the cryptographic source (RAND_bytes): with the source
// replaced by a known pattern, the id is exactly that pattern with the version and variant
// bits set. An id built from a non-cryptographic generator would not follow the seam.
int FillPattern(unsigned char* buf, int num) {
  for (int i = 0; i < num; ++i) buf[i] = static_cast<unsigned char>(0xf0 + i);
  return 1;
}
int FillZero(unsigned char* buf, int num) {
  std::memset(buf, 0, num);
  return 1;
}
int Fail(unsigned char*, int) { return 0; }

TEST(UuidTest, DrawsEveryRandomBitFromTheCryptographicSource) {
  uuid_internal::RandomBytesFn previous = uuid_internal::SetRandomBytesForTesting(&FillPattern);
  std::string patterned = NewUuid();
  uuid_internal::SetRandomBytesForTesting(&FillZero);
  std::string zero = NewUuid();
  uuid_internal::SetRandomBytesForTesting(previous);
  // Bytes f0..ff; byte 6 (0xf6) becomes 0x46, byte 8 (0xf8) becomes 0xb8.
  EXPECT_EQ(patterned, "f0f1f2f3-f4f5-46f7-b8f9-fafbfcfdfeff");
  EXPECT_EQ(zero, "00000000-0000-4000-8000-000000000000");
  EXPECT_NE(NewUuid(), zero);
}

TEST(UuidDeathTest, AbortsWhenTheRandomSourceFails) {
  EXPECT_DEATH(
      {
        uuid_internal::SetRandomBytesForTesting(&Fail);
        NewUuid();
      },
      "RAND_bytes failed");
}

TEST(UuidTest, RejectsMalformed) {
  EXPECT_FALSE(IsUuid(""));
  EXPECT_FALSE(IsUuid("not-a-uuid"));
  EXPECT_FALSE(IsUuid("0b6c5c3e-1f0a-4c1e-9d5e-6a4f3b2c1d0"));
  EXPECT_FALSE(IsUuid("0b6c5c3e-1f0a-4c1e-9d5e-6a4f3b2c1d0g"));
  EXPECT_FALSE(IsUuid("0b6c5c3e11f0a-4c1e-9d5e-6a4f3b2c1d0e"));
  EXPECT_TRUE(IsUuid("0B6C5C3E-1F0A-4C1E-9D5E-6A4F3B2C1D0E"));
}

}  // namespace
}  // namespace aijobs
