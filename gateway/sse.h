// Framing of server-streaming responses for HTTP clients: Server-Sent Events (one event per
// message, resumable by id) and newline-delimited JSON (grpc-gateway's streaming shape).
//
//   std::string frame = FormatSseEvent("output_delta", "7", R"({"text":"hi"})");
//   // "event: output_delta\nid: 7\ndata: {\"text\":\"hi\"}\n\n"
//   std::string line = FormatNdjsonResult(R"({"seq":"7"})");  // {"result":{"seq":"7"}}\n
#pragma once

#include <string>

#include "absl/strings/string_view.h"

namespace aijobs::gateway {

// The comment frame sent to keep idle event streams (and proxies) from timing out.
inline constexpr absl::string_view kSseHeartbeat = ": ping\n\n";

// One SSE event. `event` and `id` are omitted when empty; `data` may hold newlines (each
// line becomes its own `data:` field, which the client joins back with '\n'). CR and LF in
// `event` or `id` would end the field early, so they are removed.
std::string FormatSseEvent(absl::string_view event, absl::string_view id, absl::string_view data);

// `{"result": <message_json>}` plus '\n'.
std::string FormatNdjsonResult(absl::string_view message_json);
// `{"error": <status_json>}` plus '\n'.
std::string FormatNdjsonError(absl::string_view status_json);

}  // namespace aijobs::gateway
