// BuildOpenApiJson: an OpenAPI 3.1 document for the HTTP routes of a RouteTable, generated from
// the same descriptors and google.api.http annotations the gateway serves.
//
//   auto table = RouteTable::FromServices({job_service});
//   std::string doc = aijobs::gateway::BuildOpenApiJson(*table, "aijobs", "v1");
//   // serve doc as /openapi.json
#pragma once

#include <string>

#include "absl/strings/string_view.h"
#include "gateway/transcoding/route_table.h"

namespace aijobs::gateway {

// Returns the document as compact JSON. Paths use OpenAPI form ("/v1/jobs/{job_id}:cancel";
// multi-segment variables become "{name}" with their pattern in the description); one
// operation per route (operationId Service_Method, "_2", "_3"... for additional bindings);
// path parameters; query parameters for the scalar leaf fields not bound by the path or the
// body; a requestBody for routes with a body; a 200 response (text/event-stream and
// application/x-ndjson for server-streaming routes) and a "default" google.rpc.Status error.
// components.schemas holds every reachable message and enum under its full proto name,
// described with the proto3 JSON mapping (json names, 64-bit ints as strings, enums as name
// lists, well-known types in their JSON forms, maps as additionalProperties).
std::string BuildOpenApiJson(const RouteTable& table, absl::string_view title,
                             absl::string_view version);

}  // namespace aijobs::gateway
