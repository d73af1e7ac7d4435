#include "gateway/http_server.h"

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>

#include <chrono>
#include <deque>
#include <optional>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace aijobs::gateway {

namespace net = boost::asio;
namespace beast = boost::beast;
using tcp = net::ip::tcp;

namespace {

std::chrono::steady_clock::duration ToChrono(absl::Duration d) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      absl::ToChronoMicroseconds(d));
}

}  // namespace

// One connection. Every member is touched only on the strand (stream_'s executor).
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, RequestHandler* handler, const HttpServerOptions& options)
      : stream_(std::move(socket)),
        handler_(handler),
        options_(options),
        heartbeat_timer_(stream_.get_executor()) {}

  void Run() {
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->ReadHeader(); });
  }

  template <typename F>
  void Post(F&& f) {
    net::post(stream_.get_executor(), std::forward<F>(f));
  }

  // --- called through HttpExchange, on the strand ---
  void DoRespond(HttpResponse response) {
    if (closed_) return;
    response.keep_alive(keep_alive_);
    response.prepare_payload();
    response_ = std::make_shared<HttpResponse>(std::move(response));
    http::async_write(stream_, *response_,
                      [self = shared_from_this()](beast::error_code ec, size_t) {
                        self->response_.reset();
                        if (ec || !self->keep_alive_) return self->Close();
                        self->ReadHeader();
                      });
  }

  void DoStartStream(HttpStreamHeader header, absl::Duration heartbeat_every,
                     std::string heartbeat) {
    if (closed_) return;
    streaming_ = true;
    header.chunked(true);
    header.keep_alive(false);
    stream_header_ = std::make_unique<HttpStreamHeader>(std::move(header));
    header_serializer_ = std::make_unique<http::response_serializer<http::empty_body>>(
        *stream_header_);
    heartbeat_every_ = heartbeat_every;
    heartbeat_ = std::move(heartbeat);
    stream_.expires_never();
    writing_ = true;
    http::async_write_header(stream_, *header_serializer_,
                             [self = shared_from_this()](beast::error_code ec, size_t) {
                               self->writing_ = false;
                               if (ec) return self->ClientGone();
                               self->WriteNext();
                             });
    WatchForClose();
    ArmHeartbeat();
  }

  void DoWrite(std::string chunk, std::function<void(bool)> done) {
    if (closed_) {
      if (done) done(false);
      return;
    }
    if (chunk.empty()) {
      if (done) done(true);
      return;
    }
    queue_.emplace_back(std::move(chunk), std::move(done));
    if (!writing_) WriteNext();
  }

  void DoEndStream() {
    ending_ = true;
    if (!writing_ && !closed_) WriteNext();
  }

  void SetOnClientGone(std::function<void()> fn) { on_gone_ = std::move(fn); }

 private:
  void ReadHeader() {
    parser_.emplace();
    parser_->body_limit(options_.max_body_bytes);
    parser_->header_limit(16 * 1024);
    stream_.expires_after(ToChrono(options_.idle_timeout));
    http::async_read_header(stream_, buffer_, *parser_,
                            [self = shared_from_this()](beast::error_code ec, size_t) {
                              self->OnHeader(ec);
                            });
  }

  void OnHeader(beast::error_code ec) {
    if (ec) return OnReadError(ec);
    auto& req = parser_->get();
    if (beast::iequals(req[http::field::expect], "100-continue") && !parser_->is_done()) {
      auto cont = std::make_shared<http::response<http::empty_body>>(http::status::continue_,
                                                                    req.version());
      http::async_write(stream_, *cont,
                        [self = shared_from_this(), cont](beast::error_code ec, size_t) {
                          if (ec) return self->Close();
                          self->ReadBody();
                        });
      return;
    }
    ReadBody();
  }

  void ReadBody() {
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, size_t) {
                       if (ec) return self->OnReadError(ec);
                       self->Dispatch();
                     });
  }

  void OnReadError(beast::error_code ec) {
    if (ec == http::error::body_limit) {
      return Reject(413, absl::StrCat("request body over the limit of ", options_.max_body_bytes,
                                      " bytes"));
    }
    const bool parse_error = &ec.category() == &http::make_error_code(http::error::bad_target).category();
    if (!parse_error || ec == http::error::end_of_stream || ec == http::error::partial_message) {
      // The peer went away or idled out: nobody to answer.
      return Close();
    }
    Reject(400, absl::StrCat("malformed HTTP request: ", ec.message()));
  }

  void Reject(int status, absl::string_view reason) {
    keep_alive_ = false;
    HttpResponse res = handler_->RejectUnreadable(status, reason);
    DoRespond(std::move(res));
  }

  void Dispatch() {
    HttpRequest req = parser_->release();
    parser_.reset();
    keep_alive_ = req.keep_alive();
    stream_.expires_never();
    auto exchange = std::make_shared<HttpExchange>(shared_from_this(), std::move(req));
    handler_->Handle(std::move(exchange));
  }

  void WriteNext() {
    if (closed_ || writing_) return;
    if (queue_.empty()) {
      if (!ending_) return;
      writing_ = true;
      net::async_write(stream_, http::make_chunk_last(),
                       [self = shared_from_this()](beast::error_code, size_t) {
                         self->writing_ = false;
                         self->Close();
                       });
      return;
    }
    current_ = std::move(queue_.front());
    queue_.pop_front();
    writing_ = true;
    net::async_write(stream_, http::make_chunk(net::buffer(current_.first)),
                     [self = shared_from_this()](beast::error_code ec, size_t) {
                       self->writing_ = false;
                       auto done = std::move(self->current_.second);
                       self->current_ = {};
                       if (done) done(!ec);
                       if (ec) return self->ClientGone();
                       self->last_write_ = std::chrono::steady_clock::now();
                       self->WriteNext();
                     });
  }

  // While streaming nothing more is expected from the client; a read that completes means
  // it closed the connection (or sent bytes we will never serve).
  void WatchForClose() {
    stream_.socket().async_read_some(
        net::buffer(probe_), net::bind_executor(stream_.get_executor(),
                                                [self = shared_from_this()](beast::error_code ec,
                                                                            size_t) {
                                                  if (ec) return self->ClientGone();
                                                  if (!self->closed_) self->WatchForClose();
                                                }));
  }

  void ArmHeartbeat() {
    if (heartbeat_every_ <= absl::ZeroDuration() || closed_) return;
    heartbeat_timer_.expires_after(ToChrono(heartbeat_every_));
    heartbeat_timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (ec || self->closed_ || self->ending_) return;
      auto idle = std::chrono::steady_clock::now() - self->last_write_;
      if (!self->writing_ && self->queue_.empty() &&
          idle >= ToChrono(self->heartbeat_every_) - std::chrono::milliseconds(5)) {
        self->DoWrite(self->heartbeat_, nullptr);
      }
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

  void Close() {
    if (closed_) return;
    closed_ = true;
    heartbeat_timer_.cancel();
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.socket().close(ignored);
    auto pending = std::move(queue_);
    for (auto& [chunk, done] : pending) {
      if (done) done(false);
    }
    if (streaming_ && !gone_ && on_gone_) {
      // The stream ended by our side; nobody needs to be told.
      on_gone_ = nullptr;
    }
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  RequestHandler* handler_;
  const HttpServerOptions& options_;
  std::optional<http::request_parser<http::string_body>> parser_;
  bool keep_alive_ = true;
  std::shared_ptr<HttpResponse> response_;
  // Streaming state.
  bool streaming_ = false;
  bool writing_ = false;
  bool ending_ = false;
  bool closed_ = false;
  bool gone_ = false;
  std::unique_ptr<HttpStreamHeader> stream_header_;
  std::unique_ptr<http::response_serializer<http::empty_body>> header_serializer_;
  std::deque<std::pair<std::string, std::function<void(bool)>>> queue_;
  std::pair<std::string, std::function<void(bool)>> current_;
  std::function<void()> on_gone_;
  net::steady_timer heartbeat_timer_;
  absl::Duration heartbeat_every_ = absl::ZeroDuration();
  std::string heartbeat_;
  std::chrono::steady_clock::time_point last_write_ = std::chrono::steady_clock::now();
  char probe_[256];
};

HttpExchange::HttpExchange(std::shared_ptr<Session> session, HttpRequest request)
    : session_(std::move(session)), request_(std::move(request)), received_at_(absl::Now()) {}

void HttpExchange::Respond(HttpResponse response) {
  session_->Post([s = session_, r = std::move(response)]() mutable { s->DoRespond(std::move(r)); });
}

void HttpExchange::StartStream(HttpStreamHeader header, absl::Duration heartbeat_every,
                               std::string heartbeat) {
  session_->Post([s = session_, h = std::move(header), heartbeat_every,
                  hb = std::move(heartbeat)]() mutable {
    s->DoStartStream(std::move(h), heartbeat_every, std::move(hb));
  });
}

void HttpExchange::Write(std::string chunk, std::function<void(bool ok)> done) {
  session_->Post([s = session_, c = std::move(chunk), d = std::move(done)]() mutable {
    s->DoWrite(std::move(c), std::move(d));
  });
}

void HttpExchange::EndStream() {
  session_->Post([s = session_] { s->DoEndStream(); });
}

void HttpExchange::OnClientGone(std::function<void()> fn) {
  session_->Post([s = session_, f = std::move(fn)]() mutable { s->SetOnClientGone(std::move(f)); });
}

struct HttpServer::Impl {
  HttpServerOptions options;
  RequestHandler* handler = nullptr;
  net::io_context io;
  tcp::acceptor acceptor{io};
  std::vector<std::thread> threads;
  int port = 0;
  bool stopped = false;

  explicit Impl(const HttpServerOptions& o) : options(o), io(o.threads) {}

  void Accept() {
    acceptor.async_accept(net::make_strand(io), [this](beast::error_code ec, tcp::socket socket) {
      if (ec) {
        if (ec == net::error::operation_aborted || !acceptor.is_open()) return;
        // EMFILE and friends: log and keep accepting rather than going deaf.
        spdlog::warn("accept failed: {}", ec.message());
      } else {
        beast::error_code ignored;
        socket.set_option(tcp::no_delay(true), ignored);
        std::make_shared<Session>(std::move(socket), handler, options)->Run();
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
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options.host, ":",
                                               options.port, ": ", ec.message()));
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
