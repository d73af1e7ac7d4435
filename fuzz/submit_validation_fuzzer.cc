// Fuzz target: the scheduler's input checks (scheduler/validation.h) on requests as they
// arrive over gRPC: the input is a serialized SubmitJobRequest (inputs that do not parse are
// skipped, as gRPC would refuse them). The same bytes are also checked as a
// PutCachedResultRequest, which shares the type and input checks. The input size limit is
// lowered to 16 KiB so that fuzzed inputs reach it; the code path is the one of the default.
#include <cstddef>
#include <cstdint>
#include <string>

#include "aijobs/v1/job_service.pb.h"
#include "google/protobuf/stubs/logging.h"
#include "scheduler/validation.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Protobuf logs every string field with invalid UTF-8 it refuses: noise, and slow.
  static const bool silenced = (google::protobuf::SetLogHandler(nullptr), true);
  static_cast<void>(silenced);
  aijobs::scheduler::SubmitLimits limits;
  limits.max_input_bytes = 16 * 1024;
  auto is_known_type = [](const std::string& type) {
    return type == "chat" || type == "embed" || type == "summarize";
  };
  const int n = static_cast<int>(size);
  if (aijobs::v1::SubmitJobRequest submit; submit.ParseFromArray(data, n)) {
    static_cast<void>(aijobs::scheduler::ValidateSubmit(submit, limits, is_known_type));
  }
  if (aijobs::v1::PutCachedResultRequest put; put.ParseFromArray(data, n)) {
    static_cast<void>(aijobs::scheduler::ValidatePutCachedResult(put, limits));
  }
  return 0;
}
