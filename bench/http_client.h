// A lean HTTP/1.1 client for the gateway benchmarks and aijobs-load: an incremental response
// parser (Content-Length and chunked bodies, pipelining-safe), a blocking keep-alive
// connection over a plain socket (TCP_NODELAY, no per-request allocation beyond the body).
// Event streams are split with common/sse_parser.h. No libcurl: the client's CPU competes with the
// gateway on the same cores, so it does as little as possible.
//
//   auto conn = aijobs::bench::HttpConnection::Connect("127.0.0.1", port, absl::Seconds(5));
//   auto r = (*conn)->RoundTrip(HttpRequestText("GET", "/healthz", "127.0.0.1"), absl::Seconds(5));
//   if (r.ok() && r->status == 200) use(r->body);
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace aijobs::bench {

// One request as bytes on the wire (HTTP/1.1, keep-alive unless a "Connection" header says
// otherwise; Content-Length set when `body` is not empty or the method is POST).
std::string HttpRequestText(absl::string_view method, absl::string_view target,
                            absl::string_view host,
                            const std::vector<std::pair<std::string, std::string>>& headers = {},
                            absl::string_view body = "");

// Incremental parser of HTTP/1.1 responses on one connection. Feed() bytes as they arrive;
// body bytes (de-chunked) collect in body() until taken. After complete(), NextResponse()
// starts the next response with the bytes already buffered (pipelining).
class HttpResponseParser {
 public:
  // False on a protocol error (error() says why).
  bool Feed(absl::string_view bytes);
  bool head_done() const { return state_ > kHead; }
  bool complete() const { return state_ == kDone; }
  // The body has no length: it ends when the peer closes.
  bool until_close() const { return state_ == kUntilClose; }
  int status() const { return status_; }
  // First value of header `name` (case-insensitive), or "".
  std::string Header(absl::string_view name) const;
  std::string& body() { return body_; }
  const std::string& error() const { return error_; }
  void NextResponse();

 private:
  enum State { kHead, kBody, kChunkSize, kChunkData, kChunkCrlf, kTrailers, kUntilClose, kDone };
  bool Step();  // one state transition; false when more bytes are needed or on error
  State state_ = kHead;
  std::string buf_;
  size_t pos_ = 0;
  int status_ = 0;
  std::string head_;
  std::string body_;
  uint64_t remaining_ = 0;
  std::string error_;
};

struct HttpResponse {
  int status = 0;
  std::string body;
  std::string location;      // the Location header, if any
  std::string content_type;  // the Content-Type header, if any
};

// One blocking TCP connection to an HTTP server. Not thread-safe: one user at a time.
class HttpConnection {
 public:
  static absl::StatusOr<std::unique_ptr<HttpConnection>> Connect(const std::string& host,
                                                                 int port, absl::Duration timeout);
  ~HttpConnection();
  HttpConnection(const HttpConnection&) = delete;
  HttpConnection& operator=(const HttpConnection&) = delete;

  // Sends `request` (HttpRequestText) and reads one complete response. After an error the
  // connection is closed and every later call fails: reconnect.
  absl::StatusOr<HttpResponse> RoundTrip(absl::string_view request, absl::Duration timeout);

  // Sends `request` and streams the response: `on_head(status)` once the head arrived, then
  // `on_body(piece)` for every piece of body as it arrives, until the response ends (OK),
  // a callback returns false (OK, connection closed, as a browser tab closing), or
  // `deadline` (DEADLINE_EXCEEDED, connection closed).
  absl::Status Stream(absl::string_view request, const std::function<bool(int status)>& on_head,
                      const std::function<bool(absl::string_view piece)>& on_body,
                      absl::Time deadline);

  bool open() const { return fd_ >= 0; }
  int fd() const { return fd_; }

 private:
  explicit HttpConnection(int fd) : fd_(fd) {}
  absl::Status SendAll(absl::string_view data, absl::Time deadline);
  // Reads what is available (waiting until `deadline`) into the parser.
  absl::Status ReadSome(absl::Time deadline);
  void Close();

  int fd_ = -1;
  HttpResponseParser parser_;
  bool peer_closed_ = false;
};

}  // namespace aijobs::bench
