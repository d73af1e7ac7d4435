// The `chat` job type: input {model?, messages: [{role, content}], max_tokens?, temperature?,
// <provider>?: {...}} -> streamed deltas -> result {text, model, usage: {prompt_tokens,
// completion_tokens}}, where text is exactly the concatenation of the streamed deltas.
//
//   registry.Register("chat", [&provider](std::shared_ptr<JobContext> ctx) {
//     return std::make_shared<ChatHandler>(std::move(ctx), &provider); });
//   absl::StatusOr<ChatRequest> r = ParseChatInput(input, "sim");  // validation alone
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

// Builds a ChatRequest from a chat job's input; input.<provider_name> (an object) becomes
// provider_options. INVALID_ARGUMENT says which field is wrong and what it must be.
absl::StatusOr<ChatRequest> ParseChatInput(const google::protobuf::Struct& input,
                                           const std::string& provider_name);

class ChatHandler : public ProviderCallHandler {
 public:
  // `provider` must outlive the handler.
  ChatHandler(std::shared_ptr<JobContext> context, LlmProvider* provider)
      : ProviderCallHandler(std::move(context), provider) {}

  void Start() override;
};

}  // namespace aijobs::worker
