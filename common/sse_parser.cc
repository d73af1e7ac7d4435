#include "common/sse_parser.h"

#include <cstring>

namespace aijobs {

bool SseParser::Feed(absl::string_view bytes, absl::FunctionRef<bool(const SseEvent&)> on_event) {
  const char* p = bytes.data();
  const char* end = p + bytes.size();
  if (!bom_checked_) {
    // Wait for three bytes (or a line end) before deciding about a BOM split across chunks.
    if (line_.size() + (end - p) < 3 && std::memchr(p, '\n', end - p) == nullptr &&
        std::memchr(p, '\r', end - p) == nullptr) {
      line_.append(p, end - p);
      return true;
    }
    bom_checked_ = true;
    std::string head = line_;
    head.append(p, std::min<size_t>(end - p, 3));
    if (head.compare(0, 3, "\xEF\xBB\xBF") == 0) {
      size_t from_line = std::min<size_t>(line_.size(), 3);
      line_.erase(0, from_line);
      p += 3 - from_line;
    }
  }
  if (skip_lf_ && p < end) {
    skip_lf_ = false;
    if (*p == '\n') ++p;
  }
  while (p < end) {
    const char* eol = p;
    while (eol < end && *eol != '\n' && *eol != '\r') ++eol;
    if (eol == end) {
      line_.append(p, end - p);
      return true;
    }
    bool ok;
    if (line_.empty()) {
      ok = ProcessLine(absl::string_view(p, eol - p), on_event);
    } else {
      line_.append(p, eol - p);
      std::string line;
      line.swap(line_);
      ok = ProcessLine(line, on_event);
    }
    if (*eol == '\r') {
      if (eol + 1 == end) {
        skip_lf_ = true;
      } else if (eol[1] == '\n') {
        ++eol;
      }
    }
    p = eol + 1;
    if (!ok) return false;
  }
  return true;
}

bool SseParser::ProcessLine(absl::string_view line,
                            absl::FunctionRef<bool(const SseEvent&)> on_event) {
  if (line.empty()) {
    if (!has_data_) {
      event_.event.clear();
      return true;
    }
    has_data_ = false;
    if (!event_.data.empty()) event_.data.pop_back();  // the last line's "\n"
    if (event_.event.empty()) event_.event = "message";
    event_.id = last_id_;
    bool go_on = on_event(event_);
    event_.event.clear();
    event_.data.clear();
    return go_on;
  }
  if (line[0] == ':') return true;  // comment (keep-alive)
  absl::string_view field = line;
  absl::string_view value;
  if (size_t colon = line.find(':'); colon != absl::string_view::npos) {
    field = line.substr(0, colon);
    value = line.substr(colon + 1);
    if (!value.empty() && value[0] == ' ') value.remove_prefix(1);
  }
  if (field == "data") {
    event_.data.append(value.data(), value.size());
    event_.data.push_back('\n');
    has_data_ = true;
  } else if (field == "event") {
    event_.event.assign(value.data(), value.size());
  } else if (field == "id") {
    if (value.find('\0') == absl::string_view::npos) last_id_.assign(value.data(), value.size());
  } else if (field == "retry") {
    if (!value.empty() && value.find_first_not_of("0123456789") == absl::string_view::npos &&
        value.size() < 12) {
      retry_ms_ = std::stol(std::string(value));
    }
  }
  // Other fields are ignored, as the spec says.
  return true;
}

}  // namespace aijobs
