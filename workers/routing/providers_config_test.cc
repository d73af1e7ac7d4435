#include "workers/routing/providers_config.h"

#include <google/protobuf/text_format.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/time_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace aijobs::worker {
namespace {

using ::testing::HasSubstr;

constexpr char kGood[] = R"pb(
  deployments {
    name: "local"
    provider: "openai"
    base_url: "http://127.0.0.1:11434/v1"
    model: "llama3"
    rate_limit { requests_per_minute: 600 }
  }
  deployments { name: "sim" provider: "sim" }
  model_groups {
    name: "chat-default"
    members { deployment: "local" }
    members { deployment: "sim" weight: 3 priority: 1 }
    cache_ttl { seconds: 60 }
  }
  model_groups {
    name: "fast"
    members { deployment: "sim" }
  }
)pb";

// Writes `text` to a fresh file with `suffix`; returns its path.
std::string WriteTemp(const std::string& text, const std::string& suffix) {
  static int counter = 0;
  std::string path =
      absl::StrCat(::testing::TempDir(), "/providers_", getpid(), "_", counter++, suffix);
  std::ofstream(path) << text;
  return path;
}

std::string LoadError(const std::string& text, const std::string& suffix = ".textproto") {
  std::string path = WriteTemp(text, suffix);
  absl::StatusOr<v1::ProvidersConfig> c = LoadProvidersConfig(path);
  std::remove(path.c_str());
  EXPECT_FALSE(c.ok()) << "expected an error for:\n" << text;
  if (c.ok()) return "";
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr(path)) << "names the file";
  return std::string(c.status().message());
}

TEST(ProvidersConfigTest, LoadsTextFormatAndAppliesDefaults) {
  std::string path = WriteTemp(kGood, ".textproto");
  absl::StatusOr<v1::ProvidersConfig> c = LoadProvidersConfig(path);
  std::remove(path.c_str());
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->deployments_size(), 2);
  const auto& d = c->deployments(0);
  EXPECT_EQ(FromProtoDuration(d.timeouts().connect()), absl::Seconds(5));
  EXPECT_EQ(FromProtoDuration(d.timeouts().first_byte()), absl::Seconds(60));
  EXPECT_EQ(FromProtoDuration(d.timeouts().idle()), absl::Seconds(30));
  EXPECT_EQ(FromProtoDuration(d.timeouts().total()), absl::Seconds(600));
  EXPECT_EQ(d.retry().max_retries(), 2);
  EXPECT_EQ(FromProtoDuration(d.retry().initial_backoff()), absl::Milliseconds(500));
  EXPECT_EQ(FromProtoDuration(d.retry().max_backoff()), absl::Seconds(8));
  EXPECT_DOUBLE_EQ(d.breaker().failure_rate(), 0.5);
  EXPECT_EQ(d.breaker().min_requests(), 10);
  EXPECT_EQ(FromProtoDuration(d.breaker().window()), absl::Seconds(30));
  EXPECT_EQ(FromProtoDuration(d.breaker().open_duration()), absl::Seconds(15));
  EXPECT_EQ(c->model_groups(0).members(0).weight(), 1u);
  EXPECT_EQ(c->model_groups(0).members(1).weight(), 3u);
  EXPECT_EQ(c->default_model_group(), "chat-default");
}

TEST(ProvidersConfigTest, ExplicitZeroRetriesIsKept) {
  absl::StatusOr<v1::ProvidersConfig> c = ParseProvidersConfig(
      R"pb(deployments {
             name: "a"
             provider: "sim"
             retry { max_retries: 0 }
           }
           model_groups {
             name: "g"
             members { deployment: "a" }
           })pb",
      false, "mem");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->deployments(0).retry().max_retries(), 0);
}

TEST(ProvidersConfigTest, LoadsJson) {
  std::string path = WriteTemp(R"({
    "deployments": [{"name": "a", "provider": "openai", "baseUrl": "https://x.test/v1",
                     "model": "m", "timeouts": {"connect": "2s"}}],
    "modelGroups": [{"name": "g", "members": [{"deployment": "a"}], "cacheTtl": "30s"}]
  })",
                               ".json");
  absl::StatusOr<v1::ProvidersConfig> c = LoadProvidersConfig(path);
  std::remove(path.c_str());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(FromProtoDuration(c->deployments(0).timeouts().connect()), absl::Seconds(2));
  EXPECT_EQ(FromProtoDuration(c->deployments(0).timeouts().idle()), absl::Seconds(30));
}

TEST(ProvidersConfigTest, TextSyntaxErrorNamesLineAndColumn) {
  std::string e = LoadError("deployments {\n  name: \"a\"\n  bogus_field: 1\n}\n");
  EXPECT_THAT(e, HasSubstr("line 3:"));
  EXPECT_THAT(e, HasSubstr("bogus_field"));
  std::string unclosed = LoadError("deployments {\n  name: \"a\"\n\n  provider: sim\n");
  EXPECT_THAT(unclosed, HasSubstr("line 4:"));  // an enum-less string needs quotes
}

TEST(ProvidersConfigTest, JsonErrorIsReported) {
  std::string e = LoadError(R"({"deployments": [{"nmae": "a"}]})", ".json");
  EXPECT_THAT(e, HasSubstr("invalid JSON"));
  EXPECT_THAT(e, HasSubstr("nmae"));
}

TEST(ProvidersConfigTest, MissingFileIsNotFound) {
  absl::StatusOr<v1::ProvidersConfig> c = LoadProvidersConfig("/nonexistent/providers.pbtxt");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
}

TEST(ProvidersConfigTest, BadBaseUrlNamesTheField) {
  std::string e = LoadError(R"pb(
    deployments { name: "a" provider: "sim" }
    deployments { name: "b" provider: "openai" base_url: "ftp://x" model: "m" }
    model_groups {
      name: "g"
      members { deployment: "a" }
    })pb");
  EXPECT_THAT(e, HasSubstr("deployments[1].base_url: must start with http:// or https://"));
}

TEST(ProvidersConfigTest, UnknownMemberDeploymentNamesTheField) {
  std::string e = LoadError(R"pb(
    deployments { name: "a" provider: "sim" }
    model_groups {
      name: "g"
      members { deployment: "a" }
      members { deployment: "a" }
      members { deployment: "cloud" }
    })pb");
  EXPECT_THAT(e, HasSubstr("model_groups[0].members[2].deployment: unknown deployment \"cloud\""));
  EXPECT_THAT(e, HasSubstr("model_groups[0].members[1].deployment: deployment \"a\" is listed"));
}

TEST(ProvidersConfigTest, ReportsEveryProblemWithItsPath) {
  std::string e = LoadError(R"pb(
    deployments { name: "a" provider: "anthropic" }
    deployments { name: "a" provider: "openai" model: "" }
    deployments {
      name: "c"
      provider: "sim"
      rate_limit {
        requests_per_minute: -1
        burst { seconds: -1 }
      }
      timeouts { idle { seconds: -3 } }
      breaker { failure_rate: 1.5 min_requests: -2 }
      retry { max_retries: -1 }
    }
    model_groups { name: "g" }
    model_groups {
      name: "g"
      members { deployment: "c" }
      cache_ttl { seconds: -1 }
    }
    default_model_group: "nope")pb");
  EXPECT_THAT(e, HasSubstr("deployments[0].provider: must be \"openai\" or \"sim\" (got "
                           "\"anthropic\")"));
  EXPECT_THAT(e, HasSubstr("deployments[1].name: duplicate deployment name \"a\""));
  EXPECT_THAT(e, HasSubstr("deployments[1].base_url: must be set"));
  EXPECT_THAT(e, HasSubstr("deployments[1].model: must be set"));
  EXPECT_THAT(e, HasSubstr("deployments[2].rate_limit.requests_per_minute: must be a number >= 0"));
  EXPECT_THAT(e, HasSubstr("deployments[2].rate_limit.burst: must not be negative"));
  EXPECT_THAT(e, HasSubstr("deployments[2].timeouts.idle: must not be negative"));
  EXPECT_THAT(e, HasSubstr("deployments[2].breaker.failure_rate: must be within (0, 1]"));
  EXPECT_THAT(e, HasSubstr("deployments[2].breaker.min_requests: must be >= 0"));
  EXPECT_THAT(e, HasSubstr("deployments[2].retry.max_retries: must be >= 0"));
  EXPECT_THAT(e, HasSubstr("model_groups[0].members: must list at least one deployment"));
  EXPECT_THAT(e, HasSubstr("model_groups[1].name: duplicate model group name \"g\""));
  EXPECT_THAT(e, HasSubstr("model_groups[1].cache_ttl: must not be negative"));
  EXPECT_THAT(e, HasSubstr("default_model_group: unknown model group \"nope\""));
}

TEST(ProvidersConfigTest, EmptyConfigIsRejected) {
  std::string e = LoadError("");
  EXPECT_THAT(e, HasSubstr("deployments: must list at least one deployment"));
  EXPECT_THAT(e, HasSubstr("model_groups: must list at least one group"));
}

TEST(ProvidersConfigTest, ValidConfigHasNoProblems) {
  absl::StatusOr<v1::ProvidersConfig> c = ParseProvidersConfig(kGood, false, "mem");
  EXPECT_TRUE(c.ok()) << c.status();
  v1::ProvidersConfig raw;
  ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(kGood, &raw));
  EXPECT_TRUE(ValidateProvidersConfig(raw).ok());
}

TEST(ProvidersConfigTest, CacheAdvertsCoverCachedGroupsAndTheDefaultModel) {
  absl::StatusOr<v1::ProvidersConfig> c = ParseProvidersConfig(kGood, false, "mem");
  ASSERT_TRUE(c.ok()) << c.status();
  std::vector<v1::CacheAdvert> adverts = CacheAdverts(*c, {"chat", "embed", "custom"});
  // chat-default (cached, default) -> models "chat-default" and ""; fast has no cache_ttl.
  ASSERT_EQ(adverts.size(), 4u);
  std::set<std::pair<std::string, std::string>> seen;
  for (const auto& a : adverts) {
    seen.insert({a.job_type(), a.model()});
    EXPECT_EQ(FromProtoDuration(a.ttl()), absl::Seconds(60));
  }
  EXPECT_EQ(seen,
            (std::set<std::pair<std::string, std::string>>{
                {"chat", "chat-default"}, {"chat", ""}, {"embed", "chat-default"}, {"embed", ""}}));
  EXPECT_TRUE(CacheAdverts(*c, {"custom"}).empty());
}

TEST(ProvidersConfigTest, NonDefaultCachedGroupIsAdvertisedOnlyByName) {
  absl::StatusOr<v1::ProvidersConfig> c = ParseProvidersConfig(
      R"pb(deployments { name: "a" provider: "sim" }
           model_groups {
             name: "g1"
             members { deployment: "a" }
           }
           model_groups {
             name: "g2"
             members { deployment: "a" }
             cache_ttl { seconds: 5 }
           })pb",
      false, "mem");
  ASSERT_TRUE(c.ok()) << c.status();
  std::vector<v1::CacheAdvert> adverts = CacheAdverts(*c, {"chat"});
  ASSERT_EQ(adverts.size(), 1u);
  EXPECT_EQ(adverts[0].model(), "g2");
}

}  // namespace
}  // namespace aijobs::worker
