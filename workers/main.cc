// aijobs-worker: connects to a scheduler and runs chat/embed jobs on the built-in sim
// provider, or on the deployments and model groups of a --providers file. Flag parsing and
// wiring only; the logic lives in the aijobs_worker and aijobs_routing libraries.
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "common/bearer_token.h"
#include "common/flags_help.h"
#include "common/logging.h"
#include "common/scheduler_target.h"
#include "common/shutdown_signal.h"
#include "common/tls_credentials.h"
#include "spdlog/spdlog.h"
#include "workers/builtin_handlers.h"
#include "workers/job_handler.h"
#include "workers/routing/openai_factory.h"
#include "workers/routing/providers_config.h"
#include "workers/routing/routed_provider.h"
#include "workers/sim_provider.h"
#include "workers/worker_connection.h"

ABSL_FLAG(std::string, scheduler, "",
          "Scheduler address HOST:PORT, or a comma-separated list of replicas (required); the "
          "worker moves to the next one when its stream breaks or the scheduler drains");
ABSL_FLAG(std::string, worker_id, "", "Worker id; default hostname-pid");
ABSL_FLAG(std::string, token, "",
          "worker credential for the scheduler: a JWT with the worker role or a worker API key "
          "(default: env AIJOBS_WORKER_TOKEN)");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM CA to verify the scheduler's TLS certificate (empty with no cert: plaintext)");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM client certificate: with a scheduler's --tls_client_ca it is the worker's "
          "credential (no --token needed)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(int, slots, 64, "How many jobs run at once");
ABSL_FLAG(std::string, job_types, "chat,embed", "Comma-separated job types to accept");
ABSL_FLAG(int, drain_timeout_ms, 30000, "How long a drain waits for running jobs");
ABSL_FLAG(int, reconnect_max_ms, 5000, "Cap of the reconnect backoff");
ABSL_FLAG(int, sim_ttft_ms, 150, "sim provider: time to first token");
ABSL_FLAG(double, sim_tokens_per_s, 60, "sim provider: tokens per second (0 = no delay)");
ABSL_FLAG(int, sim_tokens, 40, "sim provider: output length in tokens");
ABSL_FLAG(double, sim_error_rate, 0, "sim provider: probability in [0,1] an attempt fails");
ABSL_FLAG(std::string, providers, "",
          "Provider config file (.textproto/.pbtxt text format or .json): deployments, model "
          "groups, limits. Default: the built-in sim provider with the --sim_* settings");

namespace {

std::string DefaultWorkerId() {
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0) host[0] = '\0';
  return absl::StrCat(host[0] != '\0' ? host : "worker", "-", getpid());
}

}  // namespace

int main(int argc, char** argv) {
  // Block the shutdown signals before any thread starts so every thread inherits the mask
  // and only the ShutdownSignal thread below receives them (it needs the connection).
  aijobs::ShutdownSignal::Block();

  aijobs::ShowOwnFlagsInHelp("workers/main.cc");
  absl::SetProgramUsageMessage(
      "Runs aijobs jobs for a scheduler: aijobs-worker --scheduler HOST:PORT");
  absl::ParseCommandLine(argc, argv);
  aijobs::InitLogging("aijobs-worker");
  // Debian's Abseil is built with mutex deadlock detection on, which costs a lock-graph update
  // per acquisition on hot paths; lock use is checked at compile time (clang -Wthread-safety).
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);

  namespace w = aijobs::worker;
  w::WorkerConnectionOptions options;
  if (absl::GetFlag(FLAGS_scheduler).empty()) {
    spdlog::error("--scheduler HOST:PORT is required");
    return 2;
  }
  absl::StatusOr<std::vector<std::string>> schedulers =
      aijobs::ParseSchedulerList(absl::GetFlag(FLAGS_scheduler));
  if (!schedulers.ok()) {
    spdlog::error("--scheduler: {}", std::string(schedulers.status().message()));
    return 2;
  }
  options.schedulers = *std::move(schedulers);
  options.bearer_token = aijobs::BearerTokenFrom(absl::GetFlag(FLAGS_token), "AIJOBS_WORKER_TOKEN");
  auto creds = aijobs::ClientTlsCredentials(
      {absl::GetFlag(FLAGS_tls_ca), absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key)});
  if (!creds.ok()) {
    spdlog::critical("{}", std::string(creds.status().message()));
    return 2;
  }
  options.credentials = *std::move(creds);
  options.worker_id = absl::GetFlag(FLAGS_worker_id);
  if (options.worker_id.empty()) options.worker_id = DefaultWorkerId();
  options.slots = absl::GetFlag(FLAGS_slots);
  options.drain_timeout = absl::Milliseconds(absl::GetFlag(FLAGS_drain_timeout_ms));
  options.reconnect_max = absl::Milliseconds(absl::GetFlag(FLAGS_reconnect_max_ms));
  if (options.slots <= 0 || options.reconnect_max <= absl::ZeroDuration() ||
      options.drain_timeout < absl::ZeroDuration()) {
    spdlog::error("--slots and --reconnect_max_ms must be positive, --drain_timeout_ms >= 0");
    return 2;
  }
  options.reconnect_initial = std::min(options.reconnect_initial, options.reconnect_max);

  w::SimOptions sim_options;
  sim_options.ttft = absl::Milliseconds(absl::GetFlag(FLAGS_sim_ttft_ms));
  sim_options.tokens_per_s = absl::GetFlag(FLAGS_sim_tokens_per_s);
  sim_options.tokens = absl::GetFlag(FLAGS_sim_tokens);
  sim_options.error_rate = absl::GetFlag(FLAGS_sim_error_rate);
  if (sim_options.ttft < absl::ZeroDuration() || sim_options.tokens_per_s < 0 ||
      sim_options.tokens < 0 || sim_options.error_rate < 0 || sim_options.error_rate > 1) {
    spdlog::error("--sim_* flags must be non-negative and --sim_error_rate within [0, 1]");
    return 2;
  }
  w::SimProvider sim(sim_options);
  w::LlmProvider* provider = &sim;
  // With --providers, jobs are routed over the file's model groups; its sim deployments use
  // the --sim_* settings as their defaults.
  std::unique_ptr<w::RoutedProvider> routed;
  std::optional<aijobs::v1::ProvidersConfig> providers_config;
  if (const std::string path = absl::GetFlag(FLAGS_providers); !path.empty()) {
    absl::StatusOr<aijobs::v1::ProvidersConfig> config = w::LoadProvidersConfig(path);
    if (!config.ok()) {
      spdlog::error("--providers: {}", std::string(config.status().message()));
      return 2;
    }
    absl::StatusOr<std::unique_ptr<w::RoutedProvider>> created =
        w::RoutedProvider::Create(*config, w::StandardDeploymentFactory(sim_options));
    if (!created.ok()) {
      spdlog::error("--providers: {}: {}", path, std::string(created.status().message()));
      return 2;
    }
    routed = std::move(*created);
    provider = routed.get();
    providers_config = std::move(*config);
    spdlog::info("providers from {}: models {}", path, absl::StrJoin(routed->models(), ","));
  }

  w::HandlerRegistry registry;
  w::RegisterBuiltinHandlers(&registry, provider);
  for (absl::string_view t :
       absl::StrSplit(absl::GetFlag(FLAGS_job_types), ',', absl::SkipWhitespace())) {
    std::string type(t.data(), t.size());
    if (!registry.Has(type)) {
      spdlog::error("--job_types: no handler for '{}' (known: {})", type,
                    absl::StrJoin(registry.Types(), ","));
      return 2;
    }
    options.job_types.push_back(type);
  }
  if (options.job_types.empty()) {
    spdlog::error("--job_types must name at least one job type");
    return 2;
  }
  if (providers_config) {
    options.cache_adverts = w::CacheAdverts(*providers_config, options.job_types);
  }

  w::WorkerConnection connection(options, &registry);
  aijobs::ShutdownSignal shutdown([&connection](int sig, int count) {
    if (count == 1) {
      spdlog::info("signal {}: draining (send again to stop at once)", sig);
      connection.RequestDrain();
    } else {
      spdlog::warn("signal {}: stopping now", sig);
      connection.Shutdown();
    }
  });

  spdlog::info("worker {} starting: scheduler {}, slots {}, job types {}", options.worker_id,
               absl::StrJoin(options.schedulers, ","), options.slots,
               absl::StrJoin(options.job_types, ","));
  absl::Status status = connection.Run();
  if (!status.ok()) {
    spdlog::error("worker stopped: {}", std::string(status.message()));
    return 1;
  }
  return 0;
}
