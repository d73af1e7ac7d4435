#include "workers/chat_handler.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/builtin_inputs.h"

namespace aijobs::worker {
namespace {

using google::protobuf::Struct;
using google::protobuf::Value;

// Accumulates the streamed text so the result's text is exactly what was emitted. Sink
// calls never overlap (LlmProvider contract), so text_ needs no lock.
class ChatResultSink : public ChatSink {
 public:
  explicit ChatResultSink(std::shared_ptr<JobContext> context) : context_(std::move(context)) {}

  void OnDelta(const std::string& text) override {
    text_ += text;
    context_->EmitDelta(text);
  }

  void OnDone(const Usage& usage, const std::string& model) override {
    Struct result;
    auto& f = *result.mutable_fields();
    f["text"].set_string_value(std::move(text_));
    f["model"].set_string_value(model);
    auto& u = *f["usage"].mutable_struct_value()->mutable_fields();
    u["prompt_tokens"].set_number_value(usage.prompt_tokens);
    u["completion_tokens"].set_number_value(usage.completion_tokens);
    context_->Succeed(std::move(result));
  }

  void OnError(const ProviderError& error) override {
    context_->Fail(error.code, error.message, error.retryable, error.retry_after);
  }

 private:
  const std::shared_ptr<JobContext> context_;
  std::string text_;
};

}  // namespace

absl::StatusOr<ChatRequest> ParseChatInput(const Struct& input, const std::string& provider_name) {
  // The schema the scheduler checked the submit with (common/builtin_inputs.h).
  absl::StatusOr<BuiltinChatInput> parsed = ParseBuiltinChatInput(input);
  if (!parsed.ok()) return parsed.status();
  ChatRequest request;
  for (BuiltinChatMessage& m : parsed->messages) {
    request.messages.push_back({std::move(m.role), std::move(m.content)});
  }
  request.model = std::move(parsed->model);
  request.max_tokens = parsed->max_tokens;
  request.temperature = parsed->temperature;
  if (absl::Status s = ParseProviderOptions(input, provider_name, &request.provider_options);
      !s.ok()) {
    return s;
  }
  return request;
}

void ChatHandler::Start() {
  absl::StatusOr<ChatRequest> request = ParseChatInput(context()->input(), provider()->name());
  if (!PrepareRequest(&request)) return;
  Begin(provider()->StartChat(*request, std::make_shared<ChatResultSink>(context())));
}

}  // namespace aijobs::worker
