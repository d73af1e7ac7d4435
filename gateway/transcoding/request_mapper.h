// Request/response mapping between HTTP (path bindings, query string, JSON body) and protobuf
// messages, following google/api/http.proto and grpc-gateway's behaviour.
//
//   std::unique_ptr<Message> req(factory.GetPrototype(route->method->input_type())->New());
//   absl::Status s = BuildRequest(*route, match.bindings, query, body, JsonOptions{}, req.get());
//   absl::StatusOr<std::string> json = ResponseToJson(*route, *reply);
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "gateway/transcoding/path_template.h"
#include "gateway/transcoding/route_table.h"
#include "google/protobuf/message.h"

namespace aijobs::gateway {

// The deepest nesting of JSON objects and arrays (combined; the body's own top-level object
// or array is level 1) a request body may have. Protobuf 3.21's JSON converter takes
// super-quadratic time in the nesting depth (16,000 nested arrays: seconds on the io thread),
// so deeper bodies are refused by a linear scan before it sees them.
inline constexpr int kMaxJsonDepth = 32;

// Returns INVALID_ARGUMENT, saying what and where, when `json` nests objects and arrays
// deeper than `max_depth` levels or repeats a key within one object (keys compared after
// their escapes are decoded: protobuf's parser would merge or overwrite the two silently),
// else OK. One linear pass; brackets inside strings do not count. It does not validate
// JSON: malformed input is left to the JSON parser, which reports it properly.
absl::Status CheckJsonShape(absl::string_view json, int max_depth = kMaxJsonDepth);

struct JsonOptions {
  // Accept (and drop) unknown JSON fields and unknown query parameters instead of answering
  // INVALID_ARGUMENT.
  bool lenient = false;
  // Responses: print fields that hold their default value (0, "", false, [], {}) too, as
  // grpc-gateway v2 does (EmitUnpopulated). Default false: proto3 JSON omits them.
  bool emit_defaults = false;
  // Query parameter names the caller consumes itself (e.g. "last_event_id"); the mapper
  // skips them instead of treating them as unknown fields.
  std::vector<std::string> reserved_query_params;
};

// Fills `request` (of type route.method->input_type(); cleared first) from an HTTP request:
//  - body "*": the body is the request message's JSON; body "field": the body is that
//    field's JSON; no body: the body must be empty (whitespace only is treated as empty).
//    An empty body with body "*"/"field" leaves the fields unset. A body nested deeper than
//    kMaxJsonDepth, or with a key twice in one object, is INVALID_ARGUMENT before the JSON
//    parser sees it.
//  - query (after '?', still encoded; '+' is a space): every field not bound by the path or
//    the body, by proto name or json name, nested with dots (?sub.subfield=x), repeated by
//    repetition (?tag=a&tag=b), enums by name or number, bools true/false/1/0, 64-bit ints
//    as decimals, bytes as base64, Duration ("5s"), Timestamp (RFC 3339), FieldMask and the
//    wrapper types. A parameter naming a field bound by the path or covered by the body is
//    ignored (grpc-gateway does the same); a non-repeated field given twice is an error.
//  - path bindings: set last, so they win over the body and the query.
// Errors are INVALID_ARGUMENT with a message for people: malformed JSON carries the parser's
// reason and position, unknown JSON fields and query parameters are named (unless lenient).
absl::Status BuildRequest(const Route& route, const std::vector<VariableBinding>& bindings,
                          absl::string_view query, absl::string_view body,
                          const JsonOptions& options, google::protobuf::Message* request);

// Returns the JSON of `response` (proto3 JSON mapping, lowerCamelCase json names, enums as
// names, 64-bit ints as strings), or of the route's response_body field when set. Fields with
// default values are omitted unless options.emit_defaults.
absl::StatusOr<std::string> ResponseToJson(const Route& route,
                                           const google::protobuf::Message& response);
absl::StatusOr<std::string> ResponseToJson(const Route& route,
                                           const google::protobuf::Message& response,
                                           const JsonOptions& options);

// Parses a query string into decoded (key, value) pairs in order; "k" alone has value "".
// Returns INVALID_ARGUMENT on a malformed %-escape.
absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ParseQueryString(
    absl::string_view query);

}  // namespace aijobs::gateway
