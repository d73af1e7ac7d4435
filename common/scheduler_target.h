// Scheduler addresses as every process takes them: one gRPC target ("HOST:PORT",
// "dns:///name:PORT", "unix:/path") or a comma-separated list of replicas
// ("10.0.0.1:50051,10.0.0.2:50051"). A list becomes one channel that balances calls over
// every replica and fails over when one goes away (gRPC's round_robin over a static
// address list), so a client, the gateway or aijobsctl keep working through the loss or
// restart of a replica.
//
//   auto addresses = aijobs::ParseSchedulerList(flag);        // {"10.0.0.1:50051", ...}
//   auto target = aijobs::SchedulerChannelTarget(*addresses);  // "ipv4:10.0.0.1:50051,..."
//   grpc::ChannelArguments args;  aijobs::SetFailoverChannelArgs(&args);
#pragma once

#include <grpcpp/support/channel_arguments.h>

#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"

namespace aijobs {

// Splits a comma-separated list, trimming spaces around entries. InvalidArgument when the
// list is empty or an entry is empty or has no port (entries with a gRPC scheme such as
// "dns:///" or "unix:" are passed through unchecked).
absl::StatusOr<std::vector<std::string>> ParseSchedulerList(absl::string_view list);

// The gRPC channel target for `addresses`: the address itself when there is one; for
// several, "ipv4:a,b,..." or "ipv6:[a]:p,..." — which needs every entry to be a literal IP
// address and port of one family (InvalidArgument naming the entry otherwise; for host
// names, give a single DNS name that resolves to every replica).
absl::StatusOr<std::string> SchedulerChannelTarget(const std::vector<std::string>& addresses);

// Parses `list` and returns its channel target.
absl::StatusOr<std::string> SchedulerChannelTargetFromList(absl::string_view list);

// Balances calls over every address the target resolves to (round_robin), so a replica
// that is down is skipped while another is up.
void SetFailoverChannelArgs(grpc::ChannelArguments* args);

}  // namespace aijobs
