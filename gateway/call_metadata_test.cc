#include "gateway/call_metadata.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace aijobs::gateway {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::Pair;

std::string FixedId() { return "generated-id"; }

TEST(ParseGrpcTimeoutTest, ParsesEveryUnit) {
  EXPECT_EQ(*ParseGrpcTimeout("2H"), absl::Hours(2));
  EXPECT_EQ(*ParseGrpcTimeout("3M"), absl::Minutes(3));
  EXPECT_EQ(*ParseGrpcTimeout("5S"), absl::Seconds(5));
  EXPECT_EQ(*ParseGrpcTimeout("100m"), absl::Milliseconds(100));
  EXPECT_EQ(*ParseGrpcTimeout("7u"), absl::Microseconds(7));
  EXPECT_EQ(*ParseGrpcTimeout("99999999n"), absl::Nanoseconds(99999999));
}

TEST(ParseGrpcTimeoutTest, RejectsMalformedValues) {
  for (const char* bad : {"", "S", "5", "5s", "-5S", "+5S", "123456789S", "1.5S", "abcS"}) {
    absl::StatusOr<absl::Duration> t = ParseGrpcTimeout(bad);
    EXPECT_FALSE(t.ok()) << bad;
    if (!t.ok()) {
      EXPECT_THAT(std::string(t.status().message()), HasSubstr("Grpc-Timeout"));
    }
  }
}

TEST(MetadataFromHeadersTest, ForwardsSelectedHeadersAndGrpcMetadata) {
  HeaderList headers = {{"Authorization", "Bearer t"},
                        {"Traceparent", "00-abc-def-01"},
                        {"Grpc-Metadata-Tenant-Hint", "blue"},
                        {"Cookie", "secret"},
                        {"Content-Type", "application/json"}};
  absl::StatusOr<CallMetadata> md = MetadataFromHeaders(headers, FixedId);
  ASSERT_TRUE(md.ok()) << md.status();
  EXPECT_THAT(md->entries, Contains(Pair("authorization", "Bearer t")));
  EXPECT_THAT(md->entries, Contains(Pair("traceparent", "00-abc-def-01")));
  EXPECT_THAT(md->entries, Contains(Pair("tenant-hint", "blue")));
  EXPECT_THAT(md->entries, Not(Contains(Pair("cookie", "secret"))));
  EXPECT_THAT(md->entries, Contains(Pair("x-request-id", "generated-id")));
  EXPECT_EQ(md->request_id, "generated-id");
  EXPECT_FALSE(md->timeout.has_value());
}

TEST(MetadataFromHeadersTest, KeepsAGivenRequestIdAndReadsTheTimeout) {
  absl::StatusOr<CallMetadata> md =
      MetadataFromHeaders({{"x-request-id", "req-1"}, {"grpc-timeout", "250m"}}, FixedId);
  ASSERT_TRUE(md.ok()) << md.status();
  EXPECT_EQ(md->request_id, "req-1");
  EXPECT_THAT(md->entries, Contains(Pair("x-request-id", "req-1")));
  EXPECT_EQ(md->timeout, absl::Milliseconds(250));
}

TEST(MetadataFromHeadersTest, RejectsKeysGrpcWouldRefuse) {
  for (const char* name : {"Grpc-Metadata-grpc-status", "Grpc-Metadata-a b", "Grpc-Metadata-x-bin",
                           "Grpc-Metadata-"}) {
    absl::StatusOr<CallMetadata> md = MetadataFromHeaders({{name, "v"}}, FixedId);
    ASSERT_FALSE(md.ok()) << name;
    EXPECT_THAT(std::string(md.status().message()), HasSubstr(name));
  }
  EXPECT_FALSE(MetadataFromHeaders({{"Grpc-Timeout", "soon"}}, FixedId).ok());
}

TEST(MetadataFromHeadersTest, ZeroTimeoutIsRefused) {
  absl::StatusOr<CallMetadata> md = MetadataFromHeaders({{"Grpc-Timeout", "0S"}}, FixedId);
  ASSERT_EQ(md.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(md.status().message()), HasSubstr("zero timeout"));
}

TEST(MetadataFromHeadersTest, ForwardedHeadersOverTheMetadataBudgetAreResourceExhausted) {
  // A 15 KB Authorization would be refused by the scheduler's gRPC server as
  // RESOURCE_EXHAUSTED (read as 429, retried); the gateway refuses it as the request's own.
  absl::StatusOr<CallMetadata> md = MetadataFromHeaders(
      {{"Authorization", "Bearer " + std::string(15000, 'a')}}, FixedId);
  ASSERT_EQ(md.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(md.status().message()), HasSubstr("over the limit"));
  // Many small Grpc-Metadata-* headers add up the same way.
  HeaderList many;
  for (int i = 0; i < 100; ++i) {
    many.emplace_back("Grpc-Metadata-k" + std::to_string(i), std::string(60, 'v'));
  }
  EXPECT_EQ(MetadataFromHeaders(many, FixedId).status().code(),
            absl::StatusCode::kResourceExhausted);
  // Within the budget: a 4 KB token is fine.
  EXPECT_TRUE(
      MetadataFromHeaders({{"Authorization", "Bearer " + std::string(4000, 'a')}}, FixedId).ok());
}

TEST(ShapeFromResponseMetadataTest, HttpCodeAndHeaderKeysSteerTheResponse) {
  std::multimap<std::string, std::string> initial = {{"x-http-code", "202"},
                                                     {"x-http-header-retry-after", "5"},
                                                     {"x-http-header-location", "/v1/jobs/1"},
                                                     {"replica", "r1"},
                                                     {"trace-bin", "\x01"}};
  std::multimap<std::string, std::string> trailing = {{"grpc-status", "0"}, {"cost", "3"}};
  HttpResponseShape shape = ShapeFromResponseMetadata(initial, trailing);
  EXPECT_EQ(shape.http_status, 202);
  EXPECT_THAT(shape.headers, Contains(Pair("Location", "/v1/jobs/1")));
  EXPECT_THAT(shape.headers, Contains(Pair("Grpc-Metadata-replica", "r1")));
  EXPECT_THAT(shape.headers, Contains(Pair("Grpc-Metadata-cost", "3")));
  EXPECT_THAT(shape.headers, Contains(Pair("Retry-After", "5")));
  EXPECT_EQ(shape.headers.size(), 4u);
}

TEST(ShapeFromResponseMetadataTest, IgnoresAnInvalidHttpCode) {
  EXPECT_FALSE(ShapeFromResponseMetadata({{"x-http-code", "abc"}}, {}).http_status.has_value());
  EXPECT_FALSE(ShapeFromResponseMetadata({{"x-http-code", "99"}}, {}).http_status.has_value());
}

}  // namespace
}  // namespace aijobs::gateway

namespace aijobs::gateway {
namespace {

TEST(RequestIdFromHeaderTest, KeepsPrintableIdsAndRefusesOthers) {
  EXPECT_EQ(*RequestIdFromHeader("req-42"), "req-42");
  EXPECT_EQ(*RequestIdFromHeader(""), "");
  EXPECT_FALSE(RequestIdFromHeader("a\nb").ok());
  EXPECT_FALSE(RequestIdFromHeader(std::string(257, 'x')).ok());
}

}  // namespace
}  // namespace aijobs::gateway
