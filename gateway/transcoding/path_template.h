// PathTemplate: the URL path template grammar of google/api/http.proto, parsed once and matched
// against request paths.
//
//   auto t = aijobs::gateway::PathTemplate::Parse("/v1/jobs/{job_id}:cancel");
//   auto bindings = t->Match("/v1/jobs/abc:cancel");  // {{"job_id"}, "abc"}
//   if (!bindings) { /* 404 */ }
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace aijobs::gateway {

// One path variable matched in a request: the request field it sets and its decoded value.
struct VariableBinding {
  std::vector<std::string> field_path;  // e.g. {"sub", "subfield"} for {sub.subfield}
  std::string value;
};

// A parsed template, grammar (http.proto):
//   Template = "/" Segments [ Verb ] ;  Segments = Segment { "/" Segment } ;
//   Segment  = "*" | "**" | LITERAL | Variable ;
//   Variable = "{" FieldPath [ "=" Segments ] "}" ;  Verb = ":" LITERAL ;
// The template "/" (no segments) is accepted too and matches only "/".
class PathTemplate {
 public:
  // A template variable: its field path and the range [begin, end) of template segments it
  // covers (end is the segment count when the variable ends with "**").
  struct Variable {
    std::vector<std::string> field_path;
    size_t begin = 0;
    size_t end = 0;
  };

  // Parses `text`. Errors are INVALID_ARGUMENT and name the template and the offset, e.g.
  // `path template "/v1/{x": unterminated variable at offset 4`.
  static absl::StatusOr<PathTemplate> Parse(absl::string_view text);

  // Matches a request path (no query string, still percent-encoded). Returns the variable
  // bindings in template order with their values percent-decoded: single-segment variables
  // fully, multi-segment ones except that "%2F" stays encoded (as http.proto specifies).
  // Returns nullopt when the path does not match, including when a bound value has a
  // malformed %-escape. `*` and single-segment variables never match an empty segment.
  std::optional<std::vector<VariableBinding>> Match(absl::string_view path) const;

  // The template as written.
  const std::string& text() const { return text_; }
  // Field paths of the variables, in template order.
  std::vector<std::vector<std::string>> variable_field_paths() const;
  const std::vector<Variable>& variables() const { return variables_; }
  // The custom verb without ':' (e.g. "cancel"), or "" when there is none.
  const std::string& verb() const { return verb_; }
  // Number of literal segments plus one for a verb: the specificity used to choose between
  // several matching templates (more literals = more specific).
  int literal_count() const;
  // The template in OpenAPI form: every variable as "{field.path}", the verb kept literally,
  // e.g. "/v1/{name=shelves/*}:undelete" -> "/v1/{name}:undelete".
  std::string OpenApiPath() const;

 private:
  enum class SegmentKind { kLiteral, kSingle /* "*" */, kMulti /* "**" */ };
  struct Segment {
    SegmentKind kind;
    std::string literal;
  };

  std::string text_;
  std::vector<Segment> segments_;
  std::vector<Variable> variables_;
  std::string verb_;
};

// Decodes %XX escapes in `in`. With `keep_slash`, "%2F"/"%2f" stay encoded. With
// `plus_is_space` (query strings), '+' decodes to ' '. Returns nullopt on a malformed escape.
std::optional<std::string> PercentDecode(absl::string_view in, bool keep_slash, bool plus_is_space);

}  // namespace aijobs::gateway
