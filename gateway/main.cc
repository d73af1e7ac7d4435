// aijobs-gateway: flag parsing and wiring only; see gateway.h and http_server.h.
#include <grpcpp/grpcpp.h>
#include <sys/resource.h>

#include <cstdlib>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "common/flags_help.h"
#include "common/logging.h"
#include "common/scheduler_target.h"
#include "common/shutdown_signal.h"
#include "common/tls_credentials.h"
#include "gateway/gateway.h"
#include "gateway/http_server.h"
#include "spdlog/spdlog.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:8080", "HTTP listen address host:port");
ABSL_FLAG(std::string, scheduler_tls_ca, "",
          "PEM CA to verify the scheduler's TLS certificate (empty with no cert: plaintext)");
ABSL_FLAG(std::string, scheduler_tls_cert, "", "PEM client certificate for the scheduler (mTLS)");
ABSL_FLAG(std::string, scheduler_tls_key, "", "PEM private key of --scheduler_tls_cert");
ABSL_FLAG(std::string, scheduler, "127.0.0.1:50051",
          "the scheduler's gRPC address host:port, or a comma-separated list of replicas "
          "(literal IP:PORT); calls are balanced over them and skip one that is down");
// One by default: responses and stream chunks are sent by the threads that produce them
// (gRPC's), so the io threads only accept, read requests and answer the fixed endpoints. On
// the 2-core target machine a second io thread bought no throughput beyond run-to-run noise
// and gave a less steady /healthz tail under SSE load (bench_gateway, bench/RESULTS.md).
ABSL_FLAG(int, threads, 1, "io threads serving HTTP connections");
ABSL_FLAG(int64_t, max_body_bytes, 1 << 20, "larger request bodies are answered 413");
ABSL_FLAG(int64_t, default_deadline_ms, 30000, "deadline of unary calls without Grpc-Timeout");
ABSL_FLAG(bool, lenient_json, false, "accept unknown JSON fields and query parameters");
ABSL_FLAG(std::string, cors_allowed_origins, "",
          "comma-separated origins allowed by CORS; * allows any; empty: CORS off");
ABSL_FLAG(int64_t, sse_heartbeat_ms, 15000, "comment heartbeat interval on idle event streams");
ABSL_FLAG(int64_t, idle_timeout_ms, 60000, "idle keep-alive connections are closed after this");
ABSL_FLAG(bool, access_log, false, "log every request (otherwise only 5xx)");
ABSL_FLAG(int64_t, header_timeout_ms, 10000,
          "once a request's first byte arrived, its headers must be complete within this "
          "(slow clients holding connections are closed)");
ABSL_FLAG(int, max_connections_per_ip, 256,
          "connections one client address may hold; more are answered 429 (0: unlimited)");
ABSL_FLAG(int, max_streams_per_ip, 32,
          "event streams one client address may hold open; more are 429 (0: unlimited)");
ABSL_FLAG(double, anonymous_requests_per_minute, 60,
          "requests without a credential that change state (POST, DELETE), per client address "
          "and minute; more are 429 with Retry-After (0: unlimited)");
ABSL_FLAG(double, anonymous_burst, 20, "burst allowed above --anonymous_requests_per_minute");
ABSL_FLAG(std::string, metrics_allowed, "",
          "addresses or networks (CIDR) that may read /metrics (e.g. the Prometheus pods' "
          "network); empty: any");
ABSL_FLAG(std::string, trusted_proxies, "",
          "addresses or networks (CIDR) of proxies whose X-Forwarded-For names the client "
          "(e.g. the load balancer); empty: the peer is the client");
ABSL_FLAG(std::string, allowed_hosts, "localhost,127.0.0.1,[::1]",
          "comma-separated Host values served (name or name:port, *.domain for subdomains, "
          "* for any); other Hosts get 400 (DNS rebinding). Set it to the names clients use");

namespace {

// Every flag may come from the environment as AIJOBS_GATEWAY_<FLAG> (e.g.
// AIJOBS_GATEWAY_LISTEN); the command line wins over the environment.
bool ApplyEnvironment() {
  for (const char* name : {"listen",
                           "scheduler",
                           "threads",
                           "max_body_bytes",
                           "default_deadline_ms",
                           "lenient_json",
                           "cors_allowed_origins",
                           "sse_heartbeat_ms",
                           "idle_timeout_ms",
                           "access_log",
                           "allowed_hosts",
                           "header_timeout_ms",
                           "max_connections_per_ip",
                           "max_streams_per_ip",
                           "anonymous_requests_per_minute",
                           "anonymous_burst",
                           "trusted_proxies",
                           "metrics_allowed",
                           "scheduler_tls_ca",
                           "scheduler_tls_cert",
                           "scheduler_tls_key"}) {
    std::string env = "AIJOBS_GATEWAY_" + absl::AsciiStrToUpper(name);
    const char* value = std::getenv(env.c_str());
    if (value == nullptr) continue;
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    std::string error;
    if (flag == nullptr || !flag->ParseFrom(value, &error)) {
      std::cerr << "aijobs-gateway: " << env << "=\"" << value << "\": " << error << "\n";
      return false;
    }
  }
  return true;
}

// Every open connection and event stream is a file descriptor: thousands of SSE clients need
// more than the usual soft limit of 1024, so take the hard limit the system allows.
void RaiseFileLimit() {
  rlimit r;
  if (getrlimit(RLIMIT_NOFILE, &r) != 0 || r.rlim_cur >= r.rlim_max) return;
  rlim_t old = r.rlim_cur;
  r.rlim_cur = r.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &r) != 0) {
    spdlog::warn("cannot raise the open-file limit from {}", static_cast<uint64_t>(old));
  }
}

}  // namespace

int main(int argc, char** argv) {
  // Before any thread starts, so that only its signal thread receives SIGINT/SIGTERM.
  aijobs::ShutdownSignal shutdown;
  aijobs::ShowOwnFlagsInHelp("gateway/main.cc");
  absl::SetProgramUsageMessage(
      "aijobs gateway: REST/JSON and Server-Sent Events in front of the scheduler's gRPC API");
  if (!ApplyEnvironment()) return 2;
  absl::ParseCommandLine(argc, argv);
  aijobs::InitLogging("aijobs-gateway");
  RaiseFileLimit();
  // Debian's Abseil runs every Mutex through its deadlock-cycle detector (a global graph
  // behind a global lock); gRPC's own locks are absl Mutexes too, so on the request path
  // it showed in the profile (GraphCycles::GetId and friends). The locks here are leaves;
  // the clang thread-safety build checks their use at compile time.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  namespace gw = aijobs::gateway;

  std::string listen = absl::GetFlag(FLAGS_listen);
  size_t colon = listen.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(listen.substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    std::cerr << "aijobs-gateway: --listen \"" << listen << "\": expected host:port\n";
    return 2;
  }
  gw::GatewayOptions options;
  options.default_deadline = absl::Milliseconds(absl::GetFlag(FLAGS_default_deadline_ms));
  options.lenient_json = absl::GetFlag(FLAGS_lenient_json);
  for (absl::string_view o :
       absl::StrSplit(absl::GetFlag(FLAGS_cors_allowed_origins), ',', absl::SkipWhitespace())) {
    options.cors_allowed_origins.emplace_back(absl::StripAsciiWhitespace(o));
  }
  options.sse_heartbeat = absl::Milliseconds(absl::GetFlag(FLAGS_sse_heartbeat_ms));
  options.access_log = absl::GetFlag(FLAGS_access_log);
  options.allowed_hosts.clear();
  for (absl::string_view h :
       absl::StrSplit(absl::GetFlag(FLAGS_allowed_hosts), ',', absl::SkipWhitespace())) {
    options.allowed_hosts.emplace_back(absl::StripAsciiWhitespace(h));
  }
  auto proxies = gw::TrustedProxies::Parse(absl::GetFlag(FLAGS_trusted_proxies));
  if (!proxies.ok()) {
    std::cerr << "aijobs-gateway: --trusted_proxies: " << proxies.status().message() << "\n";
    return 2;
  }
  options.trusted_proxies = *std::move(proxies);
  auto metrics_allowed = gw::TrustedProxies::Parse(absl::GetFlag(FLAGS_metrics_allowed));
  if (!metrics_allowed.ok()) {
    std::cerr << "aijobs-gateway: --metrics_allowed: " << metrics_allowed.status().message()
              << "\n";
    return 2;
  }
  options.metrics_allowed = *std::move(metrics_allowed);
  options.max_streams_per_ip = absl::GetFlag(FLAGS_max_streams_per_ip);
  options.anonymous_requests_per_minute = absl::GetFlag(FLAGS_anonymous_requests_per_minute);
  options.anonymous_burst = absl::GetFlag(FLAGS_anonymous_burst);
  if (options.allowed_hosts.empty()) {
    std::cerr << "aijobs-gateway: --allowed_hosts is empty: no request could be served; "
                 "use * to serve any Host\n";
    return 2;
  }

  absl::StatusOr<std::string> target =
      aijobs::SchedulerChannelTargetFromList(absl::GetFlag(FLAGS_scheduler));
  if (!target.ok()) {
    std::cerr << "aijobs-gateway: --scheduler: " << target.status().message() << "\n";
    return 2;
  }
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  aijobs::SetFailoverChannelArgs(&args);
  auto creds = aijobs::ClientTlsCredentials({absl::GetFlag(FLAGS_scheduler_tls_ca),
                                             absl::GetFlag(FLAGS_scheduler_tls_cert),
                                             absl::GetFlag(FLAGS_scheduler_tls_key)});
  if (!creds.ok()) {
    std::cerr << "aijobs-gateway: " << creds.status().message() << "\n";
    return 2;
  }
  auto channel = grpc::CreateCustomChannel(*target, *creds, args);
  absl::StatusOr<std::unique_ptr<gw::Gateway>> gateway = gw::Gateway::Create(options, channel);
  if (!gateway.ok()) {
    std::cerr << "aijobs-gateway: " << gateway.status().message() << "\n";
    return 2;
  }
  gw::HttpServerOptions http_options;
  http_options.host = listen.substr(0, colon);
  http_options.port = port;
  http_options.threads = absl::GetFlag(FLAGS_threads);
  http_options.max_body_bytes = static_cast<uint64_t>(absl::GetFlag(FLAGS_max_body_bytes));
  http_options.idle_timeout = absl::Milliseconds(absl::GetFlag(FLAGS_idle_timeout_ms));
  http_options.header_timeout = absl::Milliseconds(absl::GetFlag(FLAGS_header_timeout_ms));
  http_options.max_connections_per_ip = absl::GetFlag(FLAGS_max_connections_per_ip);
  absl::StatusOr<std::unique_ptr<gw::HttpServer>> server =
      gw::HttpServer::Start(http_options, gateway->get());
  if (!server.ok()) {
    std::cerr << "aijobs-gateway: " << server.status().message() << "\n";
    return 1;
  }
  spdlog::info("listening on http://{}:{} (scheduler {}, {} routes)", http_options.host,
               (*server)->port(), absl::GetFlag(FLAGS_scheduler),
               (*gateway)->routes().routes().size());

  shutdown.Wait();
  spdlog::info("signal {}: stopping, ending open streams", shutdown.first_signal());
  (*gateway)->CancelStreams();
  // Each cancelled stream writes its last chunk and unregisters; wait for that, bounded so a
  // stuck client cannot hold the shutdown.
  if (!(*gateway)->WaitForStreamsToEnd(absl::Seconds(5))) {
    spdlog::warn("{} streams still open after 5s; closing their connections",
                 (*gateway)->OpenStreams());
  }
  (*server)->Shutdown();
  spdlog::info("stopped");
  return 0;
}
