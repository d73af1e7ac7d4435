#include "common/scheduler_target.h"

#include <arpa/inet.h>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace aijobs {
namespace {

enum class Family { kNone, kV4, kV6 };

bool HasScheme(absl::string_view address) {
  return absl::StrContains(address, ":/") || absl::StartsWith(address, "unix:") ||
         absl::StartsWith(address, "ipv4:") || absl::StartsWith(address, "ipv6:");
}

// Splits HOST:PORT or [V6]:PORT; false when there is no valid port.
bool SplitHostPort(absl::string_view address, absl::string_view* host, absl::string_view* port) {
  size_t colon = address.rfind(':');
  if (colon == absl::string_view::npos || colon == 0) return false;
  *host = address.substr(0, colon);
  *port = address.substr(colon + 1);
  int number = 0;
  if (!absl::SimpleAtoi(*port, &number) || number < 1 || number > 65535) return false;
  if (absl::StartsWith(*host, "[")) {
    if (!absl::EndsWith(*host, "]")) return false;
    *host = host->substr(1, host->size() - 2);
  }
  return !host->empty();
}

Family LiteralFamily(absl::string_view host) {
  std::string h(host);  // inet_pton wants a NUL-terminated string
  unsigned char buf[16];
  if (inet_pton(AF_INET, h.c_str(), buf) == 1) return Family::kV4;
  if (inet_pton(AF_INET6, h.c_str(), buf) == 1) return Family::kV6;
  return Family::kNone;
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ParseSchedulerList(absl::string_view list) {
  std::vector<std::string> out;
  for (absl::string_view entry : absl::StrSplit(list, ',')) {
    entry = absl::StripAsciiWhitespace(entry);
    if (entry.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "scheduler address list '", list, "' has an empty entry (expected HOST:PORT[,HOST:PORT...])"));
    }
    absl::string_view host, port;
    if (!HasScheme(entry) && !SplitHostPort(entry, &host, &port)) {
      return absl::InvalidArgumentError(
          absl::StrCat("scheduler address '", entry, "' is not HOST:PORT with a port in 1-65535"));
    }
    out.emplace_back(entry);
  }
  return out;
}

absl::StatusOr<std::string> SchedulerChannelTarget(const std::vector<std::string>& addresses) {
  if (addresses.empty()) return absl::InvalidArgumentError("no scheduler address given");
  if (addresses.size() == 1) return addresses[0];
  Family family = Family::kNone;
  for (const std::string& address : addresses) {
    absl::string_view host, port;
    Family f = Family::kNone;
    if (!HasScheme(address) && SplitHostPort(address, &host, &port)) f = LiteralFamily(host);
    if (f == Family::kNone) {
      return absl::InvalidArgumentError(absl::StrCat(
          "scheduler address '", address,
          "': a list of several addresses takes literal IP addresses and ports only; for host "
          "names give one DNS name that resolves to every replica"));
    }
    if (family != Family::kNone && f != family) {
      return absl::InvalidArgumentError(
          "scheduler addresses mix IPv4 and IPv6; give addresses of one family");
    }
    family = f;
  }
  return absl::StrCat(family == Family::kV4 ? "ipv4:" : "ipv6:", absl::StrJoin(addresses, ","));
}

absl::StatusOr<std::string> SchedulerChannelTargetFromList(absl::string_view list) {
  absl::StatusOr<std::vector<std::string>> addresses = ParseSchedulerList(list);
  if (!addresses.ok()) return addresses.status();
  return SchedulerChannelTarget(*addresses);
}

void SetFailoverChannelArgs(grpc::ChannelArguments* args) {
  args->SetServiceConfigJSON(R"({"loadBalancingConfig": [{"round_robin": {}}]})");
}

}  // namespace aijobs
