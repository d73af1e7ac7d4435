#include "tests/fake_openai/fake_openai_server.h"

#include <google/protobuf/util/json_util.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <deque>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "aijobs/v1/openai.pb.h"

namespace aijobs::fake_openai {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = net::ip::tcp;

namespace {

google::protobuf::util::JsonPrintOptions PrintOptions() {
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  return o;
}

std::string ToJson(const google::protobuf::Message& m) {
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(m, &out, PrintOptions());
  return out;
}

// Escapes text for a JSON string (the tokens are plain words; this is for safety only).
void AppendJsonEscaped(std::string* out, absl::string_view s) {
  for (char c : s) {
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\n':
        out->append("\\n");
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          absl::StrAppend(out, "\\u00", absl::Hex(static_cast<unsigned char>(c), absl::kZeroPad2));
        } else {
          out->push_back(c);
        }
    }
  }
}

int CountWords(absl::string_view text) {
  int words = 0;
  bool in_word = false;
  for (char c : text) {
    bool space = absl::ascii_isspace(static_cast<unsigned char>(c));
    if (!space && !in_word) ++words;
    in_word = !space;
  }
  return words;
}

// Splits "[fake k=v ...] rest" into the directive; empty when the text has none.
std::string DirectiveIn(absl::string_view text) {
  if (!absl::StartsWith(text, "[fake")) return "";
  size_t close = text.find(']');
  if (close == absl::string_view::npos) return "";
  return std::string(absl::StripAsciiWhitespace(text.substr(5, close - 5)));
}

}  // namespace

std::string FakeToken(int i) { return i == 0 ? "tok0" : absl::StrCat(" tok", i); }

std::string RecordedRequest::Header(absl::string_view name) const {
  for (const auto& [n, v] : headers) {
    if (n == name) return v;
  }
  return "";
}

absl::StatusOr<Behavior> ParseBehavior(absl::string_view directive) {
  Behavior b;
  for (absl::string_view item :
       absl::StrSplit(directive, absl::ByAnyChar(" ;,\t"), absl::SkipEmpty())) {
    size_t eq = item.find('=');
    if (eq == absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("fake directive: \"", item, "\" is not key=value"));
    }
    std::string key = absl::AsciiStrToLower(item.substr(0, eq));
    absl::string_view value = item.substr(eq + 1);
    auto bad = [&] {
      return absl::InvalidArgumentError(
          absl::StrCat("fake directive: bad value for ", key, ": \"", value, "\""));
    };
    int i = 0;
    double d = 0;
    auto as_int = [&](int* out) { return absl::SimpleAtoi(value, &i) ? (*out = i, true) : false; };
    if (key == "tokens") {
      if (!as_int(&b.tokens) || b.tokens < 0) return bad();
    } else if (key == "rate") {
      if (!absl::SimpleAtod(value, &d) || d < 0) return bad();
      b.tokens_per_s = d;
    } else if (key == "ttft_ms") {
      if (!as_int(&b.ttft_ms) || b.ttft_ms < 0) return bad();
    } else if (key == "status") {
      if (!as_int(&b.status) || b.status < 100 || b.status > 599) return bad();
    } else if (key == "error_type") {
      b.error_type = std::string(value);
    } else if (key == "error_message") {
      b.error_message = std::string(value);
    } else if (key == "retry_after") {
      if (!absl::SimpleAtod(value, &d)) return bad();
      b.retry_after_s = d;
    } else if (key == "retry_after_ms") {
      if (!absl::SimpleAtod(value, &d)) return bad();
      b.retry_after_ms = d;
    } else if (key == "should_retry") {
      if (value != "true" && value != "false") return bad();
      b.should_retry = value == "true";
    } else if (key == "cut_after") {
      if (!as_int(&b.cut_after)) return bad();
    } else if (key == "malformed_after") {
      if (!as_int(&b.malformed_after)) return bad();
    } else if (key == "error_after") {
      if (!as_int(&b.error_after)) return bad();
    } else if (key == "stall_after") {
      if (!as_int(&b.stall_after)) return bad();
    } else if (key == "dims") {
      if (!as_int(&b.dims) || b.dims < 1) return bad();
    } else if (key == "times") {
      if (!as_int(&b.times) || b.times < 1) return bad();
    } else if (absl::StartsWith(key, "x-")) {
      b.headers.emplace_back(key, std::string(value));
    } else {
      return absl::InvalidArgumentError(absl::StrCat("fake directive: unknown key \"", key, "\""));
    }
  }
  return b;
}

class FakeOpenAiServer::Impl {
 public:
  explicit Impl(Behavior default_behavior) : default_(std::move(default_behavior)) {}

  absl::Status Start(int port, const std::string& host, int* bound_port) {
    boost::system::error_code ec;
    tcp::endpoint ep(net::ip::make_address(host, ec), static_cast<unsigned short>(port));
    if (ec) return absl::InvalidArgumentError(absl::StrCat("bad host ", host));
    acceptor_.open(ep.protocol(), ec);
    if (!ec) acceptor_.set_option(net::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(ep, ec);
    if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
    if (ec) {
      return absl::UnavailableError(absl::StrCat("fake openai server: cannot listen on ", host, ":",
                                                 port, ": ", ec.message()));
    }
    *bound_port = acceptor_.local_endpoint().port();
    DoAccept();
    thread_ = std::thread([this] { io_.run(); });
    return absl::OkStatus();
  }

  void Stop() {
    if (!thread_.joinable()) return;
    net::post(io_, [this] {
      boost::system::error_code ec;
      acceptor_.close(ec);
      io_.stop();
    });
    thread_.join();
  }

  // Picks the behaviour of one request (see the header).
  absl::StatusOr<Behavior> Choose(const std::string& directive) {
    absl::MutexLock lock(&mu_);
    if (!directive.empty()) {
      absl::StatusOr<Behavior> b = ParseBehavior(directive);
      if (!b.ok()) return b;
      if (b->times > 0 && ++directive_uses_[directive] > b->times) return default_;
      return b;
    }
    if (!queue_.empty()) {
      Behavior b = std::move(queue_.front());
      queue_.pop_front();
      return b;
    }
    return default_;
  }

  void Record(RecordedRequest r) {
    absl::MutexLock lock(&mu_);
    requests_.push_back(std::move(r));
  }

  void DoAccept();

  net::io_context io_{1};
  tcp::acceptor acceptor_{io_};
  std::thread thread_;

  mutable absl::Mutex mu_;
  Behavior default_ ABSL_GUARDED_BY(mu_);
  std::deque<Behavior> queue_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, int> directive_uses_ ABSL_GUARDED_BY(mu_);
  std::vector<RecordedRequest> requests_ ABSL_GUARDED_BY(mu_);
  int disconnects_ ABSL_GUARDED_BY(mu_) = 0;
  std::atomic<int64_t> tokens_sent_{0};
};

namespace {

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, FakeOpenAiServer::Impl* server)
      : socket_(std::move(socket)), timer_(socket_.get_executor()), server_(server) {}

  void Run() { DoRead(); }

 private:
  void DoRead() {
    req_ = {};
    parser_.emplace();
    parser_->body_limit(64 << 20);
    http::async_read(
        socket_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->OnRead(ec); });
  }

  void OnRead(beast::error_code ec) {
    if (ec) return Close();
    req_ = parser_->release();
    keep_alive_ = req_.keep_alive();
    RecordedRequest rec;
    rec.method = std::string(req_.method_string());
    rec.target = std::string(req_.target());
    for (const auto& field : req_) {
      rec.headers.emplace_back(absl::AsciiStrToLower(std::string(field.name_string())),
                               std::string(field.value()));
    }
    rec.body = req_.body();
    rec.arrival = absl::Now();
    std::string directive = std::string(req_["x-fake-behavior"]);
    server_->Record(std::move(rec));

    absl::string_view target(req_.target().data(), req_.target().size());
    if (req_.method() != http::verb::post) {
      return SendError(405, "invalid_request_error", "fake: only POST is served", {});
    }
    google::protobuf::util::JsonParseOptions opts;
    opts.ignore_unknown_fields = true;
    if (absl::EndsWith(target, "/chat/completions")) {
      openai::ChatCompletionRequest request;
      if (!google::protobuf::util::JsonStringToMessage(req_.body(), &request, opts).ok()) {
        return SendError(400, "invalid_request_error", "fake: request body is not valid JSON", {});
      }
      if (directive.empty()) {
        for (int i = request.messages_size() - 1; i >= 0; --i) {
          if (request.messages(i).role() == "user") {
            directive = DirectiveIn(request.messages(i).content());
            break;
          }
        }
      }
      absl::StatusOr<Behavior> b = server_->Choose(directive);
      if (!b.ok())
        return SendError(400, "invalid_request_error", std::string(b.status().message()), {});
      behavior_ = *std::move(b);
      model_ = request.model().empty() ? "fake-model" : request.model();
      prompt_tokens_ = 0;
      for (const auto& m : request.messages()) prompt_tokens_ += CountWords(m.content());
      include_usage_ = request.stream_options().include_usage();
      if (behavior_.status != 200) return SendBehaviorError();
      if (request.stream()) return StartStream();
      return SendCompletion();
    }
    if (absl::EndsWith(target, "/embeddings")) {
      openai::EmbeddingRequest request;
      if (!google::protobuf::util::JsonStringToMessage(req_.body(), &request, opts).ok()) {
        return SendError(400, "invalid_request_error", "fake: request body is not valid JSON", {});
      }
      if (directive.empty() && request.input_size() > 0) {
        directive = DirectiveIn(request.input(0));
      }
      absl::StatusOr<Behavior> b = server_->Choose(directive);
      if (!b.ok())
        return SendError(400, "invalid_request_error", std::string(b.status().message()), {});
      behavior_ = *std::move(b);
      if (behavior_.status != 200) return SendBehaviorError();
      return SendEmbeddings(request);
    }
    SendError(404, "invalid_request_error", absl::StrCat("fake: no route ", target), {});
  }

  template <typename Response>
  void AddBehaviorHeaders(Response* res) {
    for (const auto& [name, value] : behavior_.headers) res->set(name, value);
    if (behavior_.retry_after_s) res->set("retry-after", absl::StrCat(*behavior_.retry_after_s));
    if (behavior_.retry_after_ms) {
      res->set("retry-after-ms", absl::StrCat(*behavior_.retry_after_ms));
    }
    if (behavior_.should_retry) {
      res->set("x-should-retry", *behavior_.should_retry ? "true" : "false");
    }
  }

  void SendBehaviorError() {
    int status = behavior_.status;
    std::string type = behavior_.error_type;
    if (type.empty()) {
      type = status == 429   ? "rate_limit_exceeded"
             : status >= 500 ? "server_error"
                             : "invalid_request_error";
    }
    std::string message = behavior_.error_message.empty()
                              ? absl::StrCat("fake: injected HTTP ", status)
                              : behavior_.error_message;
    SendError(status, type, message, behavior_.headers, /*with_behavior_headers=*/true);
  }

  void SendError(int status, const std::string& type, const std::string& message,
                 const std::vector<std::pair<std::string, std::string>>&,
                 bool with_behavior_headers = false) {
    openai::ErrorResponse body;
    body.mutable_error()->set_type(type);
    body.mutable_error()->set_message(message);
    body.mutable_error()->mutable_code()->set_string_value(type);
    auto res = std::make_shared<http::response<http::string_body>>(
        static_cast<http::status>(status), req_.version());
    res->set(http::field::content_type, "application/json");
    if (with_behavior_headers) AddBehaviorHeaders(res.get());
    res->body() = ToJson(body);
    res->keep_alive(keep_alive_);
    res->prepare_payload();
    WriteWhole(std::move(res));
  }

  void SendCompletion() {
    openai::ChatCompletion c;
    c.set_id("chatcmpl-fake");
    c.set_object("chat.completion");
    c.set_model(model_);
    auto* choice = c.add_choices();
    choice->mutable_message()->set_role("assistant");
    std::string text;
    for (int i = 0; i < behavior_.tokens; ++i) text += FakeToken(i);
    choice->mutable_message()->set_content(text);
    choice->set_finish_reason("stop");
    c.mutable_usage()->set_prompt_tokens(prompt_tokens_);
    c.mutable_usage()->set_completion_tokens(behavior_.tokens);
    c.mutable_usage()->set_total_tokens(prompt_tokens_ + behavior_.tokens);
    auto res =
        std::make_shared<http::response<http::string_body>>(http::status::ok, req_.version());
    res->set(http::field::content_type, "application/json");
    AddBehaviorHeaders(res.get());
    res->body() = ToJson(c);
    res->keep_alive(keep_alive_);
    res->prepare_payload();
    WriteWhole(std::move(res));
  }

  void SendEmbeddings(const openai::EmbeddingRequest& request) {
    openai::EmbeddingResponse r;
    r.set_object("list");
    r.set_model(request.model().empty() ? "fake-embed" : request.model());
    int words = 0;
    for (int i = request.input_size() - 1; i >= 0; --i) {  // reverse order on purpose
      auto* e = r.add_data();
      e->set_object("embedding");
      e->set_index(i);
      const std::string& text = request.input(i);
      words += CountWords(text);
      uint64_t h = 1469598103934665603ULL;
      for (unsigned char ch : text) h = (h ^ ch) * 1099511628211ULL;
      for (int d = 0; d < behavior_.dims; ++d) {
        h = h * 6364136223846793005ULL + 1442695040888963407ULL;
        e->add_embedding(static_cast<float>((h >> 40) % 1000) / 1000.0f);
      }
    }
    r.mutable_usage()->set_prompt_tokens(words);
    r.mutable_usage()->set_total_tokens(words);
    auto res =
        std::make_shared<http::response<http::string_body>>(http::status::ok, req_.version());
    res->set(http::field::content_type, "application/json");
    AddBehaviorHeaders(res.get());
    res->body() = ToJson(r);
    res->keep_alive(keep_alive_);
    res->prepare_payload();
    WriteWhole(std::move(res));
  }

  void WriteWhole(std::shared_ptr<http::response<http::string_body>> res) {
    http::async_write(socket_, *res,
                      [self = shared_from_this(), res](beast::error_code ec, size_t) {
                        if (ec || !self->keep_alive_) return self->Close();
                        self->DoRead();
                      });
  }

  // --- streaming -------------------------------------------------------------------------

  void StartStream() {
    // One chunk printed by protobuf once; each token only fills in the content.
    openai::ChatCompletionChunk c;
    c.set_id("chatcmpl-fake");
    c.set_object("chat.completion.chunk");
    c.set_created(static_cast<uint32_t>(absl::ToUnixSeconds(absl::Now())));
    c.set_model(model_);
    auto* choice = c.add_choices();
    choice->mutable_delta()->set_content("\x01");
    std::string json = ToJson(c);
    size_t at = json.find("\\u0001");
    prefix_ = absl::StrCat("data: ", json.substr(0, at));
    suffix_ = absl::StrCat(json.substr(at + 6), "\n\n");
    sent_ = 0;
    stream_start_ = std::chrono::steady_clock::now();

    header_res_ =
        std::make_shared<http::response<http::empty_body>>(http::status::ok, req_.version());
    header_res_->set(http::field::content_type, "text/event-stream");
    header_res_->set(http::field::cache_control, "no-cache");
    AddBehaviorHeaders(header_res_.get());
    header_res_->keep_alive(keep_alive_);
    header_res_->chunked(true);
    serializer_ = std::make_shared<http::response_serializer<http::empty_body>>(*header_res_);
    http::async_write_header(socket_, *serializer_,
                             [self = shared_from_this()](beast::error_code ec, size_t) {
                               if (ec) return self->ClientGone();
                               self->ScheduleNext();
                             });
  }

  // Waits until the next token is due (ttft, then 1/rate apart) and sends it.
  void ScheduleNext() {
    auto due = stream_start_ + std::chrono::milliseconds(behavior_.ttft_ms);
    if (behavior_.tokens_per_s > 0 && sent_ > 0) {
      due += std::chrono::microseconds(static_cast<int64_t>(sent_ * 1e6 / behavior_.tokens_per_s));
    }
    if (due <= std::chrono::steady_clock::now()) return SendNext();
    timer_.expires_at(due);
    timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (!ec) self->SendNext();
    });
  }

  // Sends what is due now: one token (or all remaining at rate 0), or the stream's end.
  void SendNext() {
    out_.clear();
    const Behavior& b = behavior_;
    for (;;) {
      if (sent_ == b.cut_after) {
        if (!out_.empty()) return WriteChunk(/*then_close=*/true);
        return Close();
      }
      if (sent_ == b.stall_after) {
        if (!out_.empty()) return WriteChunk(false, /*then_stall=*/true);
        return Stall();
      }
      if (sent_ == b.malformed_after) {
        out_ += "data: {\"id\": \"chatcmpl-fake\", \"choices\": [{\"delta\": \n\n";
        behavior_.malformed_after = -1;
        continue;
      }
      if (sent_ == b.error_after) {
        openai::ErrorResponse e;
        e.mutable_error()->set_type(b.error_type.empty() ? "server_error" : b.error_type);
        e.mutable_error()->set_message(b.error_message.empty() ? "fake: injected stream error"
                                                               : b.error_message);
        absl::StrAppend(&out_, "data: ", ToJson(e), "\n\n");
        finished_ = true;
        return WriteChunk();
      }
      if (sent_ >= b.tokens) {
        AppendEnd();
        finished_ = true;
        return WriteChunk();
      }
      out_ += prefix_;
      AppendJsonEscaped(&out_, FakeToken(sent_));
      out_ += suffix_;
      ++sent_;
      server_->tokens_sent_.fetch_add(1, std::memory_order_relaxed);
      if (b.tokens_per_s > 0 && sent_ < b.tokens) return WriteChunk();
    }
  }

  void AppendEnd() {
    openai::ChatCompletionChunk last;
    last.set_id("chatcmpl-fake");
    last.set_object("chat.completion.chunk");
    last.set_model(model_);
    auto* choice = last.add_choices();
    choice->mutable_delta();
    choice->set_finish_reason("stop");
    absl::StrAppend(&out_, "data: ", ToJson(last), "\n\n");
    if (include_usage_) {
      openai::ChatCompletionChunk usage;
      usage.set_id("chatcmpl-fake");
      usage.set_object("chat.completion.chunk");
      usage.set_model(model_);
      usage.mutable_usage()->set_prompt_tokens(prompt_tokens_);
      usage.mutable_usage()->set_completion_tokens(sent_);
      usage.mutable_usage()->set_total_tokens(prompt_tokens_ + sent_);
      absl::StrAppend(&out_, "data: ", ToJson(usage), "\n\n");
    }
    out_ += "data: [DONE]\n\n";
  }

  void WriteChunk(bool then_close = false, bool then_stall = false) {
    net::async_write(
        socket_, http::make_chunk(net::buffer(out_)),
        [self = shared_from_this(), then_close, then_stall](beast::error_code ec, size_t) {
          if (ec) return self->ClientGone();
          if (then_close) return self->Close();
          if (then_stall) return self->Stall();
          if (!self->finished_) return self->ScheduleNext();
          self->WriteLast();
        });
  }

  void WriteLast() {
    net::async_write(socket_, http::make_chunk_last(),
                     [self = shared_from_this()](beast::error_code ec, size_t) {
                       if (ec || !self->keep_alive_) return self->Close();
                       self->finished_ = false;
                       self->DoRead();
                     });
  }

  void Stall() {
    timer_.expires_after(std::chrono::hours(24));
    timer_.async_wait([self = shared_from_this()](beast::error_code) {});
  }

  void ClientGone() {
    if (!finished_) {
      absl::MutexLock lock(&server_->mu_);
      ++server_->disconnects_;
    }
    Close();
  }

  void Close() {
    beast::error_code ec;
    socket_.shutdown(tcp::socket::shutdown_both, ec);
    socket_.close(ec);
  }

  tcp::socket socket_;
  net::steady_timer timer_;
  FakeOpenAiServer::Impl* const server_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::request<http::string_body> req_;
  bool keep_alive_ = true;

  Behavior behavior_;
  std::string model_;
  int prompt_tokens_ = 0;
  bool include_usage_ = false;
  std::string prefix_, suffix_, out_;
  int sent_ = 0;
  bool finished_ = false;
  std::chrono::steady_clock::time_point stream_start_;
  std::shared_ptr<http::response<http::empty_body>> header_res_;
  std::shared_ptr<http::response_serializer<http::empty_body>> serializer_;
};

}  // namespace

void FakeOpenAiServer::Impl::DoAccept() {
  acceptor_.async_accept([this](beast::error_code ec, tcp::socket socket) {
    if (ec) return;  // closed by Stop()
    socket.set_option(tcp::no_delay(true), ec);
    std::make_shared<Session>(std::move(socket), this)->Run();
    DoAccept();
  });
}

FakeOpenAiServer::FakeOpenAiServer(Behavior default_behavior)
    : impl_(std::make_unique<Impl>(std::move(default_behavior))) {}

FakeOpenAiServer::~FakeOpenAiServer() { Stop(); }

absl::Status FakeOpenAiServer::Start(int port, const std::string& host) {
  return impl_->Start(port, host, &port_);
}

void FakeOpenAiServer::Stop() { impl_->Stop(); }

std::string FakeOpenAiServer::base_url() const {
  return absl::StrCat("http://127.0.0.1:", port_, "/v1");
}

void FakeOpenAiServer::Enqueue(Behavior behavior) {
  absl::MutexLock lock(&impl_->mu_);
  impl_->queue_.push_back(std::move(behavior));
}

void FakeOpenAiServer::SetDefault(Behavior behavior) {
  absl::MutexLock lock(&impl_->mu_);
  impl_->default_ = std::move(behavior);
}

std::vector<RecordedRequest> FakeOpenAiServer::requests() const {
  absl::MutexLock lock(&impl_->mu_);
  return impl_->requests_;
}

size_t FakeOpenAiServer::request_count() const {
  absl::MutexLock lock(&impl_->mu_);
  return impl_->requests_.size();
}

bool FakeOpenAiServer::WaitForRequests(size_t n, absl::Duration timeout) const {
  absl::MutexLock lock(&impl_->mu_);
  auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(impl_->mu_) {
    return impl_->requests_.size() >= n;
  };
  return impl_->mu_.AwaitWithTimeout(absl::Condition(&enough), timeout);
}

int FakeOpenAiServer::client_disconnects() const {
  absl::MutexLock lock(&impl_->mu_);
  return impl_->disconnects_;
}

bool FakeOpenAiServer::WaitForClientDisconnects(int n, absl::Duration timeout) const {
  absl::MutexLock lock(&impl_->mu_);
  auto enough = [this, n]()
                    ABSL_EXCLUSIVE_LOCKS_REQUIRED(impl_->mu_) { return impl_->disconnects_ >= n; };
  return impl_->mu_.AwaitWithTimeout(absl::Condition(&enough), timeout);
}

int64_t FakeOpenAiServer::tokens_sent() const {
  return impl_->tokens_sent_.load(std::memory_order_relaxed);
}

}  // namespace aijobs::fake_openai
