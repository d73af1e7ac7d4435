// An asynchronous HTTP/1.1 server on Boost.Beast/Asio: a few io threads serve many thousands
// of keep-alive (and pipelined) connections, never a thread per connection. Each request is
// handed to a RequestHandler as an HttpExchange, answered once with Respond(), or streamed
// with StartStream()/Write()/EndStream() (chunked transfer encoding, one write in flight,
// heartbeats while idle, and a callback when the client goes away). Requests are framed
// strictly (RFC 9112: Transfer-Encoding only "chunked", exactly one Host in HTTP/1.1) and
// trailer fields are dropped, never merged into the request's headers.
//
//   class Hello : public RequestHandler { void Handle(std::shared_ptr<HttpExchange> x) override {
//     x->Respond(MakeResponse(*x, 200, "text/plain", "hi")); } };
//   auto server = HttpServer::Start({.host = "127.0.0.1", .port = 0}, &hello);
#pragma once

#include <boost/beast/http.hpp>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace aijobs::gateway {

namespace http = boost::beast::http;
using HttpRequest = http::request<http::string_body>;
using HttpResponse = http::response<http::string_body>;
using HttpStreamHeader = http::response<http::empty_body>;

class Session;

// One request on a connection and the way to answer it. Every method is thread-safe and
// returns at once without blocking: the bytes of a response or chunk are sent on the calling
// thread when the socket takes them at once (no hand-off to an io thread), the rest by the
// connection's strand.
class HttpExchange {
 public:
  HttpExchange(std::shared_ptr<Session> session, HttpRequest request);

  const HttpRequest& request() const { return request_; }
  // The address of the connection's peer ("127.0.0.1", "::1").
  const std::string& peer_ip() const;
  HttpRequest& mutable_request() { return request_; }
  // When the request's last byte was read.
  absl::Time received_at() const { return received_at_; }

  // Sends a complete response (Content-Length set here); a keep-alive connection then serves
  // its next request. Call exactly once, and not after StartStream().
  void Respond(HttpResponse response);

  // Starts a streamed response: `header` goes out with chunked encoding and
  // `Connection: close` (the connection ends with the stream). While no chunk was written
  // for `heartbeat_every`, `heartbeat` is written (non-positive: no heartbeats).
  void StartStream(HttpStreamHeader header, absl::Duration heartbeat_every = absl::ZeroDuration(),
                   std::string heartbeat = "");
  // Sends (or queues) one chunk; `done(ok)` (optional) runs once it was written or the
  // connection failed: on the calling thread, before Write returns, when the socket took it
  // at once (so hold no lock `done` needs), else later on an io thread. Chunks queued while
  // a write is in flight go out together in one write. Empty chunks are skipped (an empty
  // chunk would end the stream).
  void Write(std::string chunk, std::function<void(bool ok)> done = nullptr);
  // Writes the last chunk after everything queued, then closes the connection.
  void EndStream();
  // Runs once, on an io thread, when the client closes the connection (or a write fails)
  // while a streamed response is open. Set it before StartStream().
  void OnClientGone(std::function<void()> fn);

 private:
  std::shared_ptr<Session> session_;
  HttpRequest request_;
  absl::Time received_at_;
};

class RequestHandler {
 public:
  virtual ~RequestHandler() = default;
  // Called on an io thread for every complete request; must not block.
  virtual void Handle(std::shared_ptr<HttpExchange> exchange) = 0;
  // Called instead of Handle when a request cannot be read: 400 (malformed, header section
  // plus trailers over 16 KiB, ambiguous framing: a final transfer coding other than chunked,
  // not exactly one Host in HTTP/1.1), 413 (body over the limit) or 501 (a transfer coding
  // other than chunked). The connection closes after the response.
  virtual HttpResponse RejectUnreadable(int http_status, absl::string_view reason) = 0;
};

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 0;  // 0: any free port.
  int threads = 2;
  uint64_t max_body_bytes = 1 << 20;
  // A keep-alive connection idle this long between requests is closed.
  absl::Duration idle_timeout = absl::Seconds(60);
  // Once a request's first byte arrived, its header section must be complete within this
  // (a client trickling headers to hold a connection — slowloris — is closed).
  absl::Duration header_timeout = absl::Seconds(10);
  // Connections one client address may hold at once; more are answered 429 and closed
  // (0: unlimited).
  int max_connections_per_ip = 256;
};

class HttpServer {
 public:
  // Binds, listens and starts the io threads. UNAVAILABLE when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const HttpServerOptions& options,
                                                           RequestHandler* handler);
  ~HttpServer();  // Shutdown().

  int port() const;
  // Stops accepting, closes every connection and joins the io threads. Idempotent.
  void Shutdown();

 private:
  struct Impl;
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// A response with the request's HTTP version and keep-alive, the given status, Content-Type
// and body.
HttpResponse MakeResponse(const HttpRequest& request, int status, absl::string_view content_type,
                          std::string body);

}  // namespace aijobs::gateway
