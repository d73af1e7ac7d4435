// The mapping between HTTP headers and gRPC metadata the gateway applies to every call, in
// the grpc-gateway convention: selected headers and `Grpc-Metadata-*` go upstream, and
// response metadata comes back as `Grpc-Metadata-*` headers, except the keys a service uses
// to steer the HTTP response (`x-http-code`, `x-http-header-<name>`).
//
//   absl::StatusOr<CallMetadata> md = MetadataFromHeaders(headers, NewUuid);
//   for (auto& [k, v] : md->entries) context.AddMetadata(k, v);
//   HttpResponseShape shape = ShapeFromResponseMetadata(initial, trailing);
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace aijobs::gateway {

using HeaderList = std::vector<std::pair<std::string, std::string>>;

// What the forwarded metadata may add up to, counted as HTTP/2 does (name + value + 32 per
// field): under the 8 KiB a gRPC server accepts by default, with room for the fields gRPC
// adds itself (:path, :authority, user-agent, grpc-timeout, ...). Over it the server would
// answer RESOURCE_EXHAUSTED, which HTTP clients read as 429 and retry.
inline constexpr size_t kMaxForwardedMetadataBytes = 7 * 1024;

struct CallMetadata {
  // Lower-case metadata keys and values, in header order.
  HeaderList entries;
  // X-Request-Id as received, or generated when absent; also sent upstream as x-request-id.
  std::string request_id;
  // From Grpc-Timeout, when present.
  std::optional<absl::Duration> timeout;
};

// The request id of a request with X-Request-Id header `value` (empty: absent): the value
// when it is printable ASCII of at most 256 characters, else INVALID_ARGUMENT.
absl::StatusOr<std::string> RequestIdFromHeader(absl::string_view value);

// Parses a gRPC timeout ("100m", "5S", "1H": 1-8 digits and one of H M S m u n).
absl::StatusOr<absl::Duration> ParseGrpcTimeout(absl::string_view text);

// Picks the headers that become call metadata: Authorization, X-Request-Id, traceparent,
// tracestate and every Grpc-Metadata-<key> (as <key>). Header names are matched without
// regard to case. INVALID_ARGUMENT, naming the header, for a malformed Grpc-Timeout (or a
// zero one: it could never succeed) or a Grpc-Metadata key gRPC would refuse;
// RESOURCE_EXHAUSTED when the forwarded fields add up to more than
// kMaxForwardedMetadataBytes (the gateway answers it 431, the request's own fault).
absl::StatusOr<CallMetadata> MetadataFromHeaders(const HeaderList& headers,
                                                 const std::function<std::string()>& new_id);

// What response metadata asks of the HTTP response.
struct HttpResponseShape {
  // From x-http-code, when it holds a valid status (100-599).
  std::optional<int> http_status;
  // x-http-header-<name> as <name>, and every other key as Grpc-Metadata-<key>.
  HeaderList headers;
};

// Combines initial and trailing metadata (gRPC's own keys and binary `-bin` keys are not
// forwarded).
HttpResponseShape ShapeFromResponseMetadata(
    const std::multimap<std::string, std::string>& initial,
    const std::multimap<std::string, std::string>& trailing);

}  // namespace aijobs::gateway
