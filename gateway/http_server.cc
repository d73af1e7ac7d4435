#include "gateway/http_server.h"

#include <sys/socket.h>
#include <sys/uio.h>

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <cerrno>
#include <chrono>
#include <optional>

#include "absl/container/inlined_vector.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "gateway/client_limits.h"
#include "gateway/http_request_parser.h"
#include "spdlog/spdlog.h"

namespace aijobs::gateway {

namespace net = boost::asio;
namespace beast = boost::beast;
using tcp = net::ip::tcp;
using Strand = net::strand<net::io_context::executor_type>;

namespace {

std::chrono::steady_clock::duration ToChrono(absl::Duration d) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      absl::ToChronoMicroseconds(d));
}

constexpr absl::string_view kLastChunk = "0\r\n\r\n";

// Appends one chunk of the chunked transfer encoding: hex size, CRLF, data, CRLF.
void AppendChunk(std::string* out, absl::string_view data) {
  char hex[20];
  int n = 0;
  size_t size = data.size();
  do {
    hex[n++] = "0123456789abcdef"[size & 15];
    size >>= 4;
  } while (size != 0);
  out->reserve(out->size() + n + data.size() + 4);
  while (n > 0) out->push_back(hex[--n]);
  out->append("\r\n");
  out->append(data.data(), data.size());
  out->append("\r\n");
}

bool WouldBlock(int err) { return err == EAGAIN || err == EWOULDBLOCK || err == EINTR; }

// Sends as much of `iov` as the socket takes right now, never blocking. Returns the bytes
// sent, 0 when nothing could be, or -1 (errno set) when the connection failed.
ssize_t SendNow(int fd, iovec* iov, size_t count) {
  msghdr msg{};
  msg.msg_iov = iov;
  msg.msg_iovlen = count;
  ssize_t n = ::sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  if (n < 0 && WouldBlock(errno)) return 0;
  return n;
}

}  // namespace

// One connection. Reads, the unary-response state machine and the asio objects live on the
// strand. The bytes of a response go out from whichever thread produces them: a response or
// stream chunk produced on a gRPC thread is sent with one non-blocking sendmsg() right there
// (the common case: the socket buffer has room) instead of being posted to an io thread,
// which cost a thread hand-off per chunk and made everything else on the io threads (e.g.
// /healthz) queue behind the streams' writes. Only what the socket does not take at once is
// handed to the strand for an async write. `mu_` orders those senders and guards the file
// descriptor against Close() (a descriptor closed and reused under a concurrent send would
// corrupt another connection).
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, Strand strand, RequestHandler* handler,
          const HttpServerOptions& options, std::string peer_ip, PerClientCounter* connections)
      : strand_(std::move(strand)),
        stream_(std::move(socket)),
        handler_(handler),
        options_(options),
        peer_ip_(std::move(peer_ip)),
        connections_(connections),
        heartbeat_timer_(strand_) {}
  ~Session() { connections_->Release(peer_ip_); }

  const std::string& peer_ip() const { return peer_ip_; }

  void Run() {
    net::dispatch(strand_, [self = shared_from_this()] { self->ReadHeader(); });
  }

  // Runs `f` on the strand: inline when already there, else posted.
  template <typename F>
  void OnStrand(F&& f) {
    if (strand_.running_in_this_thread()) {
      f();
    } else {
      net::post(strand_, std::forward<F>(f));
    }
  }

  // --- through HttpExchange, any thread ---
  void Respond(HttpResponse response) {
    response.keep_alive(keep_alive_);
    response.prepare_payload();
    http::fields::writer header(response.base(), response.version(), response.result_int());
    absl::InlinedVector<iovec, 16> iov;
    size_t total = 0;
    const auto header_buffers = header.get();
    for (net::const_buffer b : beast::buffers_range_ref(header_buffers)) {
      iov.push_back({const_cast<void*>(b.data()), b.size()});
      total += b.size();
    }
    if (!response.body().empty()) {
      iov.push_back({response.body().data(), response.body().size()});
      total += response.body().size();
    }
    ssize_t sent;
    {
      absl::MutexLock lock(&mu_);
      if (closed_) return;
      sent = SendNow(stream_.socket().native_handle(), iov.data(), iov.size());
      if (sent >= 0 && static_cast<size_t>(sent) < total) {
        // The rest goes out asynchronously (a large body or a full socket buffer).
        response_rest_.clear();
        size_t skip = static_cast<size_t>(sent);
        for (const iovec& v : iov) {
          if (skip >= v.iov_len) {
            skip -= v.iov_len;
            continue;
          }
          response_rest_.append(static_cast<const char*>(v.iov_base) + skip, v.iov_len - skip);
          skip = 0;
        }
      }
    }
    auto self = shared_from_this();
    if (sent < 0) return OnStrand([self] { self->Close(); });
    if (static_cast<size_t>(sent) < total) {
      return OnStrand([self] {
        net::async_write(self->stream_, net::buffer(self->response_rest_),
                         net::bind_executor(self->strand_, [self](beast::error_code ec, size_t) {
                           self->response_rest_.clear();
                           self->AfterResponse(!ec);
                         }));
      });
    }
    OnStrand([self] { self->AfterResponse(true); });
  }

  void StartStream(HttpStreamHeader header, absl::Duration heartbeat_every, std::string heartbeat) {
    header.chunked(true);
    header.keep_alive(false);
    http::fields::writer writer(header, header.version(), header.result_int());
    std::string bytes;
    const auto header_buffers = writer.get();
    for (net::const_buffer b : beast::buffers_range_ref(header_buffers)) {
      bytes.append(static_cast<const char*>(b.data()), b.size());
    }
    Dones dones;
    {
      absl::MutexLock lock(&mu_);
      if (closed_ || streaming_) return;
      streaming_ = true;
      heartbeat_every_ = heartbeat_every;
      heartbeat_ = std::move(heartbeat);
      // Chunks queued before the header (none with a well-behaved caller) follow it.
      pending_.insert(0, bytes);
      FlushLocked(&dones);
    }
    RunDones(&dones);
    OnStrand([self = shared_from_this()] {
      if (self->closed_) return;
      self->stream_.expires_never();
      self->WatchForClose();
      self->ArmHeartbeat();
    });
  }

  void Write(std::string chunk, std::function<void(bool)> done) {
    if (chunk.empty()) {
      if (done) done(true);
      return;
    }
    Dones dones;
    {
      absl::MutexLock lock(&mu_);
      if (closed_ || ending_ || failed_) {
        dones.ok = false;
        if (done) dones.fns.push_back(std::move(done));
      } else {
        AppendChunk(&pending_, chunk);
        if (done) pending_dones_.push_back(std::move(done));
        FlushLocked(&dones);
      }
    }
    RunDones(&dones);
  }

  void EndStream() {
    absl::MutexLock lock(&mu_);
    if (closed_ || ending_) return;
    ending_ = true;
    pending_.append(kLastChunk.data(), kLastChunk.size());
    // Closing the connection is the strand's business: the last bytes go out from there.
    if (!streaming_) {
      net::post(strand_, [self = shared_from_this()] { self->Close(); });
    } else if (!writing_) {
      writing_ = true;
      net::post(strand_, [self = shared_from_this()] { self->AsyncFlush(); });
    }
  }

  void SetOnClientGone(std::function<void()> fn) {
    OnStrand([self = shared_from_this(), f = std::move(fn)]() mutable {
      self->on_gone_ = std::move(f);
    });
  }

 private:
  // Completion callbacks of written (or failed) chunks, run after mu_ is released.
  struct Dones {
    bool ok = true;
    std::vector<std::function<void(bool)>> fns;
  };
  static void RunDones(Dones* d) {
    for (auto& fn : d->fns) fn(d->ok);
  }

  // Sends what is pending right now if nothing else is writing; what the socket does not
  // take goes to the strand. Callbacks of fully sent chunks are moved to `dones`.
  void FlushLocked(Dones* dones) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!streaming_ || writing_ || pending_.empty() || closed_) return;
    iovec iov{pending_.data(), pending_.size()};
    ssize_t sent = SendNow(stream_.socket().native_handle(), &iov, 1);
    if (sent < 0) {
      failed_ = true;
      dones->ok = false;
      dones->fns = std::move(pending_dones_);
      pending_dones_.clear();
      pending_.clear();
      net::post(strand_, [self = shared_from_this()] { self->ClientGone(); });
      return;
    }
    if (static_cast<size_t>(sent) == pending_.size()) {
      pending_.clear();
      dones->fns = std::move(pending_dones_);
      pending_dones_.clear();
      last_write_ = std::chrono::steady_clock::now();
      return;
    }
    pending_.erase(0, static_cast<size_t>(sent));
    writing_ = true;
    net::post(strand_, [self = shared_from_this()] { self->AsyncFlush(); });
  }

  // On the strand, with writing_ set: writes everything pending (coalesced into one write;
  // one write in flight), repeats while more arrived, then closes if the stream ended.
  void AsyncFlush() {
    {
      absl::MutexLock lock(&mu_);
      if (closed_) return;
      if (pending_.empty()) {
        writing_ = false;
        if (!ending_) return;
      } else {
        inflight_.swap(pending_);
        pending_.clear();
        inflight_dones_.swap(pending_dones_);
        pending_dones_.clear();
      }
    }
    if (inflight_.empty()) return Close();  // ending_, and everything was written
    net::async_write(
        stream_, net::buffer(inflight_),
        net::bind_executor(strand_, [self = shared_from_this()](beast::error_code ec, size_t) {
          self->inflight_.clear();
          Dones dones;
          dones.ok = !ec;
          dones.fns.swap(self->inflight_dones_);
          RunDones(&dones);
          if (ec) return self->ClientGone();
          {
            absl::MutexLock lock(&self->mu_);
            self->last_write_ = std::chrono::steady_clock::now();
          }
          self->AsyncFlush();
        }));
  }

  // On the strand, once a unary response was written (or failed).
  void AfterResponse(bool ok) {
    if (!ok || !keep_alive_) return Close();
    ReadHeader();
  }

  void ReadHeader() {
    if (closed_) return;
    parser_.emplace();
    parser_->body_limit(options_.max_body_bytes);
    if (buffer_.size() == 0) {
      // Idle until the request's first byte (up to idle_timeout), then the header section
      // must be complete within header_timeout.
      stream_.expires_after(ToChrono(options_.idle_timeout));
      const size_t room = std::min<size_t>(4096, buffer_.max_size() - buffer_.size());
      stream_.async_read_some(
          buffer_.prepare(room),
          net::bind_executor(strand_, [self = shared_from_this()](beast::error_code ec, size_t n) {
            if (ec) return self->OnReadError(ec);
            self->buffer_.commit(n);
            self->ReadHeaderRest();
          }));
      return;
    }
    ReadHeaderRest();
  }

  void ReadHeaderRest() {
    stream_.expires_after(ToChrono(options_.header_timeout));
    http::async_read_header(
        stream_, buffer_, *parser_,
        net::bind_executor(strand_, [self = shared_from_this()](beast::error_code ec, size_t) {
          self->OnHeader(ec);
        }));
  }

  void OnHeader(beast::error_code ec) {
    if (ec) return OnReadError(ec);
    // No body (a GET): the request is complete; skip a second read operation.
    if (parser_->is_done()) return HandleRequest();
    auto& req = parser_->get();
    if (beast::iequals(req[http::field::expect], "100-continue")) {
      auto cont = std::make_shared<http::response<http::empty_body>>(http::status::continue_,
                                                                     req.version());
      http::async_write(stream_, *cont,
                        net::bind_executor(strand_, [self = shared_from_this(), cont](
                                                        beast::error_code ec, size_t) {
                          if (ec) return self->Close();
                          self->ReadBody();
                        }));
      return;
    }
    ReadBody();
  }

  void ReadBody() {
    http::async_read(
        stream_, buffer_, *parser_,
        net::bind_executor(strand_, [self = shared_from_this()](beast::error_code ec, size_t) {
          if (ec) return self->OnReadError(ec);
          self->HandleRequest();
        }));
  }

  void OnReadError(beast::error_code ec) {
    if (parser_->refusal_status() != 0) {
      return Reject(parser_->refusal_status(), parser_->refusal_reason());
    }
    if (ec == http::error::header_limit) {
      auto unparsed = static_cast<const char*>(buffer_.data().data());
      int status = StatusForHeaderLimit(*parser_, absl::string_view(unparsed, buffer_.size()));
      if (status == 414) {
        return Reject(414, absl::StrCat("request line over the limit of ", kMaxTargetBytes,
                                        " bytes for the target"));
      }
      return Reject(status, absl::StrCat("request header section and trailers over the limit of ",
                                         kHeaderLimitBytes, " bytes"));
    }
    if (ec == http::error::buffer_overflow) {  // kMaxBufferedBytes without a complete line
      // After the last chunk ("0" CRLF) only trailer fields follow.
      absl::string_view unparsed(static_cast<const char*>(buffer_.data().data()), buffer_.size());
      absl::ConsumePrefix(&unparsed, "\r\n");  // the end of the chunk before it
      if (parser_->header_done() &&
          (absl::StartsWith(unparsed, "0\r\n") || absl::StartsWith(unparsed, "0;"))) {
        return Reject(
            431, absl::StrCat("request trailers over the limit of ", kHeaderLimitBytes, " bytes"));
      }
      return Reject(400, absl::StrCat("request header section and trailers over the limit of ",
                                      kHeaderLimitBytes, " bytes (or a chunk line over ",
                                      kMaxBufferedBytes, " bytes)"));
    }
    if (ec == http::error::body_limit) {
      return Reject(
          413, absl::StrCat("request body over the limit of ", options_.max_body_bytes, " bytes"));
    }
    const bool parse_error =
        &ec.category() == &http::make_error_code(http::error::bad_target).category();
    if (!parse_error || ec == http::error::end_of_stream || ec == http::error::partial_message) {
      // The peer went away or idled out: nobody to answer.
      return Close();
    }
    Reject(400, absl::StrCat("malformed HTTP request: ", ec.message()));
  }

  void Reject(int status, absl::string_view reason) {
    keep_alive_ = false;
    Respond(handler_->RejectUnreadable(status, reason));
  }

  void HandleRequest() {
    HttpRequest req = parser_->release();
    parser_.reset();
    keep_alive_ = req.keep_alive();
    stream_.expires_never();
    auto exchange = std::make_shared<HttpExchange>(shared_from_this(), std::move(req));
    handler_->Handle(std::move(exchange));
  }

  // While streaming nothing more is expected from the client; a read that completes means
  // it closed the connection (or sent bytes we will never serve).
  void WatchForClose() {
    stream_.socket().async_read_some(
        net::buffer(probe_),
        net::bind_executor(strand_, [self = shared_from_this()](beast::error_code ec, size_t) {
          if (ec) return self->ClientGone();
          if (!self->closed_) self->WatchForClose();
        }));
  }

  void ArmHeartbeat() {
    if (heartbeat_every_ <= absl::ZeroDuration() || closed_) return;
    heartbeat_timer_.expires_after(ToChrono(heartbeat_every_));
    heartbeat_timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (ec || self->closed_) return;
      Dones dones;
      {
        absl::MutexLock lock(&self->mu_);
        if (self->ending_) return;
        auto idle = std::chrono::steady_clock::now() - self->last_write_;
        if (!self->writing_ && self->pending_.empty() && !self->heartbeat_.empty() &&
            idle >= ToChrono(self->heartbeat_every_) - std::chrono::milliseconds(5)) {
          AppendChunk(&self->pending_, self->heartbeat_);
          self->FlushLocked(&dones);
        }
      }
      RunDones(&dones);
      self->ArmHeartbeat();
    });
  }

  void ClientGone() {
    if (gone_) return;
    gone_ = true;
    if (on_gone_) {
      auto fn = std::move(on_gone_);
      on_gone_ = nullptr;
      fn();
    }
    Close();
  }

  // On the strand.
  void Close() {
    Dones dones;
    {
      absl::MutexLock lock(&mu_);
      if (closed_) return;
      closed_ = true;
      heartbeat_timer_.cancel();
      beast::error_code ignored;
      stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
      stream_.socket().close(ignored);
      dones.ok = false;
      dones.fns.swap(pending_dones_);
      pending_.clear();
    }
    RunDones(&dones);
    // A stream ended by our side: nobody needs to be told.
    on_gone_ = nullptr;
  }

  Strand strand_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_{kMaxBufferedBytes};
  RequestHandler* handler_;
  const HttpServerOptions& options_;
  const std::string peer_ip_;
  PerClientCounter* const connections_;
  // Strand only.
  std::optional<RequestParser> parser_;
  // Set on the strand before the handler sees the request; read by Respond() on the thread
  // that answers it (ordered after by whatever handed the request over).
  bool keep_alive_ = true;
  std::string response_rest_;
  bool gone_ = false;
  std::function<void()> on_gone_;
  net::steady_timer heartbeat_timer_;
  std::string inflight_;
  std::vector<std::function<void(bool)>> inflight_dones_;
  char probe_[256];

  absl::Mutex mu_;
  // Written only on the strand, under mu_: strand code reads it without the lock.
  bool closed_ = false;
  bool streaming_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;  // the strand owns the socket's write side
  bool ending_ ABSL_GUARDED_BY(mu_) = false;
  bool failed_ ABSL_GUARDED_BY(mu_) = false;
  // Framed bytes not yet handed to the socket, and the callbacks of the chunks among them.
  std::string pending_ ABSL_GUARDED_BY(mu_);
  std::vector<std::function<void(bool)>> pending_dones_ ABSL_GUARDED_BY(mu_);
  absl::Duration heartbeat_every_ = absl::ZeroDuration();
  std::string heartbeat_;
  std::chrono::steady_clock::time_point last_write_ ABSL_GUARDED_BY(mu_) =
      std::chrono::steady_clock::now();
};

HttpExchange::HttpExchange(std::shared_ptr<Session> session, HttpRequest request)
    : session_(std::move(session)), request_(std::move(request)), received_at_(absl::Now()) {}

void HttpExchange::Respond(HttpResponse response) { session_->Respond(std::move(response)); }

const std::string& HttpExchange::peer_ip() const { return session_->peer_ip(); }

void HttpExchange::StartStream(HttpStreamHeader header, absl::Duration heartbeat_every,
                               std::string heartbeat) {
  session_->StartStream(std::move(header), heartbeat_every, std::move(heartbeat));
}

void HttpExchange::Write(std::string chunk, std::function<void(bool ok)> done) {
  session_->Write(std::move(chunk), std::move(done));
}

void HttpExchange::EndStream() { session_->EndStream(); }

void HttpExchange::OnClientGone(std::function<void()> fn) {
  session_->SetOnClientGone(std::move(fn));
}

struct HttpServer::Impl {
  HttpServerOptions options;
  RequestHandler* handler = nullptr;
  net::io_context io;
  tcp::acceptor acceptor{io};
  std::vector<std::thread> threads;
  int port = 0;
  bool stopped = false;
  PerClientCounter connections;
  absl::Time last_refusal_log = absl::InfinitePast();  // the acceptor's strand only

  explicit Impl(const HttpServerOptions& o) : options(o), io(o.threads) {}

  // Answers a connection over the per-address cap with a 429 and closes it.
  void RefuseOverCap(tcp::socket& socket, const std::string& ip) {
    static constexpr char kBody[] =
        R"({"code":8,"message":"too many connections from this address","details":[]})";
    const std::string response = absl::StrCat(
        "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
        "Retry-After: 1\r\nConnection: close\r\nContent-Length: ",
        sizeof(kBody) - 1, "\r\n\r\n", kBody);
    beast::error_code ignored;
    socket.non_blocking(true, ignored);
    net::write(socket, net::buffer(response), ignored);
    socket.shutdown(tcp::socket::shutdown_both, ignored);
    socket.close(ignored);
    if (absl::Now() - last_refusal_log > absl::Seconds(10)) {
      last_refusal_log = absl::Now();
      spdlog::warn("refusing connections from {}: it holds {} (--max_connections_per_ip)", ip,
                   options.max_connections_per_ip);
    }
  }

  void Accept() {
    // The socket's executor and the session's strand are one strand: beast's own timeout
    // handling and the session's handlers never run concurrently.
    Strand strand = net::make_strand(io);
    acceptor.async_accept(strand, [this, strand](beast::error_code ec, tcp::socket socket) {
      if (ec) {
        if (ec == net::error::operation_aborted || !acceptor.is_open()) return;
        // EMFILE and friends: log and keep accepting rather than going deaf.
        spdlog::warn("accept failed: {}", ec.message());
      } else {
        beast::error_code ignored;
        socket.set_option(tcp::no_delay(true), ignored);
        tcp::endpoint peer = socket.remote_endpoint(ignored);
        std::string ip = ignored ? std::string("unknown") : peer.address().to_string();
        if (!connections.TryAcquire(ip, options.max_connections_per_ip)) {
          RefuseOverCap(socket, ip);
        } else {
          std::make_shared<Session>(std::move(socket), strand, handler, options, std::move(ip),
                                    &connections)
              ->Run();
        }
      }
      Accept();
    });
  }
};

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const HttpServerOptions& options,
                                                              RequestHandler* handler) {
  auto impl = std::make_unique<Impl>(options);
  impl->handler = handler;
  beast::error_code ec;
  auto address = net::ip::make_address(options.host, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("listen address \"", options.host, "\": ", ec.message()));
  }
  tcp::endpoint endpoint(address, static_cast<unsigned short>(options.port));
  impl->acceptor.open(endpoint.protocol(), ec);
  if (!ec) impl->acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) impl->acceptor.bind(endpoint, ec);
  if (!ec) impl->acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options.host, ":", options.port, ": ", ec.message()));
  }
  impl->port = impl->acceptor.local_endpoint().port();
  impl->Accept();
  for (int i = 0; i < std::max(1, options.threads); ++i) {
    impl->threads.emplace_back([io = &impl->io] { io->run(); });
  }
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() { Shutdown(); }

int HttpServer::port() const { return impl_->port; }

void HttpServer::Shutdown() {
  if (impl_->stopped) return;
  impl_->stopped = true;
  net::post(impl_->io, [impl = impl_.get()] {
    beast::error_code ignored;
    impl->acceptor.close(ignored);
  });
  impl_->io.stop();
  for (auto& t : impl_->threads) t.join();
  impl_->threads.clear();
}

HttpResponse MakeResponse(const HttpRequest& request, int status, absl::string_view content_type,
                          std::string body) {
  HttpResponse res(static_cast<http::status>(status), request.version());
  res.set(http::field::content_type, beast::string_view(content_type.data(), content_type.size()));
  res.keep_alive(request.keep_alive());
  res.body() = std::move(body);
  return res;
}

}  // namespace aijobs::gateway
