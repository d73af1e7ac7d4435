// aijobs-load: command-line flags only; the load logic lives in load.cc.
//
//   aijobs-load --scenario quick --target 127.0.0.1:50051
//   aijobs-load --scenario quick --target http://127.0.0.1:8080     (through the gateway)
//   aijobs-load --users 3 --duration 3s --sim '{"ttft_ms":0,"tokens":2}'
//   aijobs-load --scenario soak --duration 2h --rate 50 --report-json soak.json
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <map>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "bench/load/load.h"
#include "common/bearer_token.h"

namespace {

std::atomic<bool> g_interrupt{false};

// First signal: stop submitting and drain. Second: give up at once.
void OnSignal(int) {
  if (g_interrupt.exchange(true)) _exit(130);
}

constexpr char kUsage[] =
    "usage: aijobs-load [--scenario quick|medium|spike|soak|custom] [--target HOST:PORT]\n"
    "                   [--users N] [--rate JOBS_PER_S] [--duration D] [--drain D]\n"
    "                   [--prompt-file F] [--sim JSON] [--allow-remote]\n"
    "                   [--report-json PATH] [--report-md PATH] [--no-progress]\n"
    "                   [--token JWT_OR_API_KEY]   (default: env AIJOBS_TOKEN)\n"
    "                   [--tls_ca FILE]   (TLS to a scheduler with --tls_cert)\n"
    "  scenarios: quick (10 users, 30s), medium (50 users, 120s),\n"
    "             spike (0->500 users over 5s, then --duration, default 30s),\n"
    "             soak (needs --duration), custom (default; --users/--rate/--duration)\n"
    "  --target   grpc://HOST:PORT or HOST:PORT (default 127.0.0.1:50051), or\n"
    "             http://HOST:PORT for the gateway (POST /v1/jobs + SSE events, /healthz);\n"
    "             loopback only unless --allow-remote\n"
    "  --rate     submits/s cap over all users; 0 = closed loop (default)\n"
    "  durations: 3s, 2m, 1h30m or plain seconds\n"
    "exit status: 0 run completed (even with failed jobs), 1 target unreachable, 2 usage\n";

int Usage(const std::string& error) {
  fprintf(stderr, "aijobs-load: %s\n\n%s", error.c_str(), kUsage);
  return 2;
}

bool ParseDurationFlag(const std::string& v, absl::Duration* d) {
  double secs;
  if (absl::SimpleAtod(v, &secs)) {
    *d = absl::Seconds(secs);
    return true;
  }
  return absl::ParseDuration(v, d);
}

}  // namespace

int main(int argc, char** argv) {
  // Debian builds Abseil with Mutex deadlock detection on (a global graph consulted on every
  // lock, growing with the Mutexes alive: one per watch); lock order is checked at compile
  // time by the clang thread-safety build instead.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  // --name=value, --name value; dashes and underscores in names are the same.
  static const char* const kValueFlags[] = {"scenario",    "target",    "users",       "rate",
                                            "duration",    "drain",     "prompt_file", "sim",
                                            "report_json", "report_md", "token",       "tls_ca"};
  static const char* const kBoolFlags[] = {"allow_remote", "no_progress", "help"};
  std::map<std::string, std::string> flags;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0) return Usage(absl::StrCat("unexpected argument '", arg, "'"));
    std::string name = arg.substr(2), value;
    bool has_value = false;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    for (char& ch : name) {
      if (ch == '-') ch = '_';
    }
    bool is_value = false, is_bool = false;
    for (const char* f : kValueFlags) is_value |= name == f;
    for (const char* f : kBoolFlags) is_bool |= name == f;
    if (is_bool) {
      if (has_value && value != "true" && value != "false") {
        return Usage(absl::StrCat("--", name, " takes no value"));
      }
      flags[name] = has_value ? value : "true";
    } else if (is_value) {
      if (!has_value) {
        if (i + 1 >= argc) return Usage(absl::StrCat("--", name, " needs a value"));
        value = argv[++i];
      }
      flags[name] = value;
    } else {
      return Usage(absl::StrCat("unknown flag --", name));
    }
  }
  if (flags["help"] == "true") {
    fputs(kUsage, stdout);
    return 0;
  }

  std::string scenario = flags.count("scenario") ? flags["scenario"] : "custom";
  absl::StatusOr<aijobs::load::LoadConfig> cfg = aijobs::load::ScenarioConfig(scenario);
  if (!cfg.ok()) return Usage(std::string(cfg.status().message()));
  if (flags.count("target")) cfg->target = flags["target"];
  cfg->token = aijobs::BearerTokenFrom(flags.count("token") ? flags["token"] : "", "AIJOBS_TOKEN");
  if (flags.count("tls_ca")) cfg->tls_ca = flags["tls_ca"];
  if (flags.count("users") && !absl::SimpleAtoi(flags["users"], &cfg->users)) {
    return Usage("--users needs an integer");
  }
  if (flags.count("rate") && !absl::SimpleAtod(flags["rate"], &cfg->rate)) {
    return Usage("--rate needs a number");
  }
  if (flags.count("duration") && !ParseDurationFlag(flags["duration"], &cfg->duration)) {
    return Usage("--duration needs a duration such as 30s or 2m");
  }
  if (flags.count("drain") && !ParseDurationFlag(flags["drain"], &cfg->drain)) {
    return Usage("--drain needs a duration such as 10s");
  }
  if (flags.count("sim")) cfg->sim_json = flags["sim"];
  cfg->allow_remote = flags["allow_remote"] == "true";
  cfg->progress = flags["no_progress"] != "true";
  if (flags.count("prompt_file")) {
    auto prompts = aijobs::load::ReadPromptFile(flags["prompt_file"]);
    if (!prompts.ok()) return Usage(std::string(prompts.status().message()));
    cfg->prompts = *prompts;
  }
  if (absl::Status s = aijobs::load::ValidateConfig(*cfg); !s.ok()) {
    return Usage(std::string(s.message()));
  }
  std::string json_path =
      flags.count("report_json") ? flags["report_json"] : "aijobs-load-report.json";
  std::string md_path = flags.count("report_md") ? flags["report_md"] : "aijobs-load-report.md";

  struct sigaction sa = {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  absl::StatusOr<aijobs::load::LoadResult> result = aijobs::load::RunLoad(*cfg, &g_interrupt);
  if (!result.ok()) {
    fprintf(stderr, "aijobs-load: %s\n", std::string(result.status().message()).c_str());
    return absl::IsInvalidArgument(result.status()) ? 2 : 1;
  }
  for (const auto& [path, text] :
       {std::pair<std::string, std::string>{json_path, aijobs::load::ReportJson(*result)},
        std::pair<std::string, std::string>{md_path, aijobs::load::ReportMarkdown(*result)}}) {
    if (absl::Status s = aijobs::load::WriteFile(path, text); !s.ok()) {
      fprintf(stderr, "aijobs-load: %s\n", std::string(s.message()).c_str());
      return 1;
    }
  }
  fprintf(stderr,
          "aijobs-load: %lld completed, %lld failed, %.2f jobs/s, success rate %.4f; reports: %s, "
          "%s\n",
          static_cast<long long>(result->succeeded), static_cast<long long>(result->failed),
          aijobs::load::Throughput(*result), aijobs::load::SuccessRate(*result), json_path.c_str(),
          md_path.c_str());
  return 0;
}
