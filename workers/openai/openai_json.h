// The JSON options OpenAI-compatible bodies are printed and parsed with (openai.proto's
// rules), and the decoder of streamed chunks, which resolves the chunk's type once per
// process instead of once per chunk.
//
//   ChunkDecoder decoder;  // one per call: keeps its buffers warm
//   ChatCompletionChunk chunk;
//   absl::Status s = decoder.Decode(R"({"choices":[{"delta":{"content":"hi"}}]})", &chunk);
#pragma once

#include <google/protobuf/util/json_util.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "aijobs/v1/openai.pb.h"

namespace aijobs::openai {

// Parse options: unknown fields ignored (servers add fields all the time).
google::protobuf::util::JsonParseOptions OpenAiJsonParseOptions();
// Print options: the proto field names are the JSON keys.
google::protobuf::util::JsonPrintOptions OpenAiJsonPrintOptions();

// Parses `data:` payloads of a chat stream exactly as JsonStringToMessage would (same
// options, same results) but without its per-call type resolution: a stream parses one
// chunk per token, 25,000 chunks/s at 500 streams. Not thread-safe; one per call.
class ChunkDecoder {
 public:
  // Replaces *chunk with the message in `json`. INVALID_ARGUMENT when it is not one.
  absl::Status Decode(absl::string_view json, ChatCompletionChunk* chunk);

 private:
  std::string binary_;  // the chunk in protobuf wire format, reused
};

}  // namespace aijobs::openai
