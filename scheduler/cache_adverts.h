// CacheAdvertRegistry: the response-cache opt-ins that workers announce in their hello, per
// (job type, model): a submit without its own cache policy whose type and input.model match
// an advert is cached for the advert's ttl. In memory, per replica: the union over every
// worker that connected here, the latest advert for a pair winning; an advert stays after its
// worker disconnects (a model group's policy rarely changes, and a stale one only caches).
//
//   registry.Update(hello.cache_adverts());
//   absl::Duration ttl = registry.TtlFor(request.type(), request.input());  // 0: no advert
#pragma once

#include <atomic>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "aijobs/v1/worker_service.pb.h"
#include "google/protobuf/repeated_ptr_field.h"
#include "google/protobuf/struct.pb.h"

namespace aijobs::scheduler {

// Longest accepted cache ttl (submit policy, advert, pre-composed answer).
inline constexpr absl::Duration kMaxCacheTtl = absl::Hours(24 * 30);

// input.model when it is a string, "" otherwise.
std::string ModelOf(const google::protobuf::Struct& input);

// INVALID_ARGUMENT naming cache_adverts[i].ttl when one is negative or over kMaxCacheTtl.
absl::Status ValidateCacheAdverts(
    const google::protobuf::RepeatedPtrField<v1::CacheAdvert>& adverts);

class CacheAdvertRegistry {
 public:
  // Records `adverts` (assumed valid); a ttl of 0 withdraws the pair's opt-in.
  void Update(const google::protobuf::RepeatedPtrField<v1::CacheAdvert>& adverts);
  // The advertised ttl for a job of `type` with `input` (matched on ModelOf(input)), or zero.
  absl::Duration TtlFor(const std::string& type, const google::protobuf::Struct& input);

 private:
  absl::Mutex mu_;
  absl::flat_hash_map<std::pair<std::string, std::string>, absl::Duration> ttl_
      ABSL_GUARDED_BY(mu_);
  // Lets submits skip the lock while no worker advertised anything (the usual case).
  std::atomic<bool> empty_{true};
};

}  // namespace aijobs::scheduler
