#include "workers/routing/providers_config.h"

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>
#include <google/protobuf/util/json_util.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/time_util.h"

namespace aijobs::worker {
namespace {

using aijobs::v1::ProvidersConfig;
using google::protobuf::Duration;

// Collects text-format syntax errors as "line L:C: message" (1-based, as editors count).
class LineColumnErrors : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, google::protobuf::io::ColumnNumber column,
                const std::string& message) override {
    errors_.push_back(absl::StrCat("line ", line + 1, ":", column + 1, ": ", message));
  }
  void AddWarning(int line, google::protobuf::io::ColumnNumber column,
                  const std::string& message) override {}
  const std::vector<std::string>& errors() const { return errors_; }

 private:
  std::vector<std::string> errors_;
};

std::string Quote(const std::string& s) { return absl::StrCat("\"", s, "\""); }

// Validation state: the problems found so far, each "<path>: <message>".
class Problems {
 public:
  void Add(const std::string& path, const std::string& message) {
    list_.push_back(absl::StrCat(path, ": ", message));
  }
  void NonNegative(const std::string& path, const Duration& d) {
    bool valid = d.nanos() > -1000000000 && d.nanos() < 1000000000 &&
                 !(d.seconds() > 0 && d.nanos() < 0) && !(d.seconds() < 0 && d.nanos() > 0);
    if (!valid) {
      Add(path, "is not a valid duration");
    } else if (d.seconds() < 0 || d.nanos() < 0) {
      Add(path, absl::StrCat("must not be negative (got ",
                             absl::FormatDuration(FromProtoDuration(d)), ")"));
    }
  }
  void NonNegative(const std::string& path, double v) {
    if (!std::isfinite(v) || v < 0) Add(path, absl::StrCat("must be a number >= 0 (got ", v, ")"));
  }
  bool empty() const { return list_.empty(); }
  std::string Join() const { return absl::StrJoin(list_, "\n"); }

 private:
  std::vector<std::string> list_;
};

bool IsZero(const Duration& d) { return d.seconds() == 0 && d.nanos() == 0; }

void DefaultDuration(Duration* d, absl::Duration value) {
  if (IsZero(*d)) *d = ToProtoDuration(value);
}

void ValidateDeployment(const aijobs::v1::Deployment& d, const std::string& p, Problems* out) {
  if (d.name().empty()) out->Add(p + ".name", "must not be empty");
  if (d.provider() != "openai" && d.provider() != "sim") {
    out->Add(p + ".provider",
             absl::StrCat("must be \"openai\" or \"sim\" (got ", Quote(d.provider()), ")"));
  }
  bool openai = d.provider() == "openai";
  if (openai || !d.base_url().empty()) {
    if (d.base_url().empty()) {
      out->Add(p + ".base_url",
               "must be set for an openai deployment, e.g. "
               "\"https://api.openai.com/v1\"");
    } else if (!absl::StartsWith(d.base_url(), "http://") &&
               !absl::StartsWith(d.base_url(), "https://")) {
      out->Add(p + ".base_url",
               absl::StrCat("must start with http:// or https:// (got ", Quote(d.base_url()), ")"));
    } else if (absl::StrContains(d.base_url(), " ")) {
      out->Add(p + ".base_url", "must not contain spaces");
    }
  }
  if (openai && d.model().empty()) {
    out->Add(p + ".model", "must be set for an openai deployment (the model name sent to it)");
  }
  if (!d.api_key_env().empty() && !d.api_key_file().empty()) {
    out->Add(p + ".api_key_env", "set at most one of api_key_env and api_key_file");
  }
  for (const auto& [name, value] : d.headers()) {
    std::string hp = absl::StrCat(p, ".headers[", Quote(name), "]");
    if (name.empty() || name.find_first_of(": \t\r\n") != std::string::npos) {
      out->Add(hp, "is not a valid header name");
    }
    if (value.find_first_of("\r\n") != std::string::npos) {
      out->Add(hp, "value must not contain line breaks");
    }
  }
  out->NonNegative(p + ".timeouts.connect", d.timeouts().connect());
  out->NonNegative(p + ".timeouts.first_byte", d.timeouts().first_byte());
  out->NonNegative(p + ".timeouts.idle", d.timeouts().idle());
  out->NonNegative(p + ".timeouts.total", d.timeouts().total());
  if (d.retry().has_max_retries() && d.retry().max_retries() < 0) {
    out->Add(p + ".retry.max_retries",
             absl::StrCat("must be >= 0 (got ", d.retry().max_retries(), ")"));
  }
  out->NonNegative(p + ".retry.initial_backoff", d.retry().initial_backoff());
  out->NonNegative(p + ".retry.max_backoff", d.retry().max_backoff());
  if (!IsZero(d.retry().initial_backoff()) && !IsZero(d.retry().max_backoff()) &&
      FromProtoDuration(d.retry().initial_backoff()) > FromProtoDuration(d.retry().max_backoff())) {
    out->Add(p + ".retry.initial_backoff", "must not exceed retry.max_backoff");
  }
  out->NonNegative(p + ".rate_limit.requests_per_minute", d.rate_limit().requests_per_minute());
  out->NonNegative(p + ".rate_limit.tokens_per_minute", d.rate_limit().tokens_per_minute());
  out->NonNegative(p + ".rate_limit.burst", d.rate_limit().burst());
  const auto& b = d.breaker();
  if (!std::isfinite(b.failure_rate()) || b.failure_rate() < 0 || b.failure_rate() > 1) {
    out->Add(p + ".breaker.failure_rate",
             absl::StrCat("must be within (0, 1] (0 = default 0.5; got ", b.failure_rate(), ")"));
  }
  if (b.min_requests() < 0) {
    out->Add(p + ".breaker.min_requests",
             absl::StrCat("must be >= 0 (got ", b.min_requests(), ")"));
  }
  out->NonNegative(p + ".breaker.window", b.window());
  out->NonNegative(p + ".breaker.open_duration", b.open_duration());
}

}  // namespace

absl::Status ValidateProvidersConfig(const ProvidersConfig& config) {
  Problems out;
  if (config.deployments().empty()) out.Add("deployments", "must list at least one deployment");
  absl::flat_hash_set<std::string> deployments;
  for (int i = 0; i < config.deployments_size(); ++i) {
    const auto& d = config.deployments(i);
    std::string p = absl::StrCat("deployments[", i, "]");
    ValidateDeployment(d, p, &out);
    if (!d.name().empty() && !deployments.insert(d.name()).second) {
      out.Add(p + ".name", absl::StrCat("duplicate deployment name ", Quote(d.name())));
    }
  }
  if (config.model_groups().empty()) out.Add("model_groups", "must list at least one group");
  absl::flat_hash_set<std::string> groups;
  for (int i = 0; i < config.model_groups_size(); ++i) {
    const auto& g = config.model_groups(i);
    std::string p = absl::StrCat("model_groups[", i, "]");
    if (g.name().empty()) out.Add(p + ".name", "must not be empty");
    if (!g.name().empty() && !groups.insert(g.name()).second) {
      out.Add(p + ".name", absl::StrCat("duplicate model group name ", Quote(g.name())));
    }
    if (g.members().empty()) out.Add(p + ".members", "must list at least one deployment");
    absl::flat_hash_set<std::string> members;
    for (int j = 0; j < g.members_size(); ++j) {
      const auto& m = g.members(j);
      std::string mp = absl::StrCat(p, ".members[", j, "].deployment");
      if (m.deployment().empty()) {
        out.Add(mp, "must name a deployment");
      } else if (!deployments.contains(m.deployment())) {
        out.Add(mp, absl::StrCat("unknown deployment ", Quote(m.deployment()), " (known: ",
                                 absl::StrJoin(config.deployments(), ", ",
                                               [](std::string* s, const auto& d) {
                                                 absl::StrAppend(s, d.name());
                                               }),
                                 ")"));
      } else if (!members.insert(m.deployment()).second) {
        out.Add(mp, absl::StrCat("deployment ", Quote(m.deployment()), " is listed twice"));
      }
    }
    out.NonNegative(p + ".cache_ttl", g.cache_ttl());
  }
  if (!config.default_model_group().empty() && !groups.contains(config.default_model_group())) {
    out.Add("default_model_group",
            absl::StrCat("unknown model group ", Quote(config.default_model_group())));
  }
  if (out.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(out.Join());
}

void ApplyProviderDefaults(ProvidersConfig* config) {
  for (auto& d : *config->mutable_deployments()) {
    auto* t = d.mutable_timeouts();
    DefaultDuration(t->mutable_connect(), absl::Seconds(kDefaultConnectTimeoutS));
    DefaultDuration(t->mutable_first_byte(), absl::Seconds(kDefaultFirstByteTimeoutS));
    DefaultDuration(t->mutable_idle(), absl::Seconds(kDefaultIdleTimeoutS));
    DefaultDuration(t->mutable_total(), absl::Seconds(kDefaultTotalTimeoutS));
    auto* r = d.mutable_retry();
    if (!r->has_max_retries()) r->set_max_retries(kDefaultMaxRetries);
    DefaultDuration(r->mutable_initial_backoff(), absl::Milliseconds(kDefaultInitialBackoffMs));
    DefaultDuration(r->mutable_max_backoff(), absl::Seconds(kDefaultMaxBackoffS));
    auto* b = d.mutable_breaker();
    if (b->failure_rate() == 0) b->set_failure_rate(kDefaultBreakerFailureRate);
    if (b->min_requests() == 0) b->set_min_requests(kDefaultBreakerMinRequests);
    DefaultDuration(b->mutable_window(), absl::Seconds(kDefaultBreakerWindowS));
    DefaultDuration(b->mutable_open_duration(), absl::Seconds(kDefaultBreakerOpenS));
  }
  for (auto& g : *config->mutable_model_groups()) {
    for (auto& m : *g.mutable_members()) {
      if (m.weight() == 0) m.set_weight(1);
    }
  }
  if (config->default_model_group().empty() && !config->model_groups().empty()) {
    config->set_default_model_group(config->model_groups(0).name());
  }
}

std::string DefaultModelGroup(const ProvidersConfig& config) {
  if (!config.default_model_group().empty()) return config.default_model_group();
  return config.model_groups().empty() ? "" : config.model_groups(0).name();
}

absl::StatusOr<ProvidersConfig> ParseProvidersConfig(const std::string& text, bool json,
                                                     const std::string& source) {
  ProvidersConfig config;
  if (json) {
    google::protobuf::util::JsonParseOptions options;
    options.ignore_unknown_fields = false;  // a misspelt field must not be silently ignored
    auto status = google::protobuf::util::JsonStringToMessage(text, &config, options);
    if (!status.ok()) {
      // protobuf's message may carry an excerpt on further lines; keep the first.
      std::vector<std::string> lines =
          absl::StrSplit(status.message().ToString(), '\n', absl::SkipWhitespace());
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": invalid JSON: ", lines.empty() ? "malformed" : lines[0]));
    }
  } else {
    google::protobuf::TextFormat::Parser parser;
    LineColumnErrors errors;
    parser.RecordErrorsTo(&errors);
    if (!parser.ParseFromString(text, &config)) {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": invalid text format: ",
          errors.errors().empty() ? "malformed" : absl::StrJoin(errors.errors(), "; ")));
    }
  }
  if (absl::Status s = ValidateProvidersConfig(config); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": ",
        absl::StrJoin(absl::StrSplit(s.message(), '\n'), absl::StrCat("\n", source, ": "))));
  }
  ApplyProviderDefaults(&config);
  return config;
}

absl::StatusOr<ProvidersConfig> LoadProvidersConfig(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot read the providers file"));
  std::stringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::NotFoundError(absl::StrCat(path, ": cannot read the providers file"));
  return ParseProvidersConfig(text.str(), absl::EndsWith(path, ".json"), path);
}

std::vector<aijobs::v1::CacheAdvert> CacheAdverts(const ProvidersConfig& config,
                                                  const std::vector<std::string>& job_types) {
  std::vector<aijobs::v1::CacheAdvert> adverts;
  const std::string default_group = DefaultModelGroup(config);
  for (const std::string& type : job_types) {
    if (type != "chat" && type != "embed") continue;
    for (const auto& g : config.model_groups()) {
      if (g.cache_ttl().seconds() <= 0 && g.cache_ttl().nanos() <= 0) continue;
      std::vector<std::string> models = {g.name()};
      if (g.name() == default_group) models.push_back("");
      for (const std::string& model : models) {
        aijobs::v1::CacheAdvert a;
        a.set_job_type(type);
        a.set_model(model);
        *a.mutable_ttl() = g.cache_ttl();
        adverts.push_back(std::move(a));
      }
    }
  }
  return adverts;
}

}  // namespace aijobs::worker
