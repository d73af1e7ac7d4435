// HTTP status codes and JSON error bodies for gRPC statuses, as grpc-gateway and Envoy's
// grpc_json_transcoder map them.
//
//   int http = aijobs::gateway::HttpStatusFromGrpc(grpc::StatusCode::NOT_FOUND);  // 404
//   std::string body = aijobs::gateway::ErrorBodyJson(5, "job abc not found");
//   // {"code":5,"message":"job abc not found","details":[]}
#pragma once

#include <grpcpp/support/status_code_enum.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace aijobs::gateway {

// Returns the HTTP status for a gRPC code: OK 200, CANCELLED 499, UNKNOWN 500,
// INVALID_ARGUMENT 400, DEADLINE_EXCEEDED 504, NOT_FOUND 404, ALREADY_EXISTS 409,
// PERMISSION_DENIED 403, RESOURCE_EXHAUSTED 429, FAILED_PRECONDITION 400, ABORTED 409,
// OUT_OF_RANGE 400, UNIMPLEMENTED 501, INTERNAL 500, UNAVAILABLE 503, DATA_LOSS 500,
// UNAUTHENTICATED 401; any other value 500.
int HttpStatusFromGrpc(grpc::StatusCode code);
// The same for an absl::StatusCode (the codes are numerically identical).
int HttpStatusFromAbsl(absl::StatusCode code);

// Returns the google.rpc.Status JSON {"code":N,"message":"...","details":[]}, with the
// message escaped by protobuf's JSON printer.
std::string ErrorBodyJson(int grpc_code, absl::string_view message);
// The same for an absl::Status.
std::string ErrorBodyJson(const absl::Status& status);

// The WWW-Authenticate value of a 401 (RFC 6750): `Bearer realm="aijobs"` when the request
// carried no credential, else `Bearer realm="aijobs", error="invalid_token",
// error_description="<why>"` with `why` cut to 200 printable ASCII characters and quotes and
// backslashes replaced, so it is always one valid quoted-string.
std::string WwwAuthenticateValue(bool had_credential, absl::string_view why);

}  // namespace aijobs::gateway
