// Conversions between microseconds since the epoch (how the store reads times),
// absl::Time and google.protobuf.Timestamp / Duration.
//
//   *job.mutable_created_at() = aijobs::MicrosToTimestamp(row.created_us);
//   absl::Duration d = aijobs::FromProtoDuration(request.timeout());
#pragma once

#include <google/protobuf/duration.pb.h>
#include <google/protobuf/timestamp.pb.h>

#include <cstdint>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace aijobs {

google::protobuf::Timestamp MicrosToTimestamp(int64_t micros);
int64_t TimestampToMicros(const google::protobuf::Timestamp& ts);
google::protobuf::Timestamp ToProtoTimestamp(absl::Time t);
absl::Time FromProtoTimestamp(const google::protobuf::Timestamp& ts);
google::protobuf::Duration ToProtoDuration(absl::Duration d);
absl::Duration FromProtoDuration(const google::protobuf::Duration& d);
int64_t NowMicros();

}  // namespace aijobs
