#include "gateway/sse.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace aijobs::gateway {
namespace {

void AppendField(std::string* out, absl::string_view name, absl::string_view value) {
  out->append(name.data(), name.size());
  out->append(": ");
  for (char c : value) {
    if (c != '\r' && c != '\n') out->push_back(c);
  }
  out->push_back('\n');
}

}  // namespace

std::string FormatSseEvent(absl::string_view event, absl::string_view id, absl::string_view data) {
  std::string out;
  out.reserve(data.size() + event.size() + id.size() + 24);
  if (!event.empty()) AppendField(&out, "event", event);
  if (!id.empty()) AppendField(&out, "id", id);
  // A lone CR, CRLF and LF all end a line in SSE; split on each so no line is ever merged.
  size_t start = 0;
  for (size_t i = 0; i <= data.size(); ++i) {
    if (i == data.size() || data[i] == '\n' || data[i] == '\r') {
      out.append("data: ");
      out.append(data.data() + start, i - start);
      out.push_back('\n');
      if (i + 1 < data.size() && data[i] == '\r' && data[i + 1] == '\n') ++i;
      start = i + 1;
    }
  }
  out.push_back('\n');
  return out;
}

std::string FormatNdjsonResult(absl::string_view message_json) {
  return absl::StrCat("{\"result\":", message_json, "}\n");
}

std::string FormatNdjsonError(absl::string_view status_json) {
  return absl::StrCat("{\"error\":", status_json, "}\n");
}

}  // namespace aijobs::gateway
