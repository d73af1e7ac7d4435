// Fuzz target: the Server-Sent Events parser (common/sse_parser.h). The input is one event
// stream, fed three ways: whole, one byte per Feed, and in chunks of varying size. The
// parser promises that chunks may split the stream anywhere, so the three must produce the
// same events and end in the same state; a difference aborts (a finding).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "common/sse_parser.h"

namespace aijobs {
namespace {

struct Outcome {
  std::vector<SseEvent> events;
  bool partial = false;
  long retry_ms = -1;
};

bool Same(const Outcome& a, const Outcome& b) {
  if (a.events.size() != b.events.size()) return false;
  for (size_t i = 0; i < a.events.size(); ++i) {
    const SseEvent& x = a.events[i];
    const SseEvent& y = b.events[i];
    if (x.event != y.event || x.data != y.data || x.id != y.id) return false;
  }
  return a.partial == b.partial && a.retry_ms == b.retry_ms;
}

// Feeds `stream` in chunks of the sizes `next_size` returns, in order.
template <typename NextSize>
Outcome Parse(absl::string_view stream, NextSize next_size) {
  Outcome out;
  SseParser parser;
  while (!stream.empty()) {
    size_t n = std::min(stream.size(), next_size());
    parser.Feed(stream.substr(0, n), [&](const SseEvent& e) {
      out.events.push_back(e);
      return true;
    });
    stream.remove_prefix(n);
  }
  out.partial = parser.has_partial_event();
  out.retry_ms = parser.retry_ms();
  return out;
}

}  // namespace
}  // namespace aijobs

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using aijobs::Outcome;
  absl::string_view stream(reinterpret_cast<const char*>(data), size);
  Outcome whole = aijobs::Parse(stream, [&] { return stream.size(); });
  Outcome bytewise = aijobs::Parse(stream, [] { return size_t{1}; });
  size_t i = 0;
  Outcome chunked = aijobs::Parse(stream, [&] {
    static constexpr size_t kSizes[] = {2, 3, 1, 7, 4, 64};
    return kSizes[i++ % (sizeof(kSizes) / sizeof(kSizes[0]))];
  });
  if (!aijobs::Same(whole, bytewise) || !aijobs::Same(whole, chunked)) std::abort();
  return 0;
}
