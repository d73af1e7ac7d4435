// The input schemas of the built-in job types, parsed in one place: the scheduler checks a
// submit with these (so a bad input is refused at once, not after a trip through the queue)
// and the worker's chat and embed handlers build their provider requests from the same parse,
// so the two can never disagree.
//
//   absl::StatusOr<BuiltinChatInput> chat = ParseBuiltinChatInput(job.input());
//   absl::StatusOr<BuiltinEmbedInput> embed = ParseBuiltinEmbedInput(job.input());
#pragma once

#include <google/protobuf/struct.pb.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace aijobs {

struct BuiltinChatMessage {
  std::string role;  // "user" when the message gives none
  std::string content;
};

// chat: {"messages": [{"role"?: string, "content": string}, ...] (non-empty), "model"?:
// string, "max_tokens"?: integer 0..10^7, "temperature"?: number 0..2}. Other fields (the
// provider's own options, e.g. "sim") are the handler's business.
struct BuiltinChatInput {
  std::vector<BuiltinChatMessage> messages;
  std::string model;
  int max_tokens = 0;
  std::optional<double> temperature;
};

// embed: {"texts": [string, ...] (non-empty), "model"?: string}.
struct BuiltinEmbedInput {
  std::vector<std::string> texts;
  std::string model;
};

// INVALID_ARGUMENT naming the field and what it must be.
absl::StatusOr<BuiltinChatInput> ParseBuiltinChatInput(const google::protobuf::Struct& input);
absl::StatusOr<BuiltinEmbedInput> ParseBuiltinEmbedInput(const google::protobuf::Struct& input);

}  // namespace aijobs
