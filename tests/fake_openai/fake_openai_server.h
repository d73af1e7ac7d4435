// A fake OpenAI-compatible server for tests and benchmarks: real HTTP/1.1 (Boost.Beast on
// one io thread), real SSE wire format, with faults chosen per request.
//
//   FakeOpenAiServer server;                       // binds 127.0.0.1, port 0
//   ASSERT_TRUE(server.Start().ok());              // base_url(): http://127.0.0.1:P/v1
//   server.Enqueue(*ParseBehavior("status=429 retry_after=1"));  // then the default: success
//
// Endpoints: POST {base}/chat/completions (stream true: `data: {chunk}\n\n` ... `data:
// [DONE]\n\n`, a usage chunk last when stream_options.include_usage; stream false: one JSON
// completion) and POST {base}/embeddings (data listed in REVERSE index order, as a server
// may, so clients must sort by index). Every request is recorded (see requests()).
//
// Which behaviour a request gets, first match wins:
//  1. the `X-Fake-Behavior` request header, or a directive at the start of the last user
//     message (chat) / the first input (embeddings): `[fake key=value key=value] rest`;
//  2. the next behaviour queued with Enqueue() (consumed in order);
//  3. the default behaviour (constructor / SetDefault()).
// Directive keys (separated by spaces, ';' or ','; see ParseBehavior):
//   tokens=N          stream N tokens "tok0", " tok1", ... (default 5)
//   rate=R            R tokens per second (0, the default: all at once)
//   ttft_ms=N         wait N ms before the first token
//   status=C          answer HTTP C with an OpenAI error body instead (error_type=T,
//                     error_message=M override its fields; M cannot contain separators)
//   retry_after=S     Retry-After: S (seconds) header      retry_after_ms=N  retry-after-ms
//   should_retry=B    x-should-retry: true|false
//   cut_after=K       close the connection after K tokens (no [DONE], no final chunk)
//   malformed_after=K send a chunk that is not JSON after K tokens
//   error_after=K     send {"error": {...}} (type error_type, default server_error) after K
//                     tokens and end the stream
//   stall_after=K     after K tokens send nothing more and keep the connection open
//   dims=N            embedding size (default 8)
//   x-...=V           any header starting with "x-" is added to the response (e.g.
//                     x-ratelimit-remaining-requests=10)
//   times=N           only the first N requests carrying this exact directive get it; later
//                     ones get the default behaviour (e.g. "status=503 times=2")
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace aijobs::fake_openai {

struct Behavior {
  int tokens = 5;
  double tokens_per_s = 0;
  int ttft_ms = 0;
  int status = 200;
  std::string error_type;
  std::string error_message;
  std::optional<double> retry_after_s;
  std::optional<double> retry_after_ms;
  std::optional<bool> should_retry;
  int cut_after = -1;
  int malformed_after = -1;
  int error_after = -1;
  int stall_after = -1;
  int dims = 8;
  std::vector<std::pair<std::string, std::string>> headers;  // Extra response headers.
  int times = 0;                                             // Directive only: 0 = every request.
};

// Parses a directive ("tokens=20 rate=50", "status=429;retry_after=1"). INVALID_ARGUMENT
// names the bad key.
absl::StatusOr<Behavior> ParseBehavior(absl::string_view directive);

// Returns the i-th streamed token (0-based): "tok0", " tok1", " tok2", ...
std::string FakeToken(int i);

struct RecordedRequest {
  std::string method;
  std::string target;
  std::vector<std::pair<std::string, std::string>> headers;  // Names lower-cased.
  std::string body;
  absl::Time arrival;  // When the whole request had been read.
  // Returns the first header with this (lower-case) name, or "".
  std::string Header(absl::string_view name) const;
};

class FakeOpenAiServer {
 public:
  explicit FakeOpenAiServer(Behavior default_behavior = Behavior());
  ~FakeOpenAiServer();  // Stops the server.
  FakeOpenAiServer(const FakeOpenAiServer&) = delete;
  FakeOpenAiServer& operator=(const FakeOpenAiServer&) = delete;

  // Binds host:port (0 = a free port) and starts the io thread.
  absl::Status Start(int port = 0, const std::string& host = "127.0.0.1");
  // Closes every connection and stops the thread. Idempotent.
  void Stop();

  int port() const { return port_; }
  // "http://127.0.0.1:PORT/v1".
  std::string base_url() const;

  void Enqueue(Behavior behavior);
  void SetDefault(Behavior behavior);

  std::vector<RecordedRequest> requests() const;
  size_t request_count() const;
  // Waits until at least n requests were recorded.
  bool WaitForRequests(size_t n, absl::Duration timeout) const;
  // Streams whose client went away (a write failed) before the stream's end.
  int client_disconnects() const;
  bool WaitForClientDisconnects(int n, absl::Duration timeout) const;
  // Token chunks written so far, over all streams (for benchmarks).
  int64_t tokens_sent() const;

  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
};

}  // namespace aijobs::fake_openai
