#include "bench/http_client.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"

namespace aijobs::bench {

std::string HttpRequestText(absl::string_view method, absl::string_view target,
                            absl::string_view host,
                            const std::vector<std::pair<std::string, std::string>>& headers,
                            absl::string_view body) {
  std::string out = absl::StrCat(method, " ", target, " HTTP/1.1\r\nHost: ", host, "\r\n");
  for (const auto& [k, v] : headers) absl::StrAppend(&out, k, ": ", v, "\r\n");
  if (!body.empty() || method == "POST" || method == "PUT") {
    absl::StrAppend(&out, "Content-Length: ", body.size(), "\r\n");
  }
  absl::StrAppend(&out, "\r\n", body);
  return out;
}

// ---------------------------------------------------------------------------------------
// HttpResponseParser

bool HttpResponseParser::Feed(absl::string_view bytes) {
  if (!error_.empty()) return false;
  // Drop what was consumed before appending, so the buffer stays small on long streams.
  if (pos_ > 0) {
    buf_.erase(0, pos_);
    pos_ = 0;
  }
  buf_.append(bytes.data(), bytes.size());
  while (Step()) {
  }
  return error_.empty();
}

std::string HttpResponseParser::Header(absl::string_view name) const {
  for (absl::string_view line : absl::StrSplit(absl::string_view(head_), "\r\n")) {
    size_t colon = line.find(':');
    if (colon == absl::string_view::npos) continue;
    if (absl::EqualsIgnoreCase(line.substr(0, colon), name)) {
      return std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
    }
  }
  return "";
}

void HttpResponseParser::NextResponse() {
  state_ = kHead;
  status_ = 0;
  head_.clear();
  body_.clear();
  remaining_ = 0;
}

bool HttpResponseParser::Step() {
  absl::string_view avail(buf_.data() + pos_, buf_.size() - pos_);
  switch (state_) {
    case kHead: {
      size_t end = avail.find("\r\n\r\n");
      if (end == absl::string_view::npos) return false;
      head_.assign(avail.data(), end);
      pos_ += end + 4;
      // "HTTP/1.1 200 OK"
      absl::string_view head(head_);
      if (!absl::StartsWith(head, "HTTP/1.") || head.size() < 12 ||
          !absl::SimpleAtoi(head.substr(9, 3), &status_)) {
        error_ = absl::StrCat("bad status line: ", head.substr(0, 40));
        return false;
      }
      std::string te = absl::AsciiStrToLower(Header("Transfer-Encoding"));
      std::string cl = Header("Content-Length");
      if (absl::StrContains(te, "chunked")) {
        state_ = kChunkSize;
      } else if (!cl.empty()) {
        if (!absl::SimpleAtoi(cl, &remaining_)) {
          error_ = "bad Content-Length";
          return false;
        }
        state_ = remaining_ == 0 ? kDone : kBody;
      } else if (status_ == 204 || status_ == 304 || status_ / 100 == 1) {
        state_ = kDone;
      } else {
        state_ = kUntilClose;
      }
      return true;
    }
    case kBody:
    case kChunkData: {
      if (avail.empty()) return false;
      size_t n = static_cast<size_t>(std::min<uint64_t>(remaining_, avail.size()));
      body_.append(avail.data(), n);
      pos_ += n;
      remaining_ -= n;
      if (remaining_ == 0) state_ = state_ == kBody ? kDone : kChunkCrlf;
      return true;
    }
    case kChunkCrlf:
      if (avail.size() < 2) return false;
      pos_ += 2;
      state_ = kChunkSize;
      return true;
    case kChunkSize: {
      size_t end = avail.find("\r\n");
      if (end == absl::string_view::npos) return false;
      absl::string_view size = avail.substr(0, end);
      size = size.substr(0, size.find(';'));  // chunk extensions
      uint64_t n = 0;
      if (!absl::SimpleHexAtoi(absl::StripAsciiWhitespace(size), &n)) {
        error_ = "bad chunk size";
        return false;
      }
      pos_ += end + 2;
      remaining_ = n;
      state_ = n == 0 ? kTrailers : kChunkData;
      return true;
    }
    case kTrailers: {
      size_t end = avail.find("\r\n");
      if (end == absl::string_view::npos) return false;
      pos_ += end + 2;
      if (end == 0) state_ = kDone;
      return true;
    }
    case kUntilClose:
      if (avail.empty()) return false;
      body_.append(avail.data(), avail.size());
      pos_ += avail.size();
      return true;
    case kDone:
      return false;
  }
  return false;
}

// ---------------------------------------------------------------------------------------
// HttpConnection

absl::StatusOr<std::unique_ptr<HttpConnection>> HttpConnection::Connect(const std::string& host,
                                                                        int port,
                                                                        absl::Duration timeout) {
  addrinfo hints = {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  std::string h = host;
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  if (int rc = getaddrinfo(h.c_str(), std::to_string(port).c_str(), &hints, &res); rc != 0) {
    return absl::UnavailableError(absl::StrCat("resolve ", host, ": ", gai_strerror(rc)));
  }
  std::string last = "no address";
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
      last = strerror(errno);
      continue;
    }
    int rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
    if (rc < 0 && errno == EINPROGRESS) {
      pollfd p = {fd, POLLOUT, 0};
      int ms = static_cast<int>(absl::ToInt64Milliseconds(timeout));
      if (poll(&p, 1, ms) == 1) {
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        rc = err == 0 ? 0 : -1;
        errno = err;
      } else {
        errno = ETIMEDOUT;
      }
    }
    if (rc == 0) {
      freeaddrinfo(res);
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      return std::unique_ptr<HttpConnection>(new HttpConnection(fd));
    }
    last = strerror(errno);
    close(fd);
  }
  freeaddrinfo(res);
  return absl::UnavailableError(absl::StrCat("connect ", host, ":", port, ": ", last));
}

HttpConnection::~HttpConnection() { Close(); }

void HttpConnection::Close() {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
}

absl::Status HttpConnection::SendAll(absl::string_view data, absl::Time deadline) {
  while (!data.empty()) {
    ssize_t n = send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd p = {fd_, POLLOUT, 0};
      int ms = static_cast<int>(std::max<int64_t>(0, absl::ToInt64Milliseconds(deadline - absl::Now())));
      if (poll(&p, 1, ms) != 1) return absl::DeadlineExceededError("send timed out");
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    return absl::UnavailableError(absl::StrCat("send: ", strerror(errno)));
  }
  return absl::OkStatus();
}

absl::Status HttpConnection::ReadSome(absl::Time deadline) {
  char buf[16384];
  for (;;) {
    ssize_t n = recv(fd_, buf, sizeof(buf), 0);
    if (n > 0) {
      if (!parser_.Feed(absl::string_view(buf, static_cast<size_t>(n)))) {
        return absl::InternalError(absl::StrCat("bad HTTP response: ", parser_.error()));
      }
      return absl::OkStatus();
    }
    if (n == 0) {
      peer_closed_ = true;
      return absl::OkStatus();
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      return absl::UnavailableError(absl::StrCat("recv: ", strerror(errno)));
    }
    absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) return absl::DeadlineExceededError("response timed out");
    pollfd p = {fd_, POLLIN, 0};
    // Round up so a sub-millisecond remainder still waits.
    int ms = static_cast<int>(absl::ToInt64Milliseconds(left)) + 1;
    int rc = poll(&p, 1, ms);
    if (rc < 0 && errno != EINTR) return absl::UnavailableError("poll failed");
  }
}

absl::StatusOr<HttpResponse> HttpConnection::RoundTrip(absl::string_view request,
                                                       absl::Duration timeout) {
  if (fd_ < 0) return absl::UnavailableError("connection closed");
  absl::Time deadline = absl::Now() + timeout;
  absl::Status s = SendAll(request, deadline);
  while (s.ok() && !parser_.complete()) {
    if (peer_closed_) {
      if (parser_.until_close()) break;
      s = absl::UnavailableError("connection closed by the server mid-response");
      break;
    }
    s = ReadSome(deadline);
  }
  if (!s.ok()) {
    Close();
    return s;
  }
  HttpResponse r;
  r.status = parser_.status();
  r.body = std::move(parser_.body());
  r.location = parser_.Header("Location");
  r.content_type = parser_.Header("Content-Type");
  const bool close_after =
      peer_closed_ || absl::EqualsIgnoreCase(parser_.Header("Connection"), "close");
  parser_.NextResponse();
  if (close_after) Close();
  return r;
}

absl::Status HttpConnection::Stream(absl::string_view request,
                                    const std::function<bool(int status)>& on_head,
                                    const std::function<bool(absl::string_view piece)>& on_body,
                                    absl::Time deadline) {
  if (fd_ < 0) return absl::UnavailableError("connection closed");
  absl::Status s = SendAll(request, deadline);
  bool head_reported = false;
  while (s.ok()) {
    if (parser_.head_done() && !head_reported) {
      head_reported = true;
      if (!on_head(parser_.status())) break;
    }
    if (head_reported && !parser_.body().empty()) {
      bool more = on_body(parser_.body());
      parser_.body().clear();
      if (!more) break;
    }
    if (parser_.complete()) {
      Close();  // streams end their connection
      return absl::OkStatus();
    }
    if (peer_closed_) {
      Close();
      return parser_.until_close() ? absl::OkStatus()
                                   : absl::UnavailableError("stream cut by the server");
    }
    s = ReadSome(deadline);
  }
  Close();
  return s;
}

}  // namespace aijobs::bench
