// RouteTable: the HTTP routes of gRPC services, derived from their google.api.http
// annotations (including additional_bindings), and the lookup of a request's route.
//
//   auto table = RouteTable::FromServices({pool->FindServiceByName("aijobs.v1.JobService")});
//   std::vector<std::string> allowed;
//   auto match = table->Find("GET", "/v1/jobs/abc", &allowed);  // NOT_FOUND + allowed => 405
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "gateway/transcoding/path_template.h"
#include "google/protobuf/descriptor.h"

namespace aijobs::gateway {

struct Route {
  // "GET", "POST", "PUT", "PATCH", "DELETE", or a custom kind as written ("*" = any method).
  std::string http_method;
  PathTemplate path;
  const google::protobuf::MethodDescriptor* method = nullptr;
  // "" (no body), "*" (every field not bound by the path), or a top-level request field name.
  std::string body;
  // "" (the whole response message) or a top-level response field name.
  std::string response_body;
  // The gRPC method path for the generic stub, e.g. "/aijobs.v1.JobService/GetJob".
  std::string grpc_path;
  // "METHOD template", e.g. "GET /v1/jobs/{job_id}": the bounded label of metrics and logs.
  std::string label;
  bool server_streaming = false;
  // Client-streaming methods are listed too; the gateway decides whether it serves them.
  bool client_streaming = false;
};

class RouteTable {
 public:
  // Builds the routes of every annotated method of `services`, in declaration order (methods
  // without a google.api.http option get no route). Fails with INVALID_ARGUMENT naming the
  // method when a template does not parse, a path variable names a missing, repeated or
  // non-scalar field, a body/response_body field does not exist or is repeated, a GET route
  // has a body, or two methods claim the same HTTP method and template.
  static absl::StatusOr<RouteTable> FromServices(
      const std::vector<const google::protobuf::ServiceDescriptor*>& services);

  struct Match {
    const Route* route;
    std::vector<VariableBinding> bindings;
  };

  // Finds the route for `http_method` (exact, case-sensitive) and `path` (percent-encoded;
  // anything from '?' on is ignored). When several routes match, the one with the most
  // literal segments (a verb counts as one) wins, ties by declaration order.
  // Returns NOT_FOUND when nothing matches. When some route's path matches but none has this
  // method, also NOT_FOUND, and `*allowed` (if not null) gets the sorted, unique methods of the
  // routes whose path matches: the caller answers 405 with an Allow header. `*allowed` is
  // cleared otherwise.
  absl::StatusOr<Match> Find(absl::string_view http_method, absl::string_view path,
                             std::vector<std::string>* allowed) const;

  const std::vector<Route>& routes() const { return routes_; }

 private:
  std::vector<Route> routes_;
};

// Resolves a dotted field path (proto names) from `message`. Returns INVALID_ARGUMENT naming
// the first component that is missing or that is not a singular message before the end.
absl::StatusOr<std::vector<const google::protobuf::FieldDescriptor*>> ResolveFieldPath(
    const google::protobuf::Descriptor* message, const std::vector<std::string>& field_path);

}  // namespace aijobs::gateway
