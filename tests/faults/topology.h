// A small network of "hosts" for the fault suite: one network namespace per host, all
// plugged into a bridge that lives in a namespace of its own (the switch), addresses from
// 10.213.0.0/24 chosen by the caller. Nothing is added to the test's own namespace and
// nothing is routed outside. Faults are the real tools: a host's switch port set down (a
// partition from everyone) or a blackhole route on a host (a partition from one peer).
//
//   auto net = Topology::Create();                 // needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN)
//   (*net)->AddHost("pg", "10.213.0.10");
//   ProcessOptions o = (*net)->InHost("pg", {.path = "/usr/bin/psql", .args = {...}});
//   (*net)->Cut("pg");  ...  (*net)->Heal("pg");
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tests/fixtures/process.h"

namespace aijobs::testing {

class Topology {
 public:
  // Creates the switch namespace and its bridge, first removing namespaces left behind by
  // earlier runs whose process is gone. FAILED_PRECONDITION when not root.
  static absl::StatusOr<std::unique_ptr<Topology>> Create();
  // Removes every namespace it created (processes still inside must have been stopped).
  ~Topology();
  Topology(const Topology&) = delete;
  Topology& operator=(const Topology&) = delete;

  // Adds a host with `ip` (/24) on eth0, plugged into the switch, loopback up.
  absl::Status AddHost(const std::string& host, const std::string& ip);
  // The host's namespace name (for `ip netns exec`).
  std::string Namespace(const std::string& host) const;
  // `options` run inside the host's namespace (through `ip netns exec`, which execs, so the
  // process id is the program's own).
  ProcessOptions InHost(const std::string& host, ProcessOptions options) const;
  // Runs a command inside the host's namespace to completion.
  absl::StatusOr<CommandResult> RunIn(const std::string& host, const std::string& path,
                                      const std::vector<std::string>& args,
                                      absl::Duration timeout) const;

  // Sets the host's switch port down (no packet in or out) / up again.
  absl::Status Cut(const std::string& host);
  absl::Status Heal(const std::string& host);
  // Drops, on `host`, every packet it sends to `peer_ip` (a one-peer partition) / undoes it.
  absl::Status Blackhole(const std::string& host, const std::string& peer_ip);
  absl::Status Unblackhole(const std::string& host, const std::string& peer_ip);

 private:
  explicit Topology(std::string prefix) : prefix_(std::move(prefix)) {}
  absl::Status Ip(const std::vector<std::string>& args) const;
  std::string SwitchPort(const std::string& host) const;

  const std::string prefix_;  // "af<pid>-"
  std::map<std::string, int> hosts_;  // host -> index (its switch port name)
  bool switch_created_ = false;
};

}  // namespace aijobs::testing
