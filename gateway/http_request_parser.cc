#include "gateway/http_request_parser.h"

#include <exception>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace aijobs::gateway {

namespace beast = boost::beast;

RequestParser::RequestParser() { header_limit(kHeaderLimitBytes); }

void RequestParser::Refuse(int status, std::string reason, beast::error_code& ec) {
  refusal_status_ = status;
  refusal_reason_ = std::move(reason);
  ec = http::error::bad_transfer_encoding;  // any error: the status above is what counts
}

template <typename F>
void RequestParser::Guarded(beast::error_code& ec, F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    Refuse(400, absl::StrCat("malformed HTTP request: ", e.what()), ec);
  } catch (...) {
    Refuse(400, "malformed HTTP request", ec);
  }
}

void RequestParser::on_request_impl(http::verb method, beast::string_view method_string,
                                    beast::string_view target, int version,
                                    beast::error_code& ec) {
  // "METHOD SP target SP HTTP/1.1 CRLF"
  section_bytes_ = method_string.size() + target.size() + 12;
  request_line_done_ = true;
  if (target.size() > kMaxTargetBytes) {
    return Refuse(414,
                  absl::StrCat("request target of ", target.size(), " bytes is over the limit of ",
                               kMaxTargetBytes, " bytes"),
                  ec);
  }
  Guarded(ec, [&] {
    if (method == http::verb::unknown) {
      request_.method_string(method_string);
    } else {
      request_.method(method);
    }
    request_.target(target);
    request_.version(version);
  });
}

void RequestParser::on_response_impl(int, beast::string_view, int, beast::error_code& ec) {
  ec = http::error::bad_version;  // never called: this parses requests
}

void RequestParser::on_field_impl(http::field name, beast::string_view name_string,
                                  beast::string_view value, beast::error_code& ec) {
  // "name: value CRLF"
  section_bytes_ += name_string.size() + value.size() + 4;
  if (header_done_) {
    if (section_bytes_ > kHeaderLimitBytes) {
      Refuse(431,
             absl::StrCat("request header section and trailers over the limit of ",
                          kHeaderLimitBytes, " bytes"),
             ec);
    }
    return;  // a trailer: counted, never kept
  }
  if (name == http::field::host) ++host_fields_;
  if (name == http::field::transfer_encoding) {
    has_transfer_encoding_ = true;
    for (absl::string_view coding : absl::StrSplit(absl::string_view(value.data(), value.size()),
                                                   ',', absl::SkipWhitespace())) {
      transfer_codings_.push_back(absl::AsciiStrToLower(absl::StripAsciiWhitespace(coding)));
    }
  }
  Guarded(ec, [&] { request_.insert(name, name_string, value); });
}

void RequestParser::on_header_impl(beast::error_code& ec) {
  header_done_ = true;
  const bool http11 = request_.version() >= 11;
  if (http11 ? host_fields_ != 1 : host_fields_ > 1) {
    return Refuse(400,
                  host_fields_ == 0 ? "an HTTP/1.1 request needs a Host header"
                                    : "a request must have exactly one Host header",
                  ec);
  }
  if (!has_transfer_encoding_) return;
  if (!http11) {
    return Refuse(400, "Transfer-Encoding is not allowed in an HTTP/1.0 request", ec);
  }
  if (transfer_codings_.empty() || transfer_codings_.back() != "chunked") {
    return Refuse(400,
                  absl::StrCat("the final transfer coding must be chunked (got \"",
                               transfer_codings_.empty() ? "" : transfer_codings_.back(),
                               "\"); send Content-Length or Transfer-Encoding: chunked"),
                  ec);
  }
  const size_t before_chunked = transfer_codings_.size() - 1;
  for (size_t i = 0; i < before_chunked; ++i) {
    if (transfer_codings_[i] == "chunked") {
      return Refuse(400, "the chunked transfer coding must be applied only once", ec);
    }
  }
  if (before_chunked > 0) {  // e.g. "gzip, chunked": this server decodes none of them
    return Refuse(501,
                  absl::StrCat("transfer coding \"", transfer_codings_[0],
                               "\" is not implemented; only chunked is"),
                  ec);
  }
  // Beast must frame the body the same way; it does not when, e.g., chunked carries
  // parameters ("chunked;x=1").
  if (!chunked()) {
    return Refuse(400, "malformed Transfer-Encoding: only \"chunked\" is accepted", ec);
  }
}

void RequestParser::on_body_init_impl(const boost::optional<std::uint64_t>& content_length,
                                      beast::error_code& ec) {
  // Beast checked Content-Length against the body limit before this.
  if (content_length) Guarded(ec, [&] { request_.body().reserve(*content_length); });
}

size_t RequestParser::on_body_impl(beast::string_view body, beast::error_code& ec) {
  Guarded(ec, [&] { request_.body().append(body.data(), body.size()); });
  return body.size();
}

size_t RequestParser::on_chunk_body_impl(std::uint64_t, beast::string_view body,
                                         beast::error_code& ec) {
  return on_body_impl(body, ec);
}


int StatusForHeaderLimit(const RequestParser& parser, absl::string_view unparsed) {
  // The request line was read (and its target checked): the header fields, or the trailers.
  if (parser.request_line_done()) return 431;
  // Beast stopped before the request line was complete: find where it ends in the buffer.
  size_t line_end = unparsed.find("\r\n");
  if (line_end == absl::string_view::npos || line_end > kMaxTargetBytes) return 414;
  return 431;
}

}  // namespace aijobs::gateway
