#include "tests/faults/topology.h"

#include <signal.h>
#include <unistd.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace aijobs::testing {
namespace {

constexpr char kIp[] = "/usr/sbin/ip";
constexpr absl::Duration kIpTimeout = absl::Seconds(20);

// Namespaces of this suite are "af<pid>-<host>"; removes those whose pid no longer runs.
void RemoveStaleNamespaces() {
  auto list = RunCommand(kIp, {"netns", "list"}, kIpTimeout);
  if (!list.ok() || list->exit_code != 0) return;
  for (absl::string_view line : absl::StrSplit(list->out, '\n', absl::SkipEmpty())) {
    absl::string_view name = line.substr(0, line.find(' '));
    if (!absl::ConsumePrefix(&name, "af")) continue;
    size_t dash = name.find('-');
    int pid = 0;
    if (dash == absl::string_view::npos || !absl::SimpleAtoi(name.substr(0, dash), &pid)) continue;
    if (pid == getpid() || kill(pid, 0) == 0) continue;
    (void)RunCommand(kIp, {"netns", "delete", std::string(line.substr(0, line.find(' ')))},
                     kIpTimeout);
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<Topology>> Topology::Create() {
  if (geteuid() != 0) {
    return absl::FailedPreconditionError(
        "the fault suite needs root: it creates network namespaces and veth pairs");
  }
  RemoveStaleNamespaces();
  std::unique_ptr<Topology> t(new Topology(absl::StrCat("af", getpid(), "-")));
  const std::string sw = t->prefix_ + "sw";
  if (absl::Status s = t->Ip({"netns", "add", sw}); !s.ok()) return s;
  t->switch_created_ = true;
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"-n", sw, "link", "add", "br0", "type", "bridge"},
           {"-n", sw, "link", "set", "br0", "up"},
           {"-n", sw, "link", "set", "lo", "up"}}) {
    if (absl::Status s = t->Ip(args); !s.ok()) return s;
  }
  return t;
}

Topology::~Topology() {
  for (const auto& [host, index] : hosts_) {
    (void)RunCommand(kIp, {"netns", "delete", Namespace(host)}, kIpTimeout);
  }
  if (switch_created_) (void)RunCommand(kIp, {"netns", "delete", prefix_ + "sw"}, kIpTimeout);
}

absl::Status Topology::Ip(const std::vector<std::string>& args) const {
  auto r = RunCommand(kIp, args, kIpTimeout);
  if (!r.ok()) return r.status();
  if (r->exit_code != 0) {
    std::string cmd = "ip";
    for (const auto& a : args) absl::StrAppend(&cmd, " ", a);
    return absl::InternalError(absl::StrCat(cmd, " exited ", r->exit_code, ": ", r->err));
  }
  return absl::OkStatus();
}

std::string Topology::Namespace(const std::string& host) const { return prefix_ + host; }

std::string Topology::SwitchPort(const std::string& host) const {
  auto it = hosts_.find(host);
  return absl::StrCat("p", it == hosts_.end() ? -1 : it->second);
}

absl::Status Topology::AddHost(const std::string& host, const std::string& ip) {
  if (hosts_.count(host) > 0) return absl::AlreadyExistsError(absl::StrCat("host ", host));
  const std::string ns = Namespace(host);
  const std::string sw = prefix_ + "sw";
  if (absl::Status s = Ip({"netns", "add", ns}); !s.ok()) return s;
  hosts_[host] = static_cast<int>(hosts_.size());
  const std::string port = SwitchPort(host);
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port, "netns", sw},
           {"-n", sw, "link", "set", port, "master", "br0"},
           {"-n", sw, "link", "set", port, "up"},
           {"-n", ns, "addr", "add", ip + "/24", "dev", "eth0"},
           {"-n", ns, "link", "set", "eth0", "up"},
           {"-n", ns, "link", "set", "lo", "up"}}) {
    if (absl::Status s = Ip(args); !s.ok()) return s;
  }
  return absl::OkStatus();
}

ProcessOptions Topology::InHost(const std::string& host, ProcessOptions options) const {
  std::vector<std::string> args = {"netns", "exec", Namespace(host), options.path};
  args.insert(args.end(), options.args.begin(), options.args.end());
  if (options.log_name.empty()) {
    options.log_name = options.path.substr(options.path.rfind('/') + 1) + "-" + host;
  }
  options.path = kIp;
  options.args = std::move(args);
  return options;
}

absl::StatusOr<CommandResult> Topology::RunIn(const std::string& host, const std::string& path,
                                              const std::vector<std::string>& args,
                                              absl::Duration timeout) const {
  std::vector<std::string> full = {"netns", "exec", Namespace(host), path};
  full.insert(full.end(), args.begin(), args.end());
  return RunCommand(kIp, full, timeout);
}

absl::Status Topology::Cut(const std::string& host) {
  return Ip({"-n", prefix_ + "sw", "link", "set", SwitchPort(host), "down"});
}

absl::Status Topology::Heal(const std::string& host) {
  return Ip({"-n", prefix_ + "sw", "link", "set", SwitchPort(host), "up"});
}

absl::Status Topology::Blackhole(const std::string& host, const std::string& peer_ip) {
  return Ip({"-n", Namespace(host), "route", "add", "blackhole", peer_ip + "/32"});
}

absl::Status Topology::Unblackhole(const std::string& host, const std::string& peer_ip) {
  return Ip({"-n", Namespace(host), "route", "del", "blackhole", peer_ip + "/32"});
}

}  // namespace aijobs::testing
