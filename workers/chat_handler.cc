#include "workers/chat_handler.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"

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

absl::Status Invalid(const std::string& message) { return absl::InvalidArgumentError(message); }

}  // namespace

absl::StatusOr<ChatRequest> ParseChatInput(const Struct& input, const std::string& provider_name) {
  ChatRequest request;
  const auto& fields = input.fields();

  auto messages = fields.find("messages");
  if (messages == fields.end() || messages->second.kind_case() != Value::kListValue ||
      messages->second.list_value().values_size() == 0) {
    return Invalid("input.messages must be a non-empty list of {role, content} objects");
  }
  const auto& list = messages->second.list_value().values();
  for (int i = 0; i < list.size(); ++i) {
    const std::string where = absl::StrCat("input.messages[", i, "]");
    if (list[i].kind_case() != Value::kStructValue) {
      return Invalid(absl::StrCat(where, " must be an object {role, content}"));
    }
    const auto& m = list[i].struct_value().fields();
    ChatMessage message;
    auto content = m.find("content");
    if (content == m.end() || content->second.kind_case() != Value::kStringValue) {
      return Invalid(absl::StrCat(where, ".content must be a string"));
    }
    message.content = content->second.string_value();
    auto role = m.find("role");
    if (role == m.end() || role->second.kind_case() == Value::kNullValue) {
      message.role = "user";
    } else if (role->second.kind_case() != Value::kStringValue) {
      return Invalid(absl::StrCat(where, ".role must be a string such as \"user\""));
    } else {
      message.role = role->second.string_value();
    }
    request.messages.push_back(std::move(message));
  }

  if (absl::Status s = ParseModelField(input, &request.model); !s.ok()) return s;
  if (auto it = fields.find("max_tokens");
      it != fields.end() && it->second.kind_case() != Value::kNullValue) {
    double v = it->second.number_value();
    if (it->second.kind_case() != Value::kNumberValue || !(v >= 0 && v <= 1e7) ||
        v != std::floor(v)) {
      return Invalid("input.max_tokens must be a non-negative integer");
    }
    request.max_tokens = static_cast<int>(v);
  }
  if (auto it = fields.find("temperature");
      it != fields.end() && it->second.kind_case() != Value::kNullValue) {
    double v = it->second.number_value();
    if (it->second.kind_case() != Value::kNumberValue || !(v >= 0 && v <= 2)) {
      return Invalid("input.temperature must be a number between 0 and 2");
    }
    request.temperature = v;
  }
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
