#include "common/uuid.h"

#include <openssl/err.h>
#include <openssl/rand.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace aijobs {
namespace {

uuid_internal::RandomBytesFn g_random_bytes = &RAND_bytes;

}  // namespace

uuid_internal::RandomBytesFn uuid_internal::SetRandomBytesForTesting(RandomBytesFn fn) {
  RandomBytesFn previous = g_random_bytes;
  g_random_bytes = fn != nullptr ? fn : &RAND_bytes;
  return previous;
}

std::string NewUuid() {
  unsigned char bytes[16];
  if (g_random_bytes(bytes, sizeof(bytes)) != 1) {
    // No safe fallback exists: a predictable id lets one client read another's job.
    std::fprintf(stderr, "aijobs: RAND_bytes failed (%lu); cannot create an unguessable id\n",
                 ERR_get_error());
    std::abort();
  }
  bytes[6] = static_cast<unsigned char>((bytes[6] & 0x0f) | 0x40);  // version 4
  bytes[8] = static_cast<unsigned char>((bytes[8] & 0x3f) | 0x80);  // variant 10
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(36);
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out.push_back('-');
    out.push_back(kHex[bytes[i] >> 4]);
    out.push_back(kHex[bytes[i] & 0xf]);
  }
  return out;
}

bool IsUuid(std::string_view text) {
  if (text.size() != 36) return false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (c != '-') return false;
    } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
      return false;
    }
  }
  return true;
}

}  // namespace aijobs
