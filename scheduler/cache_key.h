// Response-cache keys: SHA-256 of a canonical serialization of (tenant, job type, input), so
// two requests that mean the same thing (same values, any key order) share one key, any
// change of value changes it, and tenants never share entries.
//
//   std::string key = CacheKey(caller.tenant_id, request.type(), request.input());  // 32 bytes
//   std::string canonical = CanonicalCacheRequest("default", "chat", input);       // for logs
//   spdlog::debug("cache key {}", HexString(key));
#pragma once

#include <string>

#include "google/protobuf/struct.pb.h"

namespace aijobs::scheduler {

// The canonical text of one request: a JSON array [tenant, type, input] where object keys are
// sorted (bytewise) at every depth, strings are escaped one way, and numbers are written in
// one form (printf "%.17g", exact for every double; -0 as 0; NaN and infinities as strings that
// JSON input cannot produce). Two inputs that protobuf considers equal give equal text.
std::string CanonicalCacheRequest(const std::string& tenant_id, const std::string& type,
                                  const google::protobuf::Struct& input);

// SHA-256 (raw 32 bytes) of CanonicalCacheRequest; empty if hashing failed (then the request
// must not use the cache).
std::string CacheKey(const std::string& tenant_id, const std::string& type,
                     const google::protobuf::Struct& input);

// Lower-case hex of `bytes`.
std::string HexString(const std::string& bytes);

}  // namespace aijobs::scheduler
