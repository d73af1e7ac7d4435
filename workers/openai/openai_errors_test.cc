#include "workers/openai/openai_errors.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace aijobs::openai {
namespace {

using ::testing::HasSubstr;
using worker::ProviderError;

struct StatusCase {
  long status;
  const char* code;
  bool retryable;
  bool in_call_retry;
};

TEST(ErrorFromStatusTest, MapsEachStatusClass) {
  const StatusCase cases[] = {
      {429, kRateLimited, true, true},         {408, kTimeout, true, true},
      {502, kProviderUnavailable, true, true}, {503, kProviderUnavailable, true, true},
      {504, kProviderUnavailable, true, true}, {500, kProviderError, true, true},
      {529, kProviderError, true, true},       {409, kProviderError, true, true},
      {400, kProviderRejected, false, false},  {401, kProviderRejected, false, false},
      {403, kProviderRejected, false, false},  {404, kProviderRejected, false, false},
      {422, kProviderRejected, false, false},
  };
  for (const StatusCase& c : cases) {
    bool in_call_retry = !c.in_call_retry;
    ProviderError e = ErrorFromStatus(c.status, "", "gpt", &in_call_retry);
    EXPECT_EQ(e.code, c.code) << c.status;
    EXPECT_EQ(e.retryable, c.retryable) << c.status;
    EXPECT_EQ(in_call_retry, c.in_call_retry) << c.status;
    EXPECT_EQ(e.message, absl::StrCat("deployment gpt: HTTP ", c.status));
  }
}

TEST(ErrorFromStatusTest, MessageCarriesTheProvidersOwnMessage) {
  bool in_call_retry = true;
  ProviderError e = ErrorFromStatus(
      400, R"({"error": {"message": "max_tokens is too large", "code": "bad_max", "x": 1}})", "gpt",
      &in_call_retry);
  EXPECT_EQ(e.message, "deployment gpt: HTTP 400: max_tokens is too large (bad_max)");
  // A body that is not an OpenAI error: its start is kept.
  e = ErrorFromStatus(502, std::string(1000, 'x'), "gpt", &in_call_retry);
  EXPECT_EQ(e.message, "deployment gpt: HTTP 502: " + std::string(300, 'x'));
}

TEST(ErrorFromChunkTest, RateLimitAndInvalidRequestAreRecognised) {
  ErrorBody body;
  body.set_type("rate_limit_exceeded");
  body.set_message("slow down");
  ProviderError e = ErrorFromChunk(body, "gpt");
  EXPECT_EQ(e.code, kRateLimited);
  EXPECT_TRUE(e.retryable);
  EXPECT_EQ(e.message, "deployment gpt: error in stream (rate_limit_exceeded): slow down");

  body.Clear();
  body.mutable_code()->set_string_value("rate_limit");  // only the code says so
  EXPECT_EQ(ErrorFromChunk(body, "gpt").code, kRateLimited);

  body.Clear();
  body.set_type("invalid_request_error");
  e = ErrorFromChunk(body, "gpt");
  EXPECT_EQ(e.code, kProviderRejected);
  EXPECT_FALSE(e.retryable);

  body.Clear();
  body.set_type("server_error");
  body.mutable_code()->set_number_value(500);
  e = ErrorFromChunk(body, "gpt");
  EXPECT_EQ(e.code, kProviderError);
  EXPECT_TRUE(e.retryable);
}

TEST(ErrorFromCurlTest, MapsTransportFailures) {
  TransferResult r;
  r.error = "boom";
  r.code = CURLE_OPERATION_TIMEDOUT;
  EXPECT_EQ(ErrorFromCurl(r, "gpt").code, kTimeout);
  r.code = CURLE_COULDNT_CONNECT;
  ProviderError e = ErrorFromCurl(r, "gpt");
  EXPECT_EQ(e.code, kProviderUnavailable);
  EXPECT_TRUE(e.retryable);
  EXPECT_EQ(e.message, "deployment gpt: boom");
  r.code = CURLE_URL_MALFORMAT;
  e = ErrorFromCurl(r, "gpt");
  EXPECT_EQ(e.code, kProviderError);
  EXPECT_FALSE(e.retryable);
  r.code = CURLE_RECV_ERROR;
  e = ErrorFromCurl(r, "gpt");
  EXPECT_EQ(e.code, kProviderError);
  EXPECT_THAT(e.message, HasSubstr("(response cut)"));
}

TEST(RateLimitHeaderTest, RecordsTheSixKnownHeaders) {
  worker::RateLimitHeaders h;
  EXPECT_TRUE(ParseRateLimitHeader("x-ratelimit-limit-requests", "100", &h));
  EXPECT_TRUE(ParseRateLimitHeader("x-ratelimit-limit-tokens", "5000", &h));
  EXPECT_TRUE(ParseRateLimitHeader("x-ratelimit-remaining-requests", "7", &h));
  EXPECT_TRUE(ParseRateLimitHeader("x-ratelimit-remaining-tokens", "4000.5", &h));
  EXPECT_TRUE(ParseRateLimitHeader("x-ratelimit-reset-requests", "1s", &h));
  EXPECT_TRUE(ParseRateLimitHeader("x-ratelimit-reset-tokens", "6m0s", &h));
  EXPECT_EQ(h.limit_requests, 100);
  EXPECT_EQ(h.limit_tokens, 5000);
  EXPECT_EQ(h.remaining_requests, 7);
  EXPECT_EQ(h.remaining_tokens, 4000.5);
  EXPECT_EQ(h.reset_requests, absl::Seconds(1));
  EXPECT_EQ(h.reset_tokens, absl::Minutes(6));

  EXPECT_FALSE(ParseRateLimitHeader("x-ratelimit-limit-requests", "many", &h));
  EXPECT_EQ(h.limit_requests, 100);  // unchanged
  EXPECT_FALSE(ParseRateLimitHeader("x-ratelimit-other", "1", &h));
  EXPECT_FALSE(ParseRateLimitHeader("retry-after", "1", &h));
  EXPECT_TRUE(ParseRateLimitHeader("x-ratelimit-reset-tokens", "soon", &h));
  EXPECT_FALSE(h.reset_tokens.has_value());
}

TEST(RetryDelayTest, HonoursAShortHintElseBacksOffWithJitter) {
  OpenAiSettings s;
  s.initial_backoff = absl::Milliseconds(500);
  s.max_backoff = absl::Seconds(8);
  EXPECT_EQ(RetryDelay(absl::Seconds(3), s, 0, 0.5), absl::Seconds(3));
  EXPECT_EQ(RetryDelay(kMaxHonouredHint, s, 0, 0.5), kMaxHonouredHint);
  // A hint over the limit is ignored for the in-call wait.
  EXPECT_EQ(RetryDelay(absl::Seconds(61), s, 0, 0), absl::Milliseconds(500));
  EXPECT_EQ(RetryDelay(std::nullopt, s, 0, 0), absl::Milliseconds(500));
  EXPECT_EQ(RetryDelay(std::nullopt, s, 1, 0), absl::Seconds(1));
  EXPECT_EQ(RetryDelay(std::nullopt, s, 3, 0), absl::Seconds(4));
  EXPECT_EQ(RetryDelay(std::nullopt, s, 4, 0), absl::Seconds(8));
  EXPECT_EQ(RetryDelay(std::nullopt, s, 10, 0), absl::Seconds(8));  // capped
  // Jitter takes off up to a quarter.
  EXPECT_EQ(RetryDelay(std::nullopt, s, 1, 1.0), absl::Milliseconds(750));
  EXPECT_EQ(RetryDelay(std::nullopt, s, 1, 0.5), absl::Milliseconds(875));
}

}  // namespace
}  // namespace aijobs::openai
