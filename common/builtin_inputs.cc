#include "common/builtin_inputs.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace aijobs {
namespace {

using google::protobuf::Struct;
using google::protobuf::Value;

absl::Status Invalid(std::string message) { return absl::InvalidArgumentError(message); }

absl::Status ParseModel(const Struct& input, std::string* model) {
  auto it = input.fields().find("model");
  if (it == input.fields().end() || it->second.kind_case() == Value::kNullValue) {
    return absl::OkStatus();
  }
  if (it->second.kind_case() != Value::kStringValue) return Invalid("input.model must be a string");
  *model = it->second.string_value();
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<BuiltinChatInput> ParseBuiltinChatInput(const Struct& input) {
  BuiltinChatInput out;
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
    BuiltinChatMessage message;
    auto content = m.find("content");
    if (content == m.end() || content->second.kind_case() != Value::kStringValue) {
      return Invalid(absl::StrCat(where, ".content must be a string"));
    }
    message.content = content->second.string_value();
    auto role = m.find("role");
    if (role == m.end() || role->second.kind_case() == Value::kNullValue) {
      message.role = "user";
    } else if (role->second.kind_case() != Value::kStringValue ||
               role->second.string_value().empty()) {
      return Invalid(
          absl::StrCat(where,
                       ".role must be a string such as \"user\" or \"system\" (or absent: "
                       "\"user\")"));
    } else {
      message.role = role->second.string_value();
    }
    out.messages.push_back(std::move(message));
  }
  if (absl::Status s = ParseModel(input, &out.model); !s.ok()) return s;
  if (auto it = fields.find("max_tokens");
      it != fields.end() && it->second.kind_case() != Value::kNullValue) {
    double v = it->second.number_value();
    if (it->second.kind_case() != Value::kNumberValue || !(v >= 0 && v <= 1e7) ||
        v != std::floor(v)) {
      return Invalid("input.max_tokens must be a non-negative integer");
    }
    out.max_tokens = static_cast<int>(v);
  }
  if (auto it = fields.find("temperature");
      it != fields.end() && it->second.kind_case() != Value::kNullValue) {
    double v = it->second.number_value();
    if (it->second.kind_case() != Value::kNumberValue || !(v >= 0 && v <= 2)) {
      return Invalid("input.temperature must be a number between 0 and 2");
    }
    out.temperature = v;
  }
  return out;
}

absl::StatusOr<BuiltinEmbedInput> ParseBuiltinEmbedInput(const Struct& input) {
  BuiltinEmbedInput out;
  auto texts = input.fields().find("texts");
  if (texts == input.fields().end() || texts->second.kind_case() != Value::kListValue ||
      texts->second.list_value().values_size() == 0) {
    return Invalid("input.texts must be a non-empty list of strings");
  }
  const auto& list = texts->second.list_value().values();
  for (int i = 0; i < list.size(); ++i) {
    if (list[i].kind_case() != Value::kStringValue) {
      return Invalid(absl::StrCat("input.texts[", i, "] must be a string"));
    }
    out.texts.push_back(list[i].string_value());
  }
  if (absl::Status s = ParseModel(input, &out.model); !s.ok()) return s;
  return out;
}

}  // namespace aijobs
