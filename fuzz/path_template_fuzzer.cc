// Fuzz target: the path-template parser and matcher (gateway/transcoding/path_template.h).
// An input "<template>\n<path>" parses the template and, when it parses, matches the path
// against it (and the template's own text against it). An input without '\n' is parsed as
// a template and matched, as a request path, against the gateway's real templates. Both
// halves also go through PercentDecode in every mode.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "gateway/transcoding/path_template.h"

namespace aijobs::gateway {
namespace {

// JobService's templates (protos/aijobs/v1/job_service.proto) and http.proto's examples.
const std::vector<PathTemplate>& KnownTemplates() {
  static const std::vector<PathTemplate>* const templates = [] {
    auto* out = new std::vector<PathTemplate>;
    for (const char* text : {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/events",
                             "/v1/jobs/{job_id}:cancel", "/v1/jobs/{job_id}:retry", "/v1/cache",
                             "/v1/{name=messages/*}", "/v1/messages/{message_id}/{sub.subfield}",
                             "/v1/{name=shelves/*/books/*}", "/v1/{name=**}:undelete",
                             "/v1/**", "/{a}/{b=c/**}", "/"}) {
      absl::StatusOr<PathTemplate> t = PathTemplate::Parse(text);
      if (t.ok()) out->push_back(*std::move(t));
    }
    return out;
  }();
  return *templates;
}

void Decode(absl::string_view s) {
  for (bool keep_slash : {false, true}) {
    for (bool plus_is_space : {false, true}) {
      static_cast<void>(PercentDecode(s, keep_slash, plus_is_space));
    }
  }
}

void Exercise(const PathTemplate& t, absl::string_view path) {
  static_cast<void>(t.Match(path));
  static_cast<void>(t.variable_field_paths());
  static_cast<void>(t.literal_count());
  static_cast<void>(t.OpenApiPath());
}

}  // namespace
}  // namespace aijobs::gateway

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using aijobs::gateway::PathTemplate;
  absl::string_view input(reinterpret_cast<const char*>(data), size);
  size_t nl = input.find('\n');
  absl::string_view text = input.substr(0, nl);
  absl::StatusOr<PathTemplate> t = PathTemplate::Parse(text);
  aijobs::gateway::Decode(input);
  if (nl == absl::string_view::npos) {
    for (const PathTemplate& known : aijobs::gateway::KnownTemplates()) {
      aijobs::gateway::Exercise(known, input);
    }
    if (t.ok()) aijobs::gateway::Exercise(*t, input);
    return 0;
  }
  if (!t.ok()) return 0;
  absl::string_view path = input.substr(nl + 1);
  aijobs::gateway::Exercise(*t, path);
  aijobs::gateway::Exercise(*t, t->text());
  return 0;
}
