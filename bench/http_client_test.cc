// Unit tests of the benchmark HTTP client's parsers (no network).
#include "bench/http_client.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace aijobs::bench {
namespace {

TEST(HttpResponseParserTest, ContentLengthBodyByteByByteThenPipelinedResponse) {
  const std::string wire =
      "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: application/json\r\n\r\nhello"
      "HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\nno";
  HttpResponseParser p;
  size_t i = 0;
  while (!p.complete()) ASSERT_TRUE(p.Feed(wire.substr(i++, 1)));
  EXPECT_EQ(p.status(), 200);
  EXPECT_EQ(p.body(), "hello");
  EXPECT_EQ(p.Header("content-type"), "application/json");
  p.NextResponse();
  ASSERT_TRUE(p.Feed(wire.substr(i)));
  ASSERT_TRUE(p.complete());
  EXPECT_EQ(p.status(), 404);
  EXPECT_EQ(p.body(), "no");
}

TEST(HttpResponseParserTest, ChunkedBodyWithExtensionsAndTrailers) {
  HttpResponseParser p;
  ASSERT_TRUE(p.Feed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhel"));
  EXPECT_TRUE(p.head_done());
  EXPECT_FALSE(p.complete());
  EXPECT_EQ(p.body(), "hel");
  ASSERT_TRUE(p.Feed("lo\r\na\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n"));
  ASSERT_TRUE(p.complete());
  EXPECT_EQ(p.body(), "hello0123456789");
}

TEST(HttpResponseParserTest, RejectsGarbage) {
  HttpResponseParser p;
  EXPECT_FALSE(p.Feed("SSH-2.0-OpenSSH\r\n\r\n"));
  EXPECT_FALSE(p.error().empty());
}

TEST(HttpRequestTextTest, PostCarriesContentLength) {
  EXPECT_EQ(HttpRequestText("POST", "/v1/jobs", "h:1", {{"Content-Type", "application/json"}}, "{}"),
            "POST /v1/jobs HTTP/1.1\r\nHost: h:1\r\nContent-Type: application/json\r\n"
            "Content-Length: 2\r\n\r\n{}");
  EXPECT_EQ(HttpRequestText("GET", "/healthz", "h"), "GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n");
}

}  // namespace
}  // namespace aijobs::bench
