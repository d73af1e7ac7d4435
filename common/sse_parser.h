// An incremental Server-Sent Events parser (the WHATWG "event stream interpretation"):
// bytes go in as they arrive, in chunks split anywhere; complete events come out.
//
//   SseParser parser;
//   parser.Feed(bytes, [&](const SseEvent& e) { if (e.data == "[DONE]") ...; });
//   if (parser.has_partial_event()) ...;  // the stream ended mid-event
#pragma once

#include <string>

#include "absl/functional/function_ref.h"
#include "absl/strings/string_view.h"

namespace aijobs {

struct SseEvent {
  std::string event;  // The `event:` field; "message" when the event had none.
  std::string data;   // `data:` lines joined with "\n" (no trailing newline).
  std::string id;     // The last event id seen so far on the stream (it persists).
};

class SseParser {
 public:
  // Parses `bytes` and calls `on_event` for every event completed by them (in order). Lines
  // end with "\n", "\r\n" or "\r" (a "\r" at the end of one chunk and a "\n" at the start of
  // the next count as one line end). `on_event` may stop the parsing of the rest of this
  // chunk by returning false; Feed then returns false.
  bool Feed(absl::string_view bytes, absl::FunctionRef<bool(const SseEvent&)> on_event);

  // Whether data lines were seen that no blank line has dispatched yet (a stream cut
  // mid-event), or a line is incomplete.
  bool has_partial_event() const { return has_data_ || !line_.empty(); }

  // The last `retry:` value in milliseconds, or -1.
  long retry_ms() const { return retry_ms_; }

 private:
  // Handles one complete line (without its terminator). Returns false when on_event did.
  bool ProcessLine(absl::string_view line, absl::FunctionRef<bool(const SseEvent&)> on_event);

  std::string line_;          // Incomplete line carried over from the previous chunk.
  bool skip_lf_ = false;      // The previous chunk ended with "\r".
  bool bom_checked_ = false;  // A leading UTF-8 BOM is dropped once.
  bool has_data_ = false;     // Whether `data:` appeared since the last dispatch.
  SseEvent event_;            // The event being built (data has a trailing "\n" per line).
  std::string last_id_;
  long retry_ms_ = -1;
};

}  // namespace aijobs
