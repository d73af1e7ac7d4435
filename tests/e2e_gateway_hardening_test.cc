// The HTTP gateway against hostile requests (issue 10): chunked trailers, deeply nested JSON
// and ambiguous message framing, sent over a real socket to the real aijobs-gateway in front
// of a real scheduler and PostgreSQL.
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <set>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "tests/e2e_cluster.h"
#include "tests/fixtures/http_client.h"

namespace aijobs::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

constexpr char kChatBody[] =
    R"({"type":"chat","input":{"messages":[{"role":"user","content":"hi"}]}})";

// What the gateway sent back on one connection, and whether it closed it.
struct RawReply {
  std::string bytes;
  bool closed = false;
  // Status lines seen: "HTTP/1.x NNN" ("HTTP/1.1 request" in an error message is not one).
  int Responses() const {
    int n = 0;
    for (size_t at = bytes.find("HTTP/1."); at != std::string::npos;
         at = bytes.find("HTTP/1.", at + 1)) {
      if (at + 12 <= bytes.size() && bytes[at + 8] == ' ' && absl::ascii_isdigit(bytes[at + 9]) &&
          absl::ascii_isdigit(bytes[at + 10]) && absl::ascii_isdigit(bytes[at + 11])) {
        ++n;
      }
    }
    return n;
  }
};

// A connection to 127.0.0.1:port (blocking), or -1.
int Connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Sends `raw` on a new connection to 127.0.0.1:port while reading what comes back, until the
// gateway closes the connection, `linger` after the first answer byte (a keep-alive
// connection stays open), or `timeout`. Unlike RawHttpExchange it reads while it sends, so a
// request refused before it was read whole still gets its answer seen, and a send the
// gateway stopped reading ends the sending, not the exchange.
RawReply SendRaw(int port, const std::string& raw, absl::Duration timeout = absl::Seconds(10),
                 absl::Duration linger = absl::Seconds(1)) {
  RawReply reply;
  int fd = Connect(port);
  if (fd < 0) {
    ADD_FAILURE() << "cannot connect to port " << port;
    return reply;
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  size_t sent = 0;
  bool sending = true;
  absl::Time deadline = absl::Now() + timeout;
  char buf[16384];
  while (absl::Now() < deadline) {
    pollfd p{fd, static_cast<short>(POLLIN | (sending && sent < raw.size() ? POLLOUT : 0)), 0};
    int ms = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    if (poll(&p, 1, std::max(ms, 1)) <= 0) break;
    if (p.revents & POLLOUT) {
      ssize_t n = send(fd, raw.data() + sent, raw.size() - sent, MSG_NOSIGNAL);
      if (n > 0) {
        sent += static_cast<size_t>(n);
      } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        sending = false;  // the gateway closed its side; what it answered is still readable
      }
    }
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = recv(fd, buf, sizeof(buf), 0);
      if (n > 0) {
        if (reply.bytes.empty()) deadline = std::min(deadline, absl::Now() + linger);
        reply.bytes.append(buf, static_cast<size_t>(n));
      } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        reply.closed = true;
        break;
      }
    }
  }
  close(fd);
  return reply;
}

// A chunked request: `body` in one chunk, then the last chunk with `trailers` (each
// "Name: value", CRLF added) as its trailer section.
std::string ChunkedRequest(const std::string& target, const std::string& body,
                           const std::string& trailers) {
  std::string raw =
      absl::StrCat("POST ", target,
                   " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                   "Transfer-Encoding: chunked\r\n\r\n");
  if (!body.empty()) absl::StrAppend(&raw, absl::Hex(body.size()), "\r\n", body, "\r\n");
  absl::StrAppend(&raw, "0\r\n", trailers, "\r\n");
  return raw;
}

// The resident set of process `pid` in bytes (0 when unreadable).
int64_t ResidentBytes(pid_t pid) {
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(status, line)) {
    absl::string_view v = line;
    if (absl::ConsumePrefix(&v, "VmRSS:")) {
      int64_t kb = 0;
      if (absl::SimpleAtoi(absl::StripSuffix(absl::StripAsciiWhitespace(v), " kB"), &kb)) {
        return kb * 1024;
      }
    }
  }
  return 0;
}

int CountOf(const std::string& haystack, const std::string& needle) {
  int n = 0;
  for (size_t at = haystack.find(needle); at != std::string::npos;
       at = haystack.find(needle, at + 1)) {
    ++n;
  }
  return n;
}

class GatewayHardeningTest : public E2eTest {
 protected:
  void SetUp() override {
    E2eTest::SetUp();
    ASSERT_NO_FATAL_FAILURE(StartScheduler());
    base_ = StartGateway();
    ASSERT_FALSE(base_.empty());
  }

  RawReply Send(const std::string& raw) { return SendRaw(gateway_port(), raw); }

  // POST /v1/jobs with a JSON `body` and `extra` headers.
  HttpResult PostJob(const std::string& body,
                     std::vector<std::pair<std::string, std::string>> extra = {}) {
    HttpRequestSpec spec;
    spec.method = "POST";
    spec.url = base_ + "/v1/jobs";
    spec.headers = {{"Content-Type", "application/json"}};
    spec.headers.insert(spec.headers.end(), extra.begin(), extra.end());
    spec.body = body;
    return HttpCall(spec);
  }

  // The gateway still runs and serves a fresh connection.
  void ExpectAlive() {
    EXPECT_TRUE(gateway()->IsRunning()) << gateway()->LogTail();
    EXPECT_EQ(HttpCall("GET", base_ + "/healthz").status, 200);
  }

  std::string base_;
};

// --- 1. Trailers ---

TEST_F(GatewayHardeningTest, TrailerFieldOver64KiBIs431AndTheGatewaySurvives) {
  // Beast threw std::length_error ("field value too large") through the io thread.
  RawReply value = Send(ChunkedRequest("/v1/jobs", kChatBody, "X: " + std::string(70000, 'a')));
  EXPECT_THAT(value.bytes, StartsWith("HTTP/1.1 431")) << value.bytes;
  EXPECT_TRUE(value.closed);
  ASSERT_NO_FATAL_FAILURE(ExpectAlive());
  RawReply name = Send(ChunkedRequest("/v1/jobs", kChatBody, std::string(70000, 'n') + ": v"));
  EXPECT_THAT(name.bytes, StartsWith("HTTP/1.1 431")) << name.bytes;
  EXPECT_TRUE(name.closed);
  ExpectAlive();
}

TEST_F(GatewayHardeningTest, TrailersCountAgainstTheHeaderLimit) {
  // 20 KB of small trailer fields: each fine alone, together over the 16 KiB header budget.
  std::string trailers;
  for (int i = 0; trailers.size() < 20000; ++i) {
    absl::StrAppend(&trailers, "X-Pad-", i, ": ", std::string(100, 'p'), "\r\n");
  }
  RawReply over = Send(ChunkedRequest("/v1/jobs", kChatBody, trailers));
  EXPECT_THAT(over.bytes, StartsWith("HTTP/1.1 431")) << over.bytes.substr(0, 300);
  EXPECT_THAT(over.bytes, HasSubstr("limit of 16384 bytes"));
  EXPECT_TRUE(over.closed);

  // 64 MB of trailers used to be buffered whole; now the gateway stops reading.
  const int64_t rss_before = ResidentBytes(gateway()->Pid());
  std::string flood;
  flood.reserve(64 << 20);
  while (flood.size() < (64u << 20))
    absl::StrAppend(&flood, "X-Flood: ", std::string(1000, 'f'), "\r\n");
  RawReply flooded = Send(ChunkedRequest("/v1/jobs", kChatBody, flood));
  EXPECT_THAT(flooded.bytes, StartsWith("HTTP/1.1 431")) << flooded.bytes.substr(0, 300);
  EXPECT_TRUE(flooded.closed);
  const int64_t rss_after = ResidentBytes(gateway()->Pid());
  EXPECT_LT(rss_after - rss_before, 16 << 20) << rss_before << " -> " << rss_after;
  ExpectAlive();
}

TEST_F(GatewayHardeningTest, TrailersNeverActAsHeaders) {
  // Were trailers merged, the request id would be echoed and the malformed Grpc-Timeout
  // would be refused with 400.
  RawReply r = Send(ChunkedRequest("/v1/jobs", kChatBody,
                                   "X-Request-Id: from-trailer\r\nGrpc-Timeout: soon\r\n"));
  EXPECT_THAT(r.bytes, StartsWith("HTTP/1.1 202")) << r.bytes;
  EXPECT_THAT(r.bytes, Not(HasSubstr("from-trailer")));
  EXPECT_THAT(r.bytes, HasSubstr("X-Request-Id: "));
  // The same fields as headers do act (the trailer check above is not vacuous).
  RawReply h = Send(
      "POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
      "X-Request-Id: from-header\r\nContent-Type: application/json\r\nGrpc-Timeout: soon\r\n"
      "Content-Length: " +
      std::to_string(sizeof(kChatBody) - 1) + "\r\n\r\n" + kChatBody);
  EXPECT_THAT(h.bytes, StartsWith("HTTP/1.1 400")) << h.bytes;
  EXPECT_THAT(h.bytes, HasSubstr("from-header"));
}

// --- 9. Errors that say what happened ---

// Regression: a request line or header section over the limits was 400, a 15 KB
// Authorization or many Grpc-Metadata-* headers came back 429 (retried by clients) from the
// scheduler's gRPC metadata limit.
TEST_F(GatewayHardeningTest, OversizedRequestLineIs414AndOversizedHeadersAre431) {
  RawReply line = Send(absl::StrCat("GET /v1/jobs?type=", std::string(9000, 'a'),
                                    " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
  EXPECT_THAT(line.bytes, StartsWith("HTTP/1.1 414")) << line.bytes.substr(0, 300);
  RawReply huge_line =
      Send(absl::StrCat("GET /", std::string(20000, 'a'), " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
  EXPECT_THAT(huge_line.bytes, StartsWith("HTTP/1.1 414")) << huge_line.bytes.substr(0, 300);
  RawReply headers = Send(absl::StrCat(
      "GET /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ", std::string(17000, 'p'), "\r\n\r\n"));
  EXPECT_THAT(headers.bytes, StartsWith("HTTP/1.1 431")) << headers.bytes.substr(0, 300);

  HttpRequestSpec auth;
  auth.method = "GET";
  auth.url = base_ + "/v1/jobs";
  auth.headers = {{"Authorization", "Bearer " + std::string(15000, 'a')}};
  HttpResult a = HttpCall(auth);
  EXPECT_EQ(a.status, 431) << a.body;
  EXPECT_THAT(a.body, HasSubstr("over the limit of 7168"));
  HttpRequestSpec md;
  md.method = "GET";
  md.url = base_ + "/v1/jobs";
  for (int i = 0; i < 120; ++i) {
    md.headers.emplace_back(absl::StrCat("Grpc-Metadata-k", i), std::string(60, 'v'));
  }
  HttpResult m = HttpCall(md);
  EXPECT_EQ(m.status, 431) << m.body;
  ExpectAlive();
}

// Regression: a submit whose deadline passed answered 504 and the job was created anyway,
// unseen by its client. The gateway cannot tell a request that was lost from an answer that
// was, so it gives every submit an idempotency key (unless it has one) and, when the call
// fails that way, asks once more with the same key: the answer is then definite.
TEST_F(GatewayHardeningTest, ASubmitWhoseDeadlinePassesGetsADefiniteAnswer) {
  std::string body = R"({"type":"chat","input":{"messages":[{"role":"user","content":"late"}]}})";
  std::set<std::string> ids;
  for (int i = 0; i < 20; ++i) {
    HttpResult r = PostJob(body, {{"Grpc-Timeout", "1u"}});
    ASSERT_EQ(r.status, 202) << r.body;
    EXPECT_THAT(r.body, HasSubstr("\"idempotencyKey\":\"gw-"));
    size_t at = r.body.find("\"id\":\"");
    ASSERT_NE(at, std::string::npos) << r.body;
    ids.insert(r.body.substr(at + 6, 36));
  }
  EXPECT_EQ(ids.size(), 20u);
  // Every job the gateway answered for exists once, and no other was left behind.
  HttpResult listed = HttpCall("GET", base_ + "/v1/jobs?type=chat&pageSize=100");
  EXPECT_EQ(CountOf(listed.body, "\"late\""), 20) << listed.body;
  for (const std::string& id : ids) EXPECT_THAT(listed.body, HasSubstr(id));

  // The client's own key is used as it is.
  HttpResult k =
      PostJob(R"({"type":"chat","input":{"messages":[{"role":"user","content":"keyed"}]},)"
              R"("idempotencyKey":"deadline-probe-1"})",
              {{"Grpc-Timeout", "1u"}});
  EXPECT_EQ(k.status, 202) << k.body;
  EXPECT_THAT(k.body, HasSubstr("\"idempotencyKey\":\"deadline-probe-1\""));
  HttpResult again = HttpCall("GET", base_ + "/v1/jobs?type=chat&pageSize=100");
  EXPECT_EQ(CountOf(again.body, "\"keyed\""), 1) << again.body;
}

// With the scheduler gone the retry fails too: the answer says the outcome is unknown and
// which key finds it out.
TEST_F(GatewayHardeningTest, ASubmitWithUnknownOutcomeSaysSoAndNamesItsKey) {
  scheduler()->Kill();
  HttpResult r = PostJob(kChatBody, {{"Grpc-Timeout", "300m"}});
  EXPECT_TRUE(r.status == 503 || r.status == 504) << r.status << " " << r.body;
  EXPECT_THAT(r.body, HasSubstr("may have been carried out"));
  EXPECT_THAT(r.Header("Aijobs-Outcome"), "unknown");
  EXPECT_THAT(r.Header("Aijobs-Idempotency-Key"), StartsWith("gw-"));
  EXPECT_THAT(r.body, HasSubstr(r.Header("Aijobs-Idempotency-Key")));
}

// --- 3. Pages that fit ---

// Regression: ListJobs paged by count alone, so five jobs of ~900 KB made one page over the
// gateway's 4 MiB receive limit, and every GET /v1/jobs answered 429 (retried by clients).
TEST_F(GatewayHardeningTest, ListJobsPagesOfLargeJobsFitAndReachEveryJob) {
  const std::string big(900 * 1000, 'x');
  for (int i = 0; i < 5; ++i) {
    HttpResult r =
        PostJob(absl::StrCat(R"({"type":"chat","input":{"messages":[{"role":"user","content":")",
                             big, R"("}]},"labels":{"n":")", i, R"("}})"));
    ASSERT_EQ(r.status, 202) << r.body.substr(0, 300);
  }
  std::string token;
  int pages = 0, jobs = 0;
  do {
    HttpResult page = HttpCall(
        "GET", base_ + "/v1/jobs?pageSize=50" + (token.empty() ? "" : "&pageToken=" + token));
    ASSERT_EQ(page.status, 200) << page.body.substr(0, 300);
    jobs += CountOf(page.body, R"("labels":{"n":")");
    token.clear();
    size_t at = page.body.find(R"("nextPageToken":")");
    if (at != std::string::npos) {
      at += 17;
      token = page.body.substr(at, page.body.find('"', at) - at);
    }
    ASSERT_LT(++pages, 10);
  } while (!token.empty());
  EXPECT_EQ(jobs, 5);
  EXPECT_GE(pages, 3) << "a page of at most ~2 MiB holds two of these jobs";
}

// --- 10. Duplicate keys ---

TEST_F(GatewayHardeningTest, DuplicateJsonKeysAreRefusedNotMerged) {
  HttpResult r = PostJob(R"({"type":"chat","input":{"a":1},"input":{"b":2}})");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_THAT(r.body, HasSubstr("appears twice"));
  HttpResult listed = HttpCall("GET", base_ + "/v1/jobs");
  EXPECT_THAT(listed.body, Not(HasSubstr("\"id\""))) << "a refused submit created a job";
}

// --- 8. Host allow-list (DNS rebinding) ---

// Regression: any Host was served, so a page on a name that resolves to 127.0.0.1 could
// read and drive a gateway on the user's machine.
TEST_F(GatewayHardeningTest, UnlistedHostIs400ButProbesAnswerAnyHost) {
  RawReply evil = Send(
      "GET /v1/jobs HTTP/1.1\r\nHost: rebind.attacker.example:8080\r\nConnection: close\r\n\r\n");
  EXPECT_THAT(evil.bytes, StartsWith("HTTP/1.1 400")) << evil.bytes;
  EXPECT_THAT(evil.bytes, HasSubstr("is not served here"));
  RawReply page =
      Send("GET / HTTP/1.1\r\nHost: rebind.attacker.example\r\nConnection: close\r\n\r\n");
  EXPECT_THAT(page.bytes, StartsWith("HTTP/1.1 400")) << page.bytes.substr(0, 200);
  RawReply local = Send(absl::StrCat("GET /v1/jobs HTTP/1.1\r\nHost: localhost:", gateway_port(),
                                     "\r\nConnection: close\r\n\r\n"));
  EXPECT_THAT(local.bytes, StartsWith("HTTP/1.1 200")) << local.bytes.substr(0, 200);
  RawReply probe =
      Send("GET /healthz HTTP/1.1\r\nHost: 10.1.2.3:8080\r\nConnection: close\r\n\r\n");
  EXPECT_THAT(probe.bytes, StartsWith("HTTP/1.1 200")) << probe.bytes.substr(0, 200);
}

// --- 2. Nesting depth ---

// A valid chat submission whose input also holds `levels` nested arrays.
std::string NestedSubmit(int levels) {
  return absl::StrCat(R"({"type":"chat","input":{"messages":[{"role":"user","content":"hi"}],)",
                      R"("x":)", std::string(levels, '['), std::string(levels, ']'), "}}");
}

TEST_F(GatewayHardeningTest, DeeplyNestedJsonIs400FastAndHealthzAnswersMeanwhile) {
  // 16,000 nested arrays kept protobuf's JSON converter busy for seconds on the io thread.
  HttpResult deep;
  absl::Duration deep_took;
  std::atomic<bool> done{false};
  std::thread submitter([&] {
    absl::Time start = absl::Now();
    deep = HttpCall("POST", base_ + "/v1/jobs", NestedSubmit(16000), {}, absl::Seconds(30));
    deep_took = absl::Now() - start;
    done = true;
  });
  absl::Duration slowest_healthz;
  int healthz_calls = 0;
  while (!done || healthz_calls == 0) {
    absl::Time start = absl::Now();
    HttpResult h = HttpCall("GET", base_ + "/healthz", "", {}, absl::Seconds(30));
    slowest_healthz = std::max(slowest_healthz, absl::Now() - start);
    ++healthz_calls;
    EXPECT_EQ(h.status, 200) << h.error;
  }
  submitter.join();
  EXPECT_EQ(deep.status, 400) << deep.error << deep.body;
  EXPECT_THAT(deep.body, HasSubstr("maximum depth of 32 levels"));
  EXPECT_LT(deep_took, absl::Seconds(1));
  EXPECT_LT(slowest_healthz, absl::Seconds(1));

  // The body object is level 1, input level 2: 30 levels inside input is the maximum.
  HttpResult at_limit = HttpCall("POST", base_ + "/v1/jobs", NestedSubmit(30));
  EXPECT_EQ(at_limit.status, 202) << at_limit.body;
  HttpResult over = HttpCall("POST", base_ + "/v1/jobs", NestedSubmit(31));
  EXPECT_EQ(over.status, 400) << over.body;
  EXPECT_THAT(over.body, HasSubstr("maximum depth of 32 levels"));
}

// --- 5. Framing ---

TEST_F(GatewayHardeningTest, FinalTransferCodingNotChunkedIs400AndItsBodyIsNeverARequest) {
  // The body's bytes were read as a second, pipelined request.
  RawReply gzip = Send(
      "POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: gzip\r\n\r\n"
      "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
  EXPECT_THAT(gzip.bytes, StartsWith("HTTP/1.1 400")) << gzip.bytes;
  EXPECT_THAT(gzip.bytes, HasSubstr("final transfer coding must be chunked"));
  EXPECT_THAT(gzip.bytes, HasSubstr("Connection: close"));
  EXPECT_EQ(gzip.Responses(), 1) << gzip.bytes;
  EXPECT_TRUE(gzip.closed);

  // An unknown final coding with a Content-Length: the Content-Length was used.
  RawReply xchunked = Send(
      absl::StrCat("POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: xchunked\r\n",
                   "Content-Length: ", sizeof(kChatBody) - 1, "\r\n\r\n", kChatBody));
  EXPECT_THAT(xchunked.bytes, StartsWith("HTTP/1.1 400")) << xchunked.bytes;
  EXPECT_EQ(xchunked.Responses(), 1);
  EXPECT_TRUE(xchunked.closed);

  // chunked applied twice: Beast reads no body at all.
  RawReply twice = Send(
      "POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"
      "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
  EXPECT_THAT(twice.bytes, StartsWith("HTTP/1.1 400")) << twice.bytes;
  EXPECT_THAT(twice.bytes, HasSubstr("only once"));
  EXPECT_EQ(twice.Responses(), 1) << twice.bytes;

  // Transfer-Encoding in HTTP/1.0.
  RawReply old = Send(
      absl::StrReplaceAll(ChunkedRequest("/v1/jobs", kChatBody, ""), {{"HTTP/1.1", "HTTP/1.0"}}));
  EXPECT_THAT(old.bytes, StartsWith("HTTP/1.1 400")) << old.bytes;
  EXPECT_TRUE(old.closed);
  ExpectAlive();
}

TEST_F(GatewayHardeningTest, UnimplementedTransferCodingIs501) {
  std::string chunked_body =
      absl::StrCat(absl::Hex(sizeof(kChatBody) - 1), "\r\n", kChatBody, "\r\n0\r\n\r\n");
  RawReply r =
      Send("POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n" +
           chunked_body);
  EXPECT_THAT(r.bytes, StartsWith("HTTP/1.1 501")) << r.bytes;
  EXPECT_THAT(r.bytes, HasSubstr("\\\"gzip\\\" is not implemented"));
  EXPECT_TRUE(r.closed);
  // Plain chunked still works.
  RawReply ok = Send(
      "POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
      "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" +
      chunked_body);
  EXPECT_THAT(ok.bytes, StartsWith("HTTP/1.1 202")) << ok.bytes;
}

TEST_F(GatewayHardeningTest, Http11RequestWithoutExactlyOneHostIs400) {
  RawReply none =
      Send("GET /healthz HTTP/1.1\r\n\r\nGET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
  EXPECT_THAT(none.bytes, StartsWith("HTTP/1.1 400")) << none.bytes;
  EXPECT_THAT(none.bytes, HasSubstr("needs a Host header"));
  EXPECT_EQ(none.Responses(), 1) << none.bytes;
  EXPECT_TRUE(none.closed);
  RawReply two = Send("GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
  EXPECT_THAT(two.bytes, StartsWith("HTTP/1.1 400")) << two.bytes;
  EXPECT_THAT(two.bytes, HasSubstr("exactly one Host"));
  EXPECT_TRUE(two.closed);
  // HTTP/1.0 has no Host requirement.
  RawReply old = Send("GET /healthz HTTP/1.0\r\n\r\n");
  EXPECT_THAT(old.bytes, StartsWith("HTTP/1.0 200")) << old.bytes;
}

// --- 9/10. Decoded path and query values ---

// Regression: invalid UTF-8 in a path variable answered 501 with an empty message, and a
// %00 in a query value silently cut it short (?type=chat%00x filtered on "chat").
TEST_F(GatewayHardeningTest, BadlyEncodedPathAndQueryValuesAre400NamingTheParameter) {
  HttpResult path = HttpCall("GET", base_ + "/v1/jobs/%ff");
  EXPECT_EQ(path.status, 400) << path.body;
  EXPECT_THAT(path.body, HasSubstr("path variable {job_id} must be valid UTF-8"));
  HttpResult nul = HttpCall("GET", base_ + "/v1/jobs?type=chat%00x");
  EXPECT_EQ(nul.status, 400) << nul.body;
  EXPECT_THAT(nul.body, HasSubstr("query parameter \\\"type\\\" must not contain NUL"));
  HttpResult bad = HttpCall("GET", base_ + "/v1/jobs?type=%c3");
  EXPECT_EQ(bad.status, 400) << bad.body;
  EXPECT_THAT(bad.body, HasSubstr("must be valid UTF-8"));
  ExpectAlive();
}

// --- 8. Cross-site requests ---

// Regression: any Content-Type was accepted, so a web page could make a signed-in user's
// browser submit, cancel or retry with a "simple" POST that needs no CORS preflight.
TEST_F(GatewayHardeningTest, CallsThatChangeSomethingMustBeJson) {
  for (const std::string& type :
       {std::string("text/plain"), std::string("application/x-www-form-urlencoded"),
        std::string("multipart/form-data; boundary=x"), std::string("")}) {
    HttpRequestSpec spec;
    spec.method = "POST";
    spec.url = base_ + "/v1/jobs";
    spec.body = kChatBody;
    spec.headers = {{"Content-Type", type}};
    HttpResult r = HttpCall(spec);
    EXPECT_EQ(r.status, 415) << type << ": " << r.body;
    EXPECT_THAT(r.body, HasSubstr("needs Content-Type: application/json")) << type;
  }
  HttpResult listed = HttpCall("GET", base_ + "/v1/jobs");
  EXPECT_THAT(listed.body, ::testing::Not(HasSubstr("\"id\""))) << "a refused submit created a job";
  HttpRequestSpec json;
  json.method = "POST";
  json.url = base_ + "/v1/jobs";
  json.body = kChatBody;
  json.headers = {{"Content-Type", "Application/JSON; charset=utf-8"}};
  EXPECT_EQ(HttpCall(json).status, 202);
  ExpectAlive();
}

// --- Issue 12: the public front door, per client address ---

// Whether the peer closed `fd` within `timeout` (reading and dropping what it sends).
bool ClosedWithin(int fd, absl::Duration timeout, std::string* got = nullptr) {
  absl::Time deadline = absl::Now() + timeout;
  char buf[4096];
  while (absl::Now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    int ms = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    if (poll(&p, 1, std::max(ms, 1)) <= 0) continue;
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) return true;
    if (got != nullptr) got->append(buf, static_cast<size_t>(n));
  }
  return false;
}

// Slowloris: a client that trickles its header lines to hold the connection is closed once
// --header_timeout_ms passed since its first byte, while other clients are served.
TEST_F(GatewayHardeningTest, ClientTricklingHeadersIsClosedAfterTheHeaderTimeout) {
  base_ = StartGateway({"--header_timeout_ms", "1000"});
  ASSERT_FALSE(base_.empty());
  int fd = Connect(gateway_port());
  ASSERT_GE(fd, 0);
  const absl::Time start = absl::Now();
  const std::string header = "GET /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
  ASSERT_EQ(send(fd, header.data(), header.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(header.size()));
  bool closed = false;
  for (int i = 0; i < 20 && !closed; ++i) {
    closed = ClosedWithin(fd, absl::Milliseconds(250));
    if (!closed) (void)send(fd, "a", 1, MSG_NOSIGNAL);
    EXPECT_EQ(HttpCall("GET", base_ + "/healthz").status, 200);
  }
  EXPECT_TRUE(closed) << "a trickling client kept its connection for 5 s";
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
  close(fd);
  // An idle keep-alive connection (no byte of a next request yet) is not held to it.
  int idle = Connect(gateway_port());
  ASSERT_GE(idle, 0);
  EXPECT_FALSE(ClosedWithin(idle, absl::Milliseconds(1500)));
  close(idle);
}

TEST_F(GatewayHardeningTest, OneAddressCannotTakeEveryConnection) {
  base_ = StartGateway({"--max_connections_per_ip", "3"});
  ASSERT_FALSE(base_.empty());
  ASSERT_TRUE(
      WaitFor([&] { return HttpCall("GET", base_ + "/healthz").status == 200; }, absl::Seconds(5)));
  std::vector<int> held;
  for (int i = 0; i < 3; ++i) held.push_back(Connect(gateway_port()));
  absl::SleepFor(absl::Milliseconds(200));  // accepted
  int fourth = Connect(gateway_port());
  ASSERT_GE(fourth, 0);
  std::string got;
  EXPECT_TRUE(ClosedWithin(fourth, absl::Seconds(5), &got));
  EXPECT_TRUE(absl::StartsWith(got, "HTTP/1.1 429")) << got;
  EXPECT_TRUE(absl::StrContains(got, "Retry-After: 1")) << got;
  close(fourth);
  close(held.back());
  held.pop_back();
  EXPECT_TRUE(
      WaitFor([&] { return HttpCall("GET", base_ + "/healthz").status == 200; }, absl::Seconds(5)))
      << "a freed slot is usable again";
  for (int fd : held) close(fd);
}

TEST_F(GatewayHardeningTest, OpenEventStreamsAreCappedPerAddress) {
  base_ = StartGateway({"--max_streams_per_ip", "2"});
  ASSERT_FALSE(base_.empty());
  // Jobs nobody runs (no worker): their streams stay open.
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    HttpResult r =
        PostJob(R"({"type":"chat","input":{"messages":[{"role":"user","content":"x"}]}})");
    ASSERT_EQ(r.status, 202) << r.body;
    ids.push_back(r.Header("Location"));
  }
  auto open_stream = [&](const std::string& location) {
    int fd = Connect(gateway_port());
    std::string req = absl::StrCat("GET ", location,
                                   "/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: "
                                   "text/event-stream\r\n\r\n");
    (void)send(fd, req.data(), req.size(), MSG_NOSIGNAL);
    return fd;
  };
  int a = open_stream(ids[0]), b = open_stream(ids[1]);
  std::string got_a;
  EXPECT_FALSE(ClosedWithin(a, absl::Milliseconds(500), &got_a));
  EXPECT_TRUE(absl::StartsWith(got_a, "HTTP/1.1 200")) << got_a;
  int c = open_stream(ids[2]);
  std::string got_c;
  ClosedWithin(c, absl::Seconds(3), &got_c);
  EXPECT_TRUE(absl::StartsWith(got_c, "HTTP/1.1 429")) << got_c;
  EXPECT_TRUE(absl::StrContains(got_c, "too many open event streams")) << got_c;
  close(c);
  close(a);
  int d = -1;
  EXPECT_TRUE(WaitFor(
      [&] {
        if (d >= 0) close(d);
        d = open_stream(ids[2]);
        std::string got;
        ClosedWithin(d, absl::Milliseconds(300), &got);
        return absl::StartsWith(got, "HTTP/1.1 200");
      },
      absl::Seconds(5), absl::Milliseconds(100)))
      << "a closed stream frees its slot";
  close(b);
  if (d >= 0) close(d);
}

TEST_F(GatewayHardeningTest, AnonymousRequestsAreRateLimitedPerClientAddress) {
  base_ = StartGateway({"--anonymous_requests_per_minute", "6", "--anonymous_burst", "2",
                        "--trusted_proxies", "127.0.0.1"});
  ASSERT_FALSE(base_.empty());
  const std::string body =
      R"({"type":"chat","input":{"messages":[{"role":"user","content":"x"}]}})";
  auto from = [&](const std::string& client) {
    return PostJob(body, {{"X-Forwarded-For", client}});
  };
  EXPECT_EQ(from("198.51.100.1").status, 202);
  EXPECT_EQ(from("198.51.100.1").status, 202);
  HttpResult third = from("198.51.100.1");
  EXPECT_EQ(third.status, 429) << third.body;
  EXPECT_EQ(third.Header("Retry-After"), "10");
  EXPECT_TRUE(absl::StrContains(third.body, "without a credential")) << third.body;
  // Another client behind the same proxy has its own allowance; a credential is not limited
  // here (the scheduler's quotas apply to it); reads are never limited.
  EXPECT_EQ(from("198.51.100.2").status, 202);
  EXPECT_EQ(
      PostJob(body, {{"X-Forwarded-For", "198.51.100.1"}, {"Authorization", "Bearer some-token"}})
          .status,
      202);
  EXPECT_EQ(HttpCall("GET", base_ + "/v1/jobs", "", {{"X-Forwarded-For", "198.51.100.1"}}).status,
            200);
  // Without --trusted_proxies the header is the client's own word: ignored.
  base_ = StartGateway({"--anonymous_requests_per_minute", "6", "--anonymous_burst", "2"});
  ASSERT_FALSE(base_.empty());
  EXPECT_EQ(from("203.0.113.1").status, 202);
  EXPECT_EQ(from("203.0.113.2").status, 202);
  EXPECT_EQ(from("203.0.113.3").status, 429) << "X-Forwarded-For from an untrusted peer counted";
}

TEST_F(GatewayHardeningTest, MetricsCanBeRestrictedToMonitoringAddresses) {
  base_ = StartGateway({"--metrics_allowed", "10.0.0.0/8"});
  ASSERT_FALSE(base_.empty());
  HttpResult refused = HttpCall("GET", base_ + "/metrics");
  EXPECT_EQ(refused.status, 403) << refused.body;
  EXPECT_TRUE(absl::StrContains(refused.body, "--metrics_allowed")) << refused.body;
  base_ = StartGateway({"--metrics_allowed", "127.0.0.1"});
  ASSERT_FALSE(base_.empty());
  EXPECT_EQ(HttpCall("GET", base_ + "/metrics").status, 200);
}

}  // namespace
}  // namespace aijobs::testing
