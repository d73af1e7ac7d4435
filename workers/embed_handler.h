// The `embed` job type: input {model?, texts: [string, ...], <provider>?: {...}} -> result
// {vectors: [[float, ...], ...], model} with one vector per text, in order.
//
//   registry.Register("embed", [&provider](std::shared_ptr<JobContext> ctx) {
//     return std::make_shared<EmbedHandler>(std::move(ctx), &provider); });
//   absl::StatusOr<EmbedRequest> r = ParseEmbedInput(input, "sim");  // validation alone
#pragma once

#include <google/protobuf/struct.pb.h>

#include <memory>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "workers/job_handler.h"
#include "workers/llm_provider.h"
#include "workers/provider_call_handler.h"

namespace aijobs::worker {

// Builds an EmbedRequest from an embed job's input. INVALID_ARGUMENT says what is wrong.
absl::StatusOr<EmbedRequest> ParseEmbedInput(const google::protobuf::Struct& input,
                                             const std::string& provider_name);

class EmbedHandler : public ProviderCallHandler {
 public:
  // `provider` must outlive the handler.
  EmbedHandler(std::shared_ptr<JobContext> context, LlmProvider* provider)
      : ProviderCallHandler(std::move(context), provider) {}

  void Start() override;
};

}  // namespace aijobs::worker
