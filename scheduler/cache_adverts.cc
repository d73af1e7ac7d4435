#include "scheduler/cache_adverts.h"

#include "absl/strings/str_cat.h"
#include "common/time_util.h"

namespace aijobs::scheduler {

std::string ModelOf(const google::protobuf::Struct& input) {
  auto it = input.fields().find("model");
  if (it == input.fields().end() ||
      it->second.kind_case() != google::protobuf::Value::kStringValue) {
    return "";
  }
  return it->second.string_value();
}

absl::Status ValidateCacheAdverts(
    const google::protobuf::RepeatedPtrField<v1::CacheAdvert>& adverts) {
  for (int i = 0; i < adverts.size(); ++i) {
    const auto& ttl = adverts[i].ttl();
    if (ttl.seconds() < 0 || ttl.nanos() < 0 || FromProtoDuration(ttl) > kMaxCacheTtl) {
      return absl::InvalidArgumentError(
          absl::StrCat("cache_adverts[", i, "].ttl (job type \"", adverts[i].job_type(),
                       "\", model \"", adverts[i].model(), "\") must be between 0 and 30 days"));
    }
  }
  return absl::OkStatus();
}

void CacheAdvertRegistry::Update(
    const google::protobuf::RepeatedPtrField<v1::CacheAdvert>& adverts) {
  if (adverts.empty()) return;
  absl::MutexLock lock(&mu_);
  for (const auto& a : adverts) {
    absl::Duration ttl = FromProtoDuration(a.ttl());
    if (ttl > absl::ZeroDuration()) {
      ttl_[{a.job_type(), a.model()}] = ttl;
    } else {
      ttl_.erase({a.job_type(), a.model()});
    }
  }
  empty_.store(ttl_.empty(), std::memory_order_release);
}

absl::Duration CacheAdvertRegistry::TtlFor(const std::string& type,
                                           const google::protobuf::Struct& input) {
  if (empty_.load(std::memory_order_acquire)) return absl::ZeroDuration();
  absl::MutexLock lock(&mu_);
  auto it = ttl_.find(std::make_pair(type, ModelOf(input)));
  return it == ttl_.end() ? absl::ZeroDuration() : it->second;
}

}  // namespace aijobs::scheduler
