// RequestParser: reads one HTTP/1.1 request into an HttpRequest with Beast, as
// http::request_parser<http::string_body> does, plus the framing rules of RFC 9112 that Beast
// 1.74 leaves to its caller. The HTTP server reads every request with it; the fuzz targets
// feed it raw bytes.
//
//   RequestParser parser;
//   http::read(stream, buffer, parser, ec);  // a buffer of at most kMaxBufferedBytes
//   if (parser.refusal_status() != 0) { /* answer it with refusal_reason() */ }
#pragma once

#include <boost/beast/http.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

#include "gateway/http_server.h"

namespace aijobs::gateway {

// The request line, header fields and trailer fields together: one budget for the header
// section and the trailers of a chunked body.
inline constexpr uint32_t kHeaderLimitBytes = 16 * 1024;
// Bytes read but not yet parsed. Beast finds the end of a trailer section (or of a chunk
// line with its extensions) only once it is buffered whole, so without this cap a client
// could make one connection buffer any amount; reads stop at the cap with buffer_overflow.
// Body bytes are consumed as they arrive and never pile up here.
inline constexpr size_t kMaxBufferedBytes = 64 * 1024;
// The request target (path and query) of the request line; a longer one is 414.
inline constexpr size_t kMaxTargetBytes = 8 * 1024;

// Reads one request. A request that breaks one of these rules is refused (refusal_status()
// says how) before any body byte is read:
//  - Transfer-Encoding must be exactly "chunked": a final coding other than chunked is 400
//    (the body's length is unknowable, and guessing "no body" would read the body's bytes as
//    the next request), chunked twice or with parameters is 400, any other coding (gzip, …)
//    is 501, and any Transfer-Encoding in an HTTP/1.0 request is 400.
//  - A request target over kMaxTargetBytes is 414.
//  - An HTTP/1.1 request has exactly one Host field, an HTTP/1.0 request at most one.
//  - Trailer fields (after a chunked body) are counted against kHeaderLimitBytes together
//    with the header section and then dropped: a trailer never becomes a request header
//    (else it could set X-Request-Id, Grpc-Timeout, Authorization or Grpc-Metadata-* after
//    whatever inspected the header).
//  - An exception thrown while building the message (e.g. Beast's std::length_error for a
//    field over 64 KiB) is caught here and becomes a 400: it never unwinds the io thread.
class RequestParser final : public http::basic_parser<true> {
 public:
  RequestParser();

  HttpRequest& get() { return request_; }
  HttpRequest release() { return std::move(request_); }
  // Non-zero when the request was refused: the HTTP status to answer and why.
  int refusal_status() const { return refusal_status_; }
  const std::string& refusal_reason() const { return refusal_reason_; }
  // Whether the header section was read whole (what follows is body, then trailers).
  bool header_done() const { return header_done_; }
  // Whether the request line was read (its target is then within kMaxTargetBytes).
  bool request_line_done() const { return request_line_done_; }

 private:
  void Refuse(int status, std::string reason, boost::beast::error_code& ec);

  // Runs `f`, turning an exception into a refusal.
  template <typename F>
  void Guarded(boost::beast::error_code& ec, F&& f);

  void on_request_impl(http::verb method, boost::beast::string_view method_string,
                       boost::beast::string_view target, int version,
                       boost::beast::error_code& ec) override;
  void on_response_impl(int, boost::beast::string_view, int,
                        boost::beast::error_code& ec) override;
  void on_field_impl(http::field name, boost::beast::string_view name_string,
                     boost::beast::string_view value, boost::beast::error_code& ec) override;
  void on_header_impl(boost::beast::error_code& ec) override;
  void on_body_init_impl(const boost::optional<std::uint64_t>& content_length,
                         boost::beast::error_code& ec) override;
  size_t on_body_impl(boost::beast::string_view body, boost::beast::error_code& ec) override;
  void on_chunk_header_impl(std::uint64_t, boost::beast::string_view,
                            boost::beast::error_code&) override {}
  size_t on_chunk_body_impl(std::uint64_t, boost::beast::string_view body,
                            boost::beast::error_code& ec) override;
  void on_finish_impl(boost::beast::error_code&) override {}

  HttpRequest request_;
  size_t section_bytes_ = 0;
  bool header_done_ = false;
  bool request_line_done_ = false;
  int host_fields_ = 0;
  bool has_transfer_encoding_ = false;
  std::vector<std::string> transfer_codings_;
  int refusal_status_ = 0;
  std::string refusal_reason_;
};

// The status for Beast's header_limit error: 414 when the request line itself does not fit
// (no CRLF within kMaxTargetBytes of `unparsed`, the bytes buffered and not yet parsed),
// else 431 (the header fields, or the trailers of a chunked body).
int StatusForHeaderLimit(const RequestParser& parser, absl::string_view unparsed);

}  // namespace aijobs::gateway
