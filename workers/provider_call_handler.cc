#include "workers/provider_call_handler.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace aijobs::worker {

using google::protobuf::Struct;
using google::protobuf::Value;

absl::Status ParseModelField(const Struct& input, std::string* model) {
  const auto& fields = input.fields();
  if (auto it = fields.find("model");
      it != fields.end() && it->second.kind_case() != Value::kNullValue) {
    if (it->second.kind_case() != Value::kStringValue) {
      return absl::InvalidArgumentError("input.model must be a string");
    }
    *model = it->second.string_value();
  }
  return absl::OkStatus();
}

absl::Status ParseProviderOptions(const Struct& input, const std::string& provider_name,
                                  Struct* options) {
  const auto& fields = input.fields();
  if (auto it = fields.find(provider_name); it != fields.end()) {
    if (it->second.kind_case() != Value::kStructValue) {
      return absl::InvalidArgumentError(
          absl::StrCat("input.", provider_name, " must be an object"));
    }
    *options = it->second.struct_value();
  }
  return absl::OkStatus();
}

void ProviderCallHandler::Begin(std::unique_ptr<LlmCall> call) {
  {
    absl::MutexLock lock(&mu_);
    if (!cancelled_) {
      call_ = std::move(call);
      return;
    }
  }
  // Cancelled while starting. Cancel() may wait for a running callback: never under mu_.
  call->Cancel();
}

void ProviderCallHandler::Cancel() {
  std::unique_ptr<LlmCall> call;
  {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    call = std::move(call_);
  }
  if (call) call->Cancel();
}

}  // namespace aijobs::worker
