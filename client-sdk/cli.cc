#include "client-sdk/cli.h"

#include <google/protobuf/util/json_util.h>

#include <cctype>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "aijobs/client.h"
#include "aijobs/v1/admin_service.grpc.pb.h"
#include "common/auth/jwt.h"
#include "common/bearer_token.h"
#include "common/scheduler_target.h"
#include "common/status.h"
#include "common/tls_credentials.h"

namespace aijobs::ctl {
namespace {

constexpr char kDefaultServer[] = "127.0.0.1:50051";

constexpr char kGlobalUsage[] =
    "usage: aijobsctl [--server HOST:PORT] [--timeout DURATION] [--token T] <command> [flags]\n"
    "commands:\n"
    "  submit --type T (--prompt TEXT | --input JSON | --input @FILE | --input -)\n"
    "         [--priority N] [--max_attempts N] [--idempotency_key K] [--label k=v ...]\n"
    "         [--timeout_ms N] [--cache_ttl_s N] [--watch] [--wait] [--json]\n"
    "  get ID [--json]\n"
    "  watch ID [--after SEQ] [--json]\n"
    "  cancel ID [--reason TEXT] [--json]\n"
    "  retry ID [--json]\n"
    "  list [--state S] [--type T] [--page_size N] [--page_token P] [--json]\n"
    "  apikey create --name N [--role R ...] [--job_type T ...] [--expires 90d] [--tenant T]\n"
    "                [--json]   (admin; prints the key once)\n"
    "  apikey list [--all] [--json]      apikey revoke ID [--json]   (admin)\n"
    "  audit [--since 1h] [--subject S] [--limit N] [--json]   (admin)\n"
    "  token --key FILE --sub S [--tenant T] [--role R ...] [--job_type T ...] [--ttl 1h]\n"
    "        [--kid K] [--issuer I] [--audience A]   (signs a JWT with a key you hold)\n"
    "--token (or env AIJOBS_TOKEN): the JWT or API key sent with every call.\n"
    "--tls_ca FILE [--tls_cert FILE --tls_key FILE]: TLS to the scheduler (and a client "
    "certificate).\n"
    "--server defaults to 127.0.0.1:50051 (several replicas: a comma-separated list of IP:PORT);\n"
    "--timeout (e.g. 10s, 500ms, or seconds) bounds each\n"
    "unary call. With --wait or --watch, the exit status is 0 only if the job SUCCEEDED.\n";

struct FlagSpec {
  const char* name;
  bool takes_value;
};

struct CommandSpec {
  const char* name;
  int positional;  // number of required positional arguments (the job id)
  std::vector<FlagSpec> flags;
  const char* usage;
};

const std::vector<FlagSpec>& GlobalFlags() {
  static const auto* flags = new std::vector<FlagSpec>{
      {"server", true},   {"timeout", true}, {"token", true}, {"tls_ca", true},
      {"tls_cert", true}, {"tls_key", true}, {"help", false}};
  return *flags;
}

const std::vector<CommandSpec>& Commands() {
  static const auto* commands = new std::vector<CommandSpec>{
      {"submit",
       0,
       {{"type", true},
        {"prompt", true},
        {"input", true},
        {"priority", true},
        {"max_attempts", true},
        {"idempotency_key", true},
        {"label", true},
        {"timeout_ms", true},
        {"cache_ttl_s", true},
        {"watch", false},
        {"wait", false},
        {"json", false}},
       "usage: aijobsctl submit --type T (--prompt TEXT | --input JSON | --input @FILE | "
       "--input -) [--priority N] [--max_attempts N] [--idempotency_key K] [--label k=v ...] "
       "[--timeout_ms N] [--cache_ttl_s N] [--watch] [--wait] [--json]"},
      {"get", 1, {{"json", false}}, "usage: aijobsctl get ID [--json]"},
      {"watch",
       1,
       {{"after", true}, {"json", false}},
       "usage: aijobsctl watch ID [--after SEQ] [--json]"},
      {"cancel",
       1,
       {{"reason", true}, {"json", false}},
       "usage: aijobsctl cancel ID [--reason TEXT] [--json]"},
      {"retry", 1, {{"json", false}}, "usage: aijobsctl retry ID [--json]"},
      {"list",
       0,
       {{"state", true},
        {"type", true},
        {"page_size", true},
        {"page_token", true},
        {"json", false}},
       "usage: aijobsctl list [--state S] [--type T] [--page_size N] [--page_token P] [--json]"},
      {"apikey create",
       0,
       {{"name", true},
        {"role", true},
        {"job_type", true},
        {"expires", true},
        {"tenant", true},
        {"json", false}},
       "usage: aijobsctl apikey create --name N [--role R ...] [--job_type T ...] "
       "[--expires 90d] [--tenant T] [--json]"},
      {"apikey list",
       0,
       {{"all", false}, {"json", false}},
       "usage: aijobsctl apikey list [--all] [--json]"},
      {"apikey revoke", 1, {{"json", false}}, "usage: aijobsctl apikey revoke ID [--json]"},
      {"audit",
       0,
       {{"since", true}, {"subject", true}, {"limit", true}, {"json", false}},
       "usage: aijobsctl audit [--since 1h] [--subject S] [--limit N] [--json]"},
      {"token",
       0,
       {{"key", true},
        {"kid", true},
        {"sub", true},
        {"tenant", true},
        {"role", true},
        {"job_type", true},
        {"ttl", true},
        {"issuer", true},
        {"audience", true}},
       "usage: aijobsctl token --key FILE --sub S [--tenant T] [--role R ...] [--job_type T ...] "
       "[--ttl 1h] [--kid K] [--issuer I] [--audience A]\n"
       "  FILE: a JWKS with an HS256 (kty oct) key, picked by --kid (default: the first), or a "
       "PEM private key (RSA: RS256, EC P-256: ES256)"},
  };
  return *commands;
}

// A usage error: the message and the usage line to print under it.
struct UsageError {
  std::string message;
  std::string usage;
};

struct ParsedArgs {
  const CommandSpec* command = nullptr;
  std::vector<std::string> positional;
  // Every occurrence of each value flag, in order; bool flags map to "true"/"false".
  std::map<std::string, std::vector<std::string>> flags;

  bool Has(const std::string& name) const { return flags.count(name) > 0; }
  // The last occurrence wins, as with most CLIs.
  std::string Get(const std::string& name, const std::string& fallback = "") const {
    auto it = flags.find(name);
    return it == flags.end() ? fallback : it->second.back();
  }
  bool Bool(const std::string& name) const { return Get(name, "false") == "true"; }
};

const FlagSpec* FindFlag(const std::vector<FlagSpec>& flags, const std::string& name) {
  for (const FlagSpec& f : flags) {
    if (name == f.name) return &f;
  }
  return nullptr;
}

// Parses argv by hand because subcommand flags come after the subcommand and differ per
// subcommand, which absl flags (one global set) cannot express. Accepts --name value,
// --name=value, and - as well as _ inside names; global flags may appear anywhere.
std::optional<UsageError> ParseArgs(const std::vector<std::string>& args, ParsedArgs* parsed) {
  bool flags_done = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    const std::string usage = parsed->command ? parsed->command->usage : kGlobalUsage;
    if (flags_done || arg.size() < 2 || arg.compare(0, 1, "-") != 0 || arg == "-") {
      if (parsed->command == nullptr) {
        // Two-word commands: "apikey create", "apikey list", "apikey revoke".
        std::string word = arg;
        if (arg == "apikey") {
          if (i + 1 >= args.size()) {
            return UsageError{"apikey needs create, list or revoke", kGlobalUsage};
          }
          word = absl::StrCat(arg, " ", args[++i]);
        }
        for (const CommandSpec& c : Commands()) {
          if (word == c.name) parsed->command = &c;
        }
        if (parsed->command == nullptr && arg == "apikey") {
          return UsageError{absl::StrCat("unknown command '", word, "'"), kGlobalUsage};
        }
        if (parsed->command == nullptr) {
          return UsageError{absl::StrCat("unknown command '", arg, "'"), kGlobalUsage};
        }
      } else {
        parsed->positional.push_back(arg);
      }
      continue;
    }
    if (arg == "--") {
      flags_done = true;
      continue;
    }
    std::string body = arg.substr(arg.compare(0, 2, "--") == 0 ? 2 : 1);
    std::optional<std::string> value;
    if (size_t eq = body.find('='); eq != std::string::npos) {
      value = body.substr(eq + 1);
      body.resize(eq);
    }
    for (char& c : body) {
      if (c == '-') c = '_';
    }
    if (body == "h") body = "help";
    const FlagSpec* spec = FindFlag(GlobalFlags(), body);
    if (spec == nullptr && parsed->command != nullptr) {
      spec = FindFlag(parsed->command->flags, body);
    }
    if (spec == nullptr) {
      return UsageError{
          parsed->command
              ? absl::StrCat("unknown flag --", body, " for '", parsed->command->name, "'")
              : absl::StrCat("unknown flag --", body, " (or it belongs after a command)"),
          usage};
    }
    if (spec->takes_value) {
      if (!value.has_value()) {
        if (i + 1 >= args.size()) {
          return UsageError{absl::StrCat("flag --", body, " needs a value"), usage};
        }
        value = args[++i];
      }
    } else if (!value.has_value()) {
      value = "true";
    } else {
      std::string v = absl::AsciiStrToLower(*value);
      if (v == "true" || v == "1" || v == "yes") {
        value = "true";
      } else if (v == "false" || v == "0" || v == "no") {
        value = "false";
      } else {
        return UsageError{
            absl::StrCat("flag --", body, " takes no value (or true/false), got '", *value, "'"),
            usage};
      }
    }
    parsed->flags[body].push_back(*value);
  }
  return std::nullopt;
}

// Tracks whether stdout is at the start of a line, so the --json line always stands alone.
class LineTracker {
 public:
  explicit LineTracker(std::ostream& out) : out_(out) {}
  void Write(const std::string& text) {
    if (text.empty()) return;
    out_ << text << std::flush;
    at_line_start_ = text.back() == '\n';
  }
  void EnsureNewline() {
    if (!at_line_start_) Write("\n");
  }

 private:
  std::ostream& out_;
  bool at_line_start_ = true;
};

std::string ToJson(const google::protobuf::Message& message) {
  std::string json;
  // Default options: single line, lowerCamelCase names, enums by name.
  auto status = google::protobuf::util::MessageToJsonString(message, &json);
  if (!status.ok()) return absl::StrCat("{\"error\":\"cannot encode as JSON\"}");
  return json;
}

void PrintStatusError(std::ostream& err, const absl::Status& status) {
  err << "aijobsctl: " << absl::StatusCodeToString(status.code()) << ": " << status.message()
      << "\n";
}

std::string JobLine(const v1::Job& job) {
  std::string line = absl::StrCat(job.id(), " ", v1::JobState_Name(job.state()));
  if (job.has_error() && !job.error().code().empty() &&
      (job.state() == v1::FAILED || job.state() == v1::CANCELLED)) {
    absl::StrAppend(&line, " (", job.error().code());
    if (!job.error().message().empty()) absl::StrAppend(&line, ": ", job.error().message());
    absl::StrAppend(&line, ")");
  }
  return line;
}

std::string FormatTime(const google::protobuf::Timestamp& ts) {
  if (ts.seconds() == 0 && ts.nanos() == 0) return "-";
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ",
                          absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos()),
                          absl::UTCTimeZone());
}

void PrintJobDetails(std::ostream& out, const v1::Job& job) {
  out << "id:        " << job.id() << "\n";
  out << "type:      " << job.type() << "\n";
  out << "state:     " << v1::JobState_Name(job.state()) << "\n";
  out << "attempt:   " << job.attempt() << "/" << job.max_attempts() << "\n";
  if (job.cached()) out << "cached:    yes (answered from the response cache)\n";
  out << "priority:  " << job.priority() << "\n";
  if (!job.idempotency_key().empty()) out << "idem key:  " << job.idempotency_key() << "\n";
  if (!job.labels().empty()) {
    std::map<std::string, std::string> sorted(job.labels().begin(), job.labels().end());
    out << "labels:    " << absl::StrJoin(sorted, ",", absl::PairFormatter("=")) << "\n";
  }
  out << "created:   " << FormatTime(job.created_at()) << "\n";
  if (job.has_started_at()) out << "started:   " << FormatTime(job.started_at()) << "\n";
  if (job.has_finished_at()) out << "finished:  " << FormatTime(job.finished_at()) << "\n";
  if (job.has_error() && !job.error().code().empty()) {
    out << "error:     " << job.error().code() << ": " << job.error().message()
        << (job.error().retryable() ? " (retryable)" : "") << "\n";
  }
  if (job.has_input()) out << "input:     " << ToJson(job.input()) << "\n";
  if (job.has_result()) out << "result:    " << ToJson(job.result()) << "\n";
}

// Reads --input: inline JSON, @path, or - for stdin.
absl::StatusOr<std::string> ReadInputText(const std::string& input, std::istream& in) {
  if (input == "-") {
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  if (!input.empty() && input[0] == '@') {
    const std::string path = input.substr(1);
    std::ifstream file(path, std::ios::binary);
    if (!file)
      return absl::InvalidArgumentError(absl::StrCat("cannot read --input file '", path, "'"));
    return std::string(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
  }
  return input;
}

absl::StatusOr<google::protobuf::Struct> ParseInputJson(const std::string& text,
                                                        const std::string& source) {
  std::string trimmed(absl::StripAsciiWhitespace(text));
  if (trimmed.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("invalid --input JSON from ", source,
                                                   ": it is empty; expected a JSON object"));
  }
  if (trimmed[0] != '{') {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid --input JSON from ", source, ": expected a JSON object ({...}), got '",
        trimmed.substr(0, 20), trimmed.size() > 20 ? "...'" : "'"));
  }
  google::protobuf::Struct input;
  auto status = google::protobuf::util::JsonStringToMessage(trimmed, &input);
  if (!status.ok()) {
    // protobuf's message is "problem\n<input excerpt>\n<caret>"; keep it on one line.
    std::vector<std::string> lines =
        absl::StrSplit(status.message().ToString(), '\n', absl::SkipWhitespace());
    std::string problem = lines.empty() ? "malformed" : lines[0];
    const std::string excerpt =
        lines.size() > 1 ? std::string(absl::StripAsciiWhitespace(lines[1])) : "";
    if (!excerpt.empty() && excerpt != "^") absl::StrAppend(&problem, " near '", excerpt, "'");
    return absl::InvalidArgumentError(
        absl::StrCat("invalid --input JSON from ", source, ": ", problem));
  }
  return input;
}

// "90d", "12h", "30m", "45s" (and whatever absl::ParseDuration takes), positive.
bool ParseDays(const std::string& text, absl::Duration* out) {
  int64_t days = 0;
  if (absl::EndsWith(text, "d") && absl::SimpleAtoi(text.substr(0, text.size() - 1), &days)) {
    *out = absl::Hours(24 * days);
  } else if (!absl::ParseDuration(text, out)) {
    return false;
  }
  return *out > absl::ZeroDuration();
}

class Cli {
 public:
  Cli(std::ostream& out, std::ostream& err, std::istream& in)
      : out_(out), err_(err), in_(in), stdout_(out) {}

  int Run(const std::vector<std::string>& args) {
    ParsedArgs parsed;
    if (auto error = ParseArgs(args, &parsed)) return Usage(*error);
    if (parsed.Bool("help")) {
      out_ << (parsed.command ? std::string(parsed.command->usage) + "\n" : kGlobalUsage);
      return kExitOk;
    }
    if (parsed.command == nullptr) return Usage({"missing command", kGlobalUsage});
    const CommandSpec& command = *parsed.command;
    if (static_cast<int>(parsed.positional.size()) != command.positional) {
      return Usage({command.positional == 0
                        ? absl::StrCat("unexpected argument '", parsed.positional[0], "'")
                    : parsed.positional.empty()
                        ? std::string(absl::StartsWith(command.name, "apikey") ? "missing key ID"
                                                                               : "missing job ID")
                        : absl::StrCat("unexpected argument '", parsed.positional[1], "'"),
                    command.usage});
    }

    ClientOptions options;
    // An operator at a terminal wants "unreachable" at once, not after --timeout.
    options.wait_for_ready = false;
    if (parsed.Has("timeout")) {
      absl::Duration timeout;
      const std::string text = parsed.Get("timeout");
      int64_t seconds;
      if (absl::SimpleAtoi(text, &seconds)) {
        timeout = absl::Seconds(seconds);
      } else if (!absl::ParseDuration(text, &timeout)) {
        return Usage({absl::StrCat("--timeout: cannot parse '", text, "' (use e.g. 10s, 500ms)"),
                      kGlobalUsage});
      }
      if (timeout <= absl::ZeroDuration()) {
        return Usage({"--timeout must be positive", kGlobalUsage});
      }
      options.default_deadline = timeout;
    }
    server_ = parsed.Get("server", kDefaultServer);
    if (server_.empty()) return Usage({"--server must not be empty", kGlobalUsage});
    if (absl::Status s = SchedulerChannelTargetFromList(server_).status(); !s.ok()) {
      return Usage({absl::StrCat("--server: ", s.message()), kGlobalUsage});
    }
    options.bearer_token = BearerTokenFrom(parsed.Get("token"), "AIJOBS_TOKEN");
    auto creds =
        ClientTlsCredentials({parsed.Get("tls_ca"), parsed.Get("tls_cert"), parsed.Get("tls_key")});
    if (!creds.ok()) return Usage({std::string(creds.status().message()), kGlobalUsage});
    options.credentials = *std::move(creds);
    options_ = options;

    const std::string name = command.name;
    if (name == "submit") return Submit(parsed);
    if (name == "get") return Get(parsed);
    if (name == "watch") return WatchCommand(parsed);
    if (name == "cancel") return Cancel(parsed);
    if (name == "retry") return Retry(parsed);
    if (name == "apikey create") return ApiKeyCreate(parsed);
    if (name == "apikey list") return ApiKeyList(parsed);
    if (name == "apikey revoke") return ApiKeyRevoke(parsed);
    if (name == "token") return Token(parsed);
    if (name == "audit") return Audit(parsed);
    return List(parsed);
  }

 private:
  Client& client() {
    if (client_ == nullptr) client_ = std::make_unique<Client>(server_, options_);
    return *client_;
  }

  int Usage(const UsageError& error) {
    err_ << "aijobsctl: " << error.message << "\n";
    if (!error.usage.empty()) {
      err_ << error.usage;
      if (error.usage.back() != '\n') err_ << "\n";
    }
    return kExitUsage;
  }

  int RpcError(const absl::Status& status) {
    stdout_.EnsureNewline();
    PrintStatusError(err_, status);
    return kExitFailure;
  }

  std::optional<int> ParseInt(const ParsedArgs& parsed, const std::string& flag, int64_t min,
                              int64_t max, const char* usage, int64_t* value) {
    const std::string text = parsed.Get(flag);
    if (!absl::SimpleAtoi(text, value) || *value < min || *value > max) {
      return Usage({absl::StrCat("--", flag, " needs an integer in [", min, ", ", max, "], got '",
                                 text, "'"),
                    usage});
    }
    return std::nullopt;
  }

  int Submit(const ParsedArgs& parsed) {
    const char* usage = parsed.command->usage;
    v1::SubmitJobRequest request;
    request.set_type(parsed.Get("type"));
    if (request.type().empty()) return Usage({"--type is required", usage});

    if (parsed.Has("prompt") && parsed.Has("input")) {
      return Usage({"use either --prompt or --input, not both", usage});
    }
    if (parsed.Has("prompt")) {
      *request.mutable_input() = ChatInput(parsed.Get("prompt"));
    } else if (parsed.Has("input")) {
      const std::string input = parsed.Get("input");
      absl::StatusOr<std::string> text = ReadInputText(input, in_);
      // Input errors are not usage errors: the message alone says what to fix.
      if (!text.ok()) return Usage({std::string(text.status().message()), ""});
      const std::string source = input == "-"                          ? std::string("stdin")
                                 : (!input.empty() && input[0] == '@') ? input.substr(1)
                                                                       : "--input";
      absl::StatusOr<google::protobuf::Struct> parsed_input = ParseInputJson(*text, source);
      if (!parsed_input.ok()) return Usage({std::string(parsed_input.status().message()), ""});
      *request.mutable_input() = *std::move(parsed_input);
    } else {
      return Usage({"one of --prompt or --input is required", usage});
    }

    int64_t n = 0;
    if (parsed.Has("priority")) {
      if (auto rc = ParseInt(parsed, "priority", INT32_MIN, INT32_MAX, usage, &n)) return *rc;
      request.set_priority(static_cast<int32_t>(n));
    }
    if (parsed.Has("max_attempts")) {
      if (auto rc = ParseInt(parsed, "max_attempts", 0, INT32_MAX, usage, &n)) return *rc;
      request.set_max_attempts(static_cast<int32_t>(n));
    }
    if (parsed.Has("timeout_ms")) {
      if (auto rc = ParseInt(parsed, "timeout_ms", 1, INT64_MAX / 1000, usage, &n)) return *rc;
      request.mutable_timeout()->set_seconds(n / 1000);
      request.mutable_timeout()->set_nanos(static_cast<int32_t>((n % 1000) * 1000000));
    }
    if (parsed.Has("cache_ttl_s")) {
      // Opt into the response cache; the scheduler checks the upper bound (30 days).
      if (auto rc = ParseInt(parsed, "cache_ttl_s", 1, INT32_MAX, usage, &n)) return *rc;
      request.mutable_cache()->mutable_ttl()->set_seconds(n);
    }
    request.set_idempotency_key(parsed.Get("idempotency_key"));
    if (auto it = parsed.flags.find("label"); it != parsed.flags.end()) {
      for (const std::string& label : it->second) {
        const size_t eq = label.find('=');
        if (eq == std::string::npos || eq == 0) {
          return Usage({absl::StrCat("--label needs key=value, got '", label, "'"), usage});
        }
        (*request.mutable_labels())[label.substr(0, eq)] = label.substr(eq + 1);
      }
    }

    absl::StatusOr<v1::Job> job = client().Submit(request);
    if (!job.ok()) return RpcError(job.status());

    const bool watch = parsed.Bool("watch");
    const bool wait = parsed.Bool("wait");
    const bool json = parsed.Bool("json");
    if (!watch && !wait) {
      out_ << (json ? ToJson(*job) : job->id()) << "\n";
      return kExitOk;
    }
    // Tell a human which job is running before its output starts.
    if (watch && !json) err_ << "job " << job->id() << "\n";
    absl::StatusOr<v1::Job> final_job =
        client().Watch(job->id(), 0, [&](const v1::JobEvent& event) {
          if (watch) PrintTextEvent(event);
          return true;
        });
    if (!final_job.ok()) return RpcError(final_job.status());
    stdout_.EnsureNewline();
    stdout_.Write(absl::StrCat(json ? ToJson(*final_job) : JobLine(*final_job), "\n"));
    return final_job->state() == v1::SUCCEEDED ? kExitOk : kExitFailure;
  }

  // Prints output text as it streams; a new attempt's restart is marked on stderr and starts
  // on a fresh stdout line, so the discarded partial text is never silently glued to the new.
  void PrintTextEvent(const v1::JobEvent& event) {
    if (event.has_output_delta()) {
      stdout_.Write(event.output_delta().text());
    } else if (event.has_state_change() && event.state_change().discard_output()) {
      stdout_.EnsureNewline();
      err_ << "[attempt " << event.state_change().attempt() << ": restarting output]\n"
           << std::flush;
    }
  }

  int Get(const ParsedArgs& parsed) {
    absl::StatusOr<v1::Job> job = client().Get(parsed.positional[0]);
    if (!job.ok()) return RpcError(job.status());
    if (parsed.Bool("json")) {
      out_ << ToJson(*job) << "\n";
    } else {
      PrintJobDetails(out_, *job);
    }
    return kExitOk;
  }

  int WatchCommand(const ParsedArgs& parsed) {
    int64_t after = 0;
    if (parsed.Has("after")) {
      if (auto rc = ParseInt(parsed, "after", 0, INT64_MAX, parsed.command->usage, &after)) {
        return *rc;
      }
    }
    const bool json = parsed.Bool("json");
    absl::StatusOr<v1::Job> final_job =
        client().Watch(parsed.positional[0], after, [&](const v1::JobEvent& event) {
          if (json) {
            stdout_.Write(ToJson(event) + "\n");
          } else {
            PrintTextEvent(event);
          }
          return true;
        });
    if (!final_job.ok()) return RpcError(final_job.status());
    if (!json) {
      stdout_.EnsureNewline();
      stdout_.Write(JobLine(*final_job) + "\n");
    }
    return final_job->state() == v1::SUCCEEDED ? kExitOk : kExitFailure;
  }

  int Cancel(const ParsedArgs& parsed) {
    absl::StatusOr<v1::Job> job = client().Cancel(parsed.positional[0], parsed.Get("reason"));
    if (!job.ok()) return RpcError(job.status());
    out_ << (parsed.Bool("json") ? ToJson(*job) : JobLine(*job)) << "\n";
    return kExitOk;
  }

  int Retry(const ParsedArgs& parsed) {
    absl::StatusOr<v1::Job> job = client().Retry(parsed.positional[0]);
    if (!job.ok()) return RpcError(job.status());
    out_ << (parsed.Bool("json") ? ToJson(*job) : JobLine(*job)) << "\n";
    return kExitOk;
  }

  int List(const ParsedArgs& parsed) {
    const char* usage = parsed.command->usage;
    v1::ListJobsRequest request;
    if (parsed.Has("state")) {
      v1::JobState state;
      const std::string name = absl::AsciiStrToUpper(parsed.Get("state"));
      if (!v1::JobState_Parse(name, &state) || state == v1::JOB_STATE_UNSPECIFIED) {
        return Usage({absl::StrCat("--state: unknown state '", parsed.Get("state"),
                                   "' (one of QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)"),
                      usage});
      }
      request.set_state(state);
    }
    request.set_type(parsed.Get("type"));
    if (parsed.Has("page_size")) {
      int64_t n = 0;
      if (auto rc = ParseInt(parsed, "page_size", 0, 1000, usage, &n)) return *rc;
      request.set_page_size(static_cast<int32_t>(n));
    }
    request.set_page_token(parsed.Get("page_token"));

    absl::StatusOr<v1::ListJobsResponse> response = client().List(request);
    if (!response.ok()) return RpcError(response.status());
    if (parsed.Bool("json")) {
      out_ << ToJson(*response) << "\n";
      return kExitOk;
    }
    for (const v1::Job& job : response->jobs()) {
      out_ << job.id() << "  " << job.type() << "  " << v1::JobState_Name(job.state()) << "  "
           << job.attempt() << "/" << job.max_attempts() << "  " << FormatTime(job.created_at())
           << "\n";
    }
    if (!response->next_page_token().empty()) {
      out_ << "next page: --page_token " << response->next_page_token() << "\n";
    }
    return kExitOk;
  }

  std::unique_ptr<v1::AdminService::Stub> admin(grpc::ClientContext* ctx) {
    client().PrepareContext(ctx, absl::Now() + options_.default_deadline);
    return v1::AdminService::NewStub(client().channel());
  }

  void PrintApiKey(const v1::ApiKey& k) {
    out_ << k.id() << "  " << k.name() << "  roles=" << absl::StrJoin(k.roles(), ",");
    if (k.job_types_size() > 0) out_ << "  job_types=" << absl::StrJoin(k.job_types(), ",");
    out_ << "  created " << FormatTime(k.created_at()) << " by " << k.created_by();
    if (k.has_expires_at()) out_ << "  expires " << FormatTime(k.expires_at());
    if (k.has_revoked_at()) out_ << "  REVOKED " << FormatTime(k.revoked_at());
    out_ << "\n";
  }

  int ApiKeyCreate(const ParsedArgs& parsed) {
    const char* usage = parsed.command->usage;
    v1::CreateApiKeyRequest request;
    request.set_name(parsed.Get("name"));
    if (request.name().empty()) return Usage({"--name is required", usage});
    if (parsed.Has("role")) {
      for (const std::string& r : parsed.flags.at("role")) request.add_roles(r);
    }
    if (parsed.Has("job_type")) {
      for (const std::string& t : parsed.flags.at("job_type")) request.add_job_types(t);
    }
    if (parsed.Has("expires")) {
      absl::Duration ttl;
      if (!ParseDays(parsed.Get("expires"), &ttl)) {
        return Usage({absl::StrCat("--expires: cannot parse '", parsed.Get("expires"),
                                   "' (use e.g. 90d, 12h, 30m)"),
                      usage});
      }
      request.mutable_ttl()->set_seconds(absl::ToInt64Seconds(ttl));
    }
    request.set_tenant_id(parsed.Get("tenant"));
    grpc::ClientContext ctx;
    v1::CreateApiKeyResponse response;
    grpc::Status s = admin(&ctx)->CreateApiKey(&ctx, request, &response);
    if (!s.ok()) return RpcError(FromGrpcStatus(s));
    if (parsed.Bool("json")) {
      out_ << ToJson(response) << "\n";
      return kExitOk;
    }
    out_ << response.key() << "\n";
    err_ << "API key " << response.api_key().id() << " (" << response.api_key().name()
         << ") of tenant " << response.api_key().tenant_id()
         << " created; the key above is shown only this once\n";
    return kExitOk;
  }

  int ApiKeyList(const ParsedArgs& parsed) {
    v1::ListApiKeysRequest request;
    request.set_include_revoked(parsed.Bool("all"));
    grpc::ClientContext ctx;
    v1::ListApiKeysResponse response;
    grpc::Status s = admin(&ctx)->ListApiKeys(&ctx, request, &response);
    if (!s.ok()) return RpcError(FromGrpcStatus(s));
    if (parsed.Bool("json")) {
      out_ << ToJson(response) << "\n";
      return kExitOk;
    }
    for (const v1::ApiKey& k : response.api_keys()) PrintApiKey(k);
    return kExitOk;
  }

  int ApiKeyRevoke(const ParsedArgs& parsed) {
    v1::RevokeApiKeyRequest request;
    request.set_id(parsed.positional[0]);
    grpc::ClientContext ctx;
    v1::ApiKey response;
    grpc::Status s = admin(&ctx)->RevokeApiKey(&ctx, request, &response);
    if (!s.ok()) return RpcError(FromGrpcStatus(s));
    if (parsed.Bool("json")) {
      out_ << ToJson(response) << "\n";
    } else {
      PrintApiKey(response);
    }
    return kExitOk;
  }

  int Audit(const ParsedArgs& parsed) {
    const char* usage = parsed.command->usage;
    v1::ListAuditEventsRequest request;
    if (parsed.Has("since")) {
      absl::Duration ago;
      if (!ParseDays(parsed.Get("since"), &ago)) {
        return Usage(
            {absl::StrCat("--since: cannot parse '", parsed.Get("since"), "' (e.g. 1h, 30m, 7d)"),
             usage});
      }
      const absl::Time since = absl::Now() - ago;
      request.mutable_since()->set_seconds(absl::ToUnixSeconds(since));
    }
    request.set_subject(parsed.Get("subject"));
    if (parsed.Has("limit")) {
      int64_t n = 0;
      if (auto rc = ParseInt(parsed, "limit", 1, 1000, usage, &n)) return *rc;
      request.set_page_size(static_cast<int32_t>(n));
    }
    grpc::ClientContext ctx;
    v1::ListAuditEventsResponse response;
    grpc::Status s = admin(&ctx)->ListAuditEvents(&ctx, request, &response);
    if (!s.ok()) return RpcError(FromGrpcStatus(s));
    if (parsed.Bool("json")) {
      out_ << ToJson(response) << "\n";
      return kExitOk;
    }
    for (const v1::AuditEvent& e : response.events()) {
      out_ << FormatTime(e.time()) << "  " << (e.subject().empty() ? "(anonymous)" : e.subject())
           << "  " << e.action() << "  " << (e.job_id().empty() ? e.target() : e.job_id()) << "  "
           << e.code();
      if (!e.message().empty()) out_ << "  " << e.message();
      out_ << "  peer=" << e.peer();
      if (!e.request_id().empty()) out_ << "  request=" << e.request_id();
      out_ << "\n";
    }
    return kExitOk;
  }

  int Token(const ParsedArgs& parsed) {
    const char* usage = parsed.command->usage;
    if (!parsed.Has("key")) return Usage({"--key is required", usage});
    if (parsed.Get("sub").empty()) return Usage({"--sub is required", usage});
    absl::Duration ttl = absl::Hours(1);
    if (parsed.Has("ttl") && !ParseDays(parsed.Get("ttl"), &ttl)) {
      return Usage(
          {absl::StrCat("--ttl: cannot parse '", parsed.Get("ttl"), "' (e.g. 1h, 7d)"), usage});
    }
    std::ifstream file(parsed.Get("key"), std::ios::binary);
    if (!file) return Usage({absl::StrCat("cannot read --key file '", parsed.Get("key"), "'"), ""});
    const std::string text((std::istreambuf_iterator<char>(file)),
                           std::istreambuf_iterator<char>());
    auto key = auth::SigningKeyFromFile(text, parsed.Get("kid"));
    if (!key.ok()) return Usage({absl::StrCat("--key: ", key.status().message()), ""});
    google::protobuf::Struct claims;
    auto& f = *claims.mutable_fields();
    const absl::Time now = absl::Now();
    f["sub"].set_string_value(parsed.Get("sub"));
    f["iat"].set_number_value(static_cast<double>(absl::ToUnixSeconds(now)));
    f["exp"].set_number_value(static_cast<double>(absl::ToUnixSeconds(now + ttl)));
    if (parsed.Has("tenant")) f["tenant"].set_string_value(parsed.Get("tenant"));
    if (parsed.Has("issuer")) f["iss"].set_string_value(parsed.Get("issuer"));
    if (parsed.Has("audience")) f["aud"].set_string_value(parsed.Get("audience"));
    for (const char* list : {"role", "job_type"}) {
      if (!parsed.Has(list)) continue;
      auto* values = f[std::string(list) == "role" ? "roles" : "job_types"].mutable_list_value();
      for (const std::string& v : parsed.flags.at(list)) values->add_values()->set_string_value(v);
    }
    auto token = auth::SignJwt(claims, key->alg, key->material, key->kid);
    if (!token.ok()) return RpcError(token.status());
    out_ << *token << "\n";
    return kExitOk;
  }

  std::ostream& out_;
  std::ostream& err_;
  std::istream& in_;
  LineTracker stdout_;
  std::string server_;
  ClientOptions options_;
  std::unique_ptr<Client> client_;
};

}  // namespace

int RunCli(int argc, const char* const* argv, std::ostream& out, std::ostream& err,
           std::istream& in) {
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) args.emplace_back(argv[i]);
  return Cli(out, err, in).Run(args);
}

}  // namespace aijobs::ctl
