#include "workers/openai/openai_settings.h"

#include <cstdlib>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace aijobs::openai {
namespace {

using ::testing::HasSubstr;

v1::Deployment Minimal() {
  v1::Deployment d;
  d.set_name("local");
  d.set_base_url("http://127.0.0.1:8000/v1//");
  return d;
}

std::string ErrorOf(const v1::Deployment& d) {
  absl::StatusOr<OpenAiSettings> s = ResolveSettings(d);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(s.status().message());
}

TEST(ResolveSettingsTest, AppliesDefaults) {
  absl::StatusOr<OpenAiSettings> s = ResolveSettings(Minimal());
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->name, "local");
  EXPECT_EQ(s->base_url, "http://127.0.0.1:8000/v1");  // trailing slashes dropped
  EXPECT_EQ(s->api_key, "");
  EXPECT_EQ(s->connect_timeout, absl::Seconds(5));
  EXPECT_EQ(s->first_byte_timeout, absl::Seconds(60));
  EXPECT_EQ(s->idle_timeout, absl::Seconds(30));
  EXPECT_EQ(s->total_timeout, absl::Seconds(600));
  EXPECT_EQ(s->max_retries, 2);
  EXPECT_EQ(s->initial_backoff, absl::Milliseconds(500));
  EXPECT_EQ(s->max_backoff, absl::Seconds(8));
}

TEST(ResolveSettingsTest, TakesTimeoutsRetriesAndHeaders) {
  v1::Deployment d = Minimal();
  d.set_provider("openai");
  d.set_model("m");
  d.mutable_timeouts()->mutable_connect()->set_seconds(2);
  d.mutable_timeouts()->mutable_total()->set_seconds(30);
  d.mutable_retry()->set_max_retries(0);
  d.mutable_retry()->mutable_max_backoff()->set_seconds(1);
  (*d.mutable_headers())["OpenAI-Organization"] = "org-1";
  absl::StatusOr<OpenAiSettings> s = ResolveSettings(d);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->model, "m");
  EXPECT_EQ(s->connect_timeout, absl::Seconds(2));
  EXPECT_EQ(s->total_timeout, absl::Seconds(30));
  EXPECT_EQ(s->idle_timeout, absl::Seconds(30));
  EXPECT_EQ(s->max_retries, 0);
  EXPECT_EQ(s->max_backoff, absl::Seconds(1));
  EXPECT_THAT(s->headers, ::testing::ElementsAre("OpenAI-Organization: org-1"));
}

TEST(ResolveSettingsTest, ErrorsNameTheDeploymentAndTheField) {
  v1::Deployment d = Minimal();
  d.set_provider("sim");
  EXPECT_THAT(ErrorOf(d), HasSubstr("deployment \"local\": provider is \"sim\""));

  d = Minimal();
  d.set_base_url("localhost:8000");
  EXPECT_THAT(ErrorOf(d), HasSubstr("base_url must start with http:// or https://"));

  d = Minimal();
  d.set_api_key_env("A");
  d.set_api_key_file("/b");
  EXPECT_THAT(ErrorOf(d), HasSubstr("set only one of api_key_env and api_key_file"));

  d = Minimal();
  (*d.mutable_headers())["Bad Header"] = "x";
  EXPECT_THAT(ErrorOf(d), HasSubstr("headers[\"Bad Header\"] is not a valid HTTP header"));
  d = Minimal();
  (*d.mutable_headers())["X-Ok"] = "line\r\nInjected: 1";
  EXPECT_THAT(ErrorOf(d), HasSubstr("headers[\"X-Ok\"]"));

  d = Minimal();
  d.mutable_timeouts()->mutable_first_byte()->set_seconds(0);
  EXPECT_THAT(ErrorOf(d), HasSubstr("timeouts.first_byte must be positive"));

  d = Minimal();
  d.mutable_retry()->set_max_retries(21);
  EXPECT_THAT(ErrorOf(d), HasSubstr("retry.max_retries must be between 0 and 20, got 21"));

  d = Minimal();
  d.mutable_retry()->mutable_initial_backoff()->set_seconds(-1);
  EXPECT_THAT(ErrorOf(d), HasSubstr("retry.initial_backoff must be positive"));
}

TEST(ResolveSettingsTest, ReadsTheKeyFromTheEnvironment) {
  setenv("AIJOBS_TEST_SETTINGS_KEY", "sk-env", 1);
  v1::Deployment d = Minimal();
  d.set_api_key_env("AIJOBS_TEST_SETTINGS_KEY");
  absl::StatusOr<OpenAiSettings> s = ResolveSettings(d);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->api_key, "sk-env");
  setenv("AIJOBS_TEST_SETTINGS_KEY", "", 1);
  EXPECT_THAT(ErrorOf(d), HasSubstr("which is not set or empty"));
}

}  // namespace
}  // namespace aijobs::openai
