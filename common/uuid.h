// Random (version 4) UUIDs in their canonical text form. The 122 random bits come from
// OpenSSL's CSPRNG (RAND_bytes): job ids are handed to clients and must not be guessable.
//
//   std::string id = aijobs::NewUuid();          // "0b6c5c3e-1f0a-4c1e-9d5e-6a4f3b2c1d0e"
//   if (!aijobs::IsUuid(id)) { ... }
#pragma once

#include <string>
#include <string_view>

namespace aijobs {

// Returns a new random version-4 UUID, lower-case, 36 characters. Aborts the process if
// the system's cryptographic random source fails: an id from a weaker source is never
// returned.
std::string NewUuid();

// Returns true when `text` is a UUID in canonical 8-4-4-4-12 hex form (any case).
bool IsUuid(std::string_view text);

namespace uuid_internal {
// The random source NewUuid draws from, with RAND_bytes' contract (returns 1 on success).
using RandomBytesFn = int (*)(unsigned char* buf, int num);
// Replaces the random source (nullptr restores RAND_bytes) and returns the previous one.
// For tests only: not synchronised with concurrent NewUuid calls.
RandomBytesFn SetRandomBytesForTesting(RandomBytesFn fn);
}  // namespace uuid_internal

}  // namespace aijobs
