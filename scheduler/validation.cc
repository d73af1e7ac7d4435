#include "scheduler/validation.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "aijobs/v1/internal.pb.h"
#include "common/builtin_inputs.h"
#include "common/text.h"
#include "common/time_util.h"
#include "common/uuid.h"
#include "scheduler/cache_adverts.h"

namespace aijobs::scheduler {
namespace {

constexpr absl::Duration kMaxAttemptTimeout = absl::Hours(24);
constexpr absl::Duration kMaxQueueTimeout = absl::Hours(24 * 7);

bool IsValidTypeName(const std::string& t) {
  if (t.empty() || t.size() > 64) return false;
  for (char c : t) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.';
    if (!ok) return false;
  }
  return true;
}

// Objects and lists nested deeper than this are refused: protobuf will not print a message
// nested much deeper (about 48 levels), so a stored job like that could never be read back.
constexpr int kMaxNesting = 32;

bool WithinNesting(const google::protobuf::Struct& s, int levels_left);

bool WithinNesting(const google::protobuf::Value& v, int levels_left) {
  switch (v.kind_case()) {
    case google::protobuf::Value::kStructValue:
      return WithinNesting(v.struct_value(), levels_left);
    case google::protobuf::Value::kListValue:
      if (levels_left <= 0) return false;
      for (const auto& e : v.list_value().values()) {
        if (!WithinNesting(e, levels_left - 1)) return false;
      }
      return true;
    default:
      return true;
  }
}

// True when `s` (level 1) and everything in it nests at most `levels_left` levels.
bool WithinNesting(const google::protobuf::Struct& s, int levels_left) {
  if (levels_left <= 0) return false;
  for (const auto& [key, value] : s.fields()) {
    if (!WithinNesting(value, levels_left - 1)) return false;
  }
  return true;
}

absl::Status ValidateNesting(const google::protobuf::Struct& s, absl::string_view field) {
  if (WithinNesting(s, kMaxNesting)) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(field, " nested deeper than ", kMaxNesting, " levels (objects and lists)"));
}

absl::Status ValidateLabels(const google::protobuf::Map<std::string, std::string>& labels) {
  for (const auto& [key, value] : labels) {
    if (absl::Status s = ValidateText(key, "labels key"); !s.ok()) return s;
    if (absl::Status s = ValidateText(value, absl::StrCat("labels[\"", key, "\"]")); !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

// What a submit and a pre-composed cache entry both carry: a well-formed type name and an
// input within the nesting and size limits. A submit's `labels` are stored with its input,
// so they count toward the size (nullptr: none).
absl::Status ValidateTypeAndInput(const std::string& type, const google::protobuf::Struct& input,
                                  const google::protobuf::Map<std::string, std::string>* labels,
                                  const SubmitLimits& limits) {
  if (type.empty()) return absl::InvalidArgumentError("type is required (e.g. \"chat\")");
  if (!IsValidTypeName(type)) {
    return absl::InvalidArgumentError(
        absl::StrCat("type \"", type, "\" is not a valid job type name (letters, digits, _ - .)"));
  }
  if (absl::Status s = ValidateNesting(input, "input"); !s.ok()) return s;
  size_t input_bytes = input.ByteSizeLong();
  size_t label_bytes = 0;
  if (labels != nullptr && !labels->empty()) {
    v1::internal::JobSpec labels_only;  // the labels as the stored spec holds them
    *labels_only.mutable_labels() = *labels;
    label_bytes = labels_only.ByteSizeLong();
  }
  if (static_cast<int64_t>(input_bytes + label_bytes) > limits.max_input_bytes) {
    return absl::InvalidArgumentError(
        label_bytes == 0
            ? absl::StrCat("input is ", input_bytes, " bytes, over the limit of ",
                           limits.max_input_bytes, " bytes")
            : absl::StrCat("input and labels are ", input_bytes + label_bytes, " bytes (labels ",
                           label_bytes, "), over the limit of ", limits.max_input_bytes, " bytes"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateSubmit(const v1::SubmitJobRequest& request, const SubmitLimits& limits,
                            const std::function<bool(const std::string&)>& is_known_type) {
  if (absl::Status s =
          ValidateTypeAndInput(request.type(), request.input(), &request.labels(), limits);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = ValidateLabels(request.labels()); !s.ok()) return s;
  if (request.max_attempts() < 0 || request.max_attempts() > limits.max_attempts_cap) {
    return absl::InvalidArgumentError(absl::StrCat("max_attempts must be between 1 and ",
                                                   limits.max_attempts_cap, " (0 = default 3)"));
  }
  if (request.idempotency_key().size() > 256) {
    return absl::InvalidArgumentError("idempotency_key must be at most 256 characters");
  }
  if (absl::Status s = ValidateText(request.idempotency_key(), "idempotency_key"); !s.ok()) {
    return s;
  }
  if (request.priority() < kMinPriority || request.priority() > kMaxPriority) {
    return absl::InvalidArgumentError(absl::StrCat("priority must be between ", kMinPriority,
                                                   " and ", kMaxPriority, " (higher runs first)"));
  }
  const absl::Duration queue_timeout = FromProtoDuration(request.queue_timeout());
  if (request.queue_timeout().seconds() < 0 || request.queue_timeout().nanos() < 0 ||
      (queue_timeout != absl::ZeroDuration() &&
       (queue_timeout < absl::Seconds(1) || queue_timeout > kMaxQueueTimeout))) {
    return absl::InvalidArgumentError(
        "queue_timeout must be 0 (the scheduler's default) or between 1s and 7 days (604800s)");
  }
  // Unset (0) means the scheduler's default; anything else is an attempt timeout between 1 ms
  // (smaller ones used to round to 0, the default, in silence) and 24 h (larger ones
  // overflowed to 9223372036 s).
  const absl::Duration timeout = FromProtoDuration(request.timeout());
  if (request.timeout().seconds() < 0 || request.timeout().nanos() < 0 ||
      (timeout != absl::ZeroDuration() &&
       (timeout < absl::Milliseconds(1) || timeout > kMaxAttemptTimeout))) {
    return absl::InvalidArgumentError(
        "timeout must be 0 (the scheduler's default) or between 1ms and 24h (86400s)");
  }
  const auto& cache_ttl = request.cache().ttl();
  if (cache_ttl.seconds() < 0 || cache_ttl.nanos() < 0 ||
      FromProtoDuration(cache_ttl) > kMaxCacheTtl) {
    return absl::InvalidArgumentError(
        "cache.ttl must be between 0 (no caching) and 30 days (2592000s)");
  }
  // The built-in types' inputs are checked with the parser their handlers use.
  if (request.type() == "chat") {
    if (absl::Status s = ParseBuiltinChatInput(request.input()).status(); !s.ok()) return s;
  }
  if (request.type() == "embed") {
    if (absl::Status s = ParseBuiltinEmbedInput(request.input()).status(); !s.ok()) return s;
  }
  if (!is_known_type(request.type())) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown job type \"", request.type(),
                     "\": no worker has registered it and it is not built in (chat, embed)"));
  }
  return absl::OkStatus();
}

absl::Status ValidatePutCachedResult(const v1::PutCachedResultRequest& request,
                                     const SubmitLimits& limits) {
  if (absl::Status s = ValidateTypeAndInput(request.type(), request.input(), nullptr, limits);
      !s.ok()) {
    return s;
  }
  if (!request.has_result()) {
    return absl::InvalidArgumentError("result is required: the answer to serve for this input");
  }
  if (absl::Status s = ValidateNesting(request.result(), "result"); !s.ok()) return s;
  absl::Duration ttl = FromProtoDuration(request.ttl());
  if (request.ttl().seconds() < 0 || request.ttl().nanos() < 0 || ttl < absl::Seconds(1) ||
      ttl > kMaxCacheTtl) {
    return absl::InvalidArgumentError("ttl is required, between 1s and 30 days (2592000s)");
  }
  return absl::OkStatus();
}

absl::Status ValidateWorkerHello(const v1::WorkerHello& hello) {
  if (hello.job_types().empty() || hello.slots() <= 0) {
    return absl::InvalidArgumentError(
        "hello must name at least one job type and a positive slots count");
  }
  if (hello.job_types_size() > kMaxWorkerJobTypes) {
    return absl::InvalidArgumentError(absl::StrCat("hello names ", hello.job_types_size(),
                                                   " job types; a worker serves at most ",
                                                   kMaxWorkerJobTypes));
  }
  for (const std::string& t : hello.job_types()) {
    if (!IsValidTypeName(t)) {
      return absl::InvalidArgumentError(
          absl::StrCat("hello: job type \"", Utf8Prefix(t, 64),
                       "\" is not a valid job type name (1-64 letters, digits, _ - .)"));
    }
  }
  if (hello.slots() > kMaxWorkerSlots) {
    return absl::InvalidArgumentError(
        absl::StrCat("hello: slots must be between 1 and ", kMaxWorkerSlots));
  }
  if (hello.worker_id().size() > 128) {
    return absl::InvalidArgumentError("hello: worker_id must be at most 128 bytes");
  }
  return ValidateText(hello.worker_id(), "hello: worker_id");
}

absl::Status ValidateJobId(const std::string& job_id) {
  if (job_id.empty()) return absl::InvalidArgumentError("job_id is required");
  if (!IsUuid(job_id)) {
    return absl::InvalidArgumentError(
        absl::StrCat("job_id \"", Utf8Prefix(job_id, 64), "\" is not a UUID"));
  }
  return absl::OkStatus();
}

namespace {

bool IsNameChar(char c, bool upper_ok) {
  return absl::ascii_isdigit(static_cast<unsigned char>(c)) || (c >= 'a' && c <= 'z') ||
         (upper_ok && c >= 'A' && c <= 'Z') || c == '_' || c == '-' || (upper_ok && c == '.');
}

bool IsName(const std::string& s, size_t max, bool upper_ok) {
  return !s.empty() && s.size() <= max &&
         std::all_of(s.begin(), s.end(), [&](char c) { return IsNameChar(c, upper_ok); });
}

}  // namespace

absl::Status ValidateCreateApiKey(const v1::CreateApiKeyRequest& request) {
  if (!IsName(request.name(), 64, true)) {
    return absl::InvalidArgumentError(
        absl::StrCat("name \"", Utf8Prefix(request.name(), 64),
                     "\" must be 1-64 letters, digits, '.', '_' or '-'"));
  }
  if (request.roles_size() > 16) return absl::InvalidArgumentError("at most 16 roles");
  bool worker = false;
  for (const std::string& r : request.roles()) {
    if (!IsName(r, 32, false)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "role \"", Utf8Prefix(r, 32), "\" must be 1-32 lowercase letters, digits, '_' or '-'"));
    }
    worker |= r == "worker";
  }
  if (worker && request.roles_size() > 1) {
    return absl::InvalidArgumentError(
        "a worker key has the worker role only (a worker credential cannot call JobService)");
  }
  if (!worker && request.job_types_size() > 0) {
    return absl::InvalidArgumentError("job_types applies to worker keys (role worker) only");
  }
  if (request.job_types_size() > kMaxWorkerJobTypes) {
    return absl::InvalidArgumentError(absl::StrCat("at most ", kMaxWorkerJobTypes, " job_types"));
  }
  for (const std::string& t : request.job_types()) {
    if (!IsValidTypeName(t)) {
      return absl::InvalidArgumentError(
          absl::StrCat("job type \"", Utf8Prefix(t, 64),
                       "\" is not a valid job type name (1-64 letters, "
                       "digits, _ - .)"));
    }
  }
  if (request.has_ttl()) {
    absl::Duration ttl = FromProtoDuration(request.ttl());
    if (ttl < absl::Minutes(1) || ttl > absl::Hours(24 * 3650)) {
      return absl::InvalidArgumentError("ttl must be between 1 minute and 10 years (unset: none)");
    }
  }
  return absl::OkStatus();
}

}  // namespace aijobs::scheduler
