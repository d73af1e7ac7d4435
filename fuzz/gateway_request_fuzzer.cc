// Fuzz target: the gateway's whole request path from the raw bytes of one connection. The
// bytes are read as HttpServer's Session reads them (RequestParser, a read buffer capped at
// kMaxBufferedBytes, keep-alive and pipelining), and every request read is taken through the
// steps of Gateway::Handle/HandleRoute: metadata from headers, route lookup, the JSON
// Content-Type check, the request mapper (query + JSON body -> proto, with its depth check),
// the resume point of a stream, and serialization of the upstream request.
//
// Gateway::Handle itself cannot be driven here: an HttpExchange needs a live Session (a
// socket). So this target repeats Handle's steps in order, and a deterministic in-process
// stand-in for the scheduler (EchoUpstream below) parses the serialized request and answers
// it, so the response side (proto -> JSON, SSE framing, response metadata) runs too.
// Nothing touches the network; no clock or random value changes what runs.
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "aijobs/v1/job_service.pb.h"
#include "gateway/call_metadata.h"
#include "gateway/gateway.h"
#include "gateway/http_request_parser.h"
#include "gateway/http_server.h"
#include "gateway/sse.h"
#include "gateway/transcoding/request_mapper.h"
#include "gateway/transcoding/route_table.h"
#include "google/protobuf/message.h"
#include "google/protobuf/stubs/logging.h"

namespace aijobs::gateway {
namespace {

namespace beast = boost::beast;
namespace net = boost::asio;
namespace pb = google::protobuf;

// Requests served per input at most (a pipelined input could hold thousands of tiny ones).
constexpr int kMaxRequestsPerConnection = 16;
constexpr char kJobId[] = "0b0e4a5e-3c1d-4f7a-9b2e-6d5c4b3a2f10";

// A SyncReadStream over fixed bytes, handed out in slices of varying size (TCP delivers a
// request in pieces split anywhere), then end of stream.
class BytesStream {
 public:
  explicit BytesStream(absl::string_view bytes) : bytes_(bytes) {}

  template <typename MutableBufferSequence>
  size_t read_some(const MutableBufferSequence& buffers) {
    beast::error_code ec;
    size_t n = read_some(buffers, ec);
    if (ec) throw beast::system_error(ec);
    return n;
  }

  template <typename MutableBufferSequence>
  size_t read_some(const MutableBufferSequence& buffers, beast::error_code& ec) {
    ec = {};
    if (bytes_.empty()) {
      ec = net::error::eof;
      return 0;
    }
    static constexpr size_t kSlices[] = {4096, 1, 13, 512, 3, 65536, 100};
    size_t want = kSlices[slice_++ % (sizeof(kSlices) / sizeof(kSlices[0]))];
    size_t n = net::buffer_copy(buffers, net::buffer(bytes_.data(), std::min(want, bytes_.size())));
    bytes_.remove_prefix(n);
    return n;
  }

 private:
  absl::string_view bytes_;
  size_t slice_ = 0;
};

std::string ToStd(beast::string_view s) { return std::string(s.data(), s.size()); }

const RouteTable& Routes() {
  static const RouteTable* const routes = [] {
    // The generated descriptors register themselves only when referenced (static link).
    static_cast<void>(v1::GetJobRequest::descriptor());
    const pb::ServiceDescriptor* service =
        pb::DescriptorPool::generated_pool()->FindServiceByName("aijobs.v1.JobService");
    absl::StatusOr<RouteTable> table = RouteTable::FromServices({service});
    if (!table.ok()) std::abort();
    return new RouteTable(*std::move(table));
  }();
  return *routes;
}

// As the gateway configures the mapper (strict JSON, last_event_id consumed by the gateway).
const JsonOptions& MapperOptions() {
  static const JsonOptions* const options = new JsonOptions{false, false, {"last_event_id"}};
  return *options;
}

// Stands in for the scheduler: parses the request bytes into the method's input type, as the
// server would, and answers with a message of the method's output type made from it.
std::unique_ptr<pb::Message> EchoUpstream(const Route& route, const std::string& wire) {
  std::unique_ptr<pb::Message> request(
      pb::MessageFactory::generated_factory()->GetPrototype(route.method->input_type())->New());
  if (!request->ParseFromString(wire)) return nullptr;
  v1::Job job;
  job.set_id(kJobId);
  job.set_state(v1::QUEUED);
  job.set_last_seq(7);
  if (auto* submit = dynamic_cast<v1::SubmitJobRequest*>(request.get())) {
    job.set_type(submit->type());
    *job.mutable_input() = submit->input();
    job.set_priority(submit->priority());
    job.set_max_attempts(submit->max_attempts());
    job.set_idempotency_key(submit->idempotency_key());
    job.mutable_labels()->insert(submit->labels().begin(), submit->labels().end());
    *job.mutable_timeout() = submit->timeout();
  }
  std::unique_ptr<pb::Message> reply(
      pb::MessageFactory::generated_factory()->GetPrototype(route.method->output_type())->New());
  if (auto* j = dynamic_cast<v1::Job*>(reply.get())) {
    *j = job;
  } else if (auto* list = dynamic_cast<v1::ListJobsResponse*>(reply.get())) {
    *list->add_jobs() = job;
    if (auto* q = dynamic_cast<v1::ListJobsRequest*>(request.get())) {
      list->set_next_page_token(q->page_token());
    }
  } else if (auto* event = dynamic_cast<v1::JobEvent*>(reply.get())) {
    event->set_job_id(kJobId);
    event->set_seq(8);
    *event->mutable_final_job() = job;
  } else if (auto* put = dynamic_cast<v1::PutCachedResultResponse*>(reply.get())) {
    put->set_key(std::string(64, 'a'));
    put->mutable_expires_at()->set_seconds(1700000000);
  }
  return reply;
}

// What the gateway does with the upstream's answer of a successful call.
void Respond(const HttpRequest& req, const Route& route, const pb::Message& reply, bool want_sse) {
  absl::StatusOr<std::string> json = ResponseToJson(route, reply, MapperOptions());
  if (!json.ok()) return;
  if (route.server_streaming) {
    std::string frame = want_sse ? FormatSseEvent("final_job", "8", *json)
                                 : FormatNdjsonResult(*json);
    static_cast<void>(frame);
    return;
  }
  std::multimap<std::string, std::string> initial = {
      {"x-http-code", "202"}, {"x-http-header-location", absl::StrCat("/v1/jobs/", kJobId)}};
  HttpResponseShape shape = ShapeFromResponseMetadata(initial, {});
  HttpResponse res = MakeResponse(req, shape.http_status.value_or(200), "application/json",
                                  *std::move(json));
  for (const auto& [k, v] : shape.headers) res.set(k, v);
}

// Gateway::Handle and HandleRoute, step by step, for one request read from the connection.
void HandleRequest(const HttpRequest& req) {
  std::string method = ToStd(req.method_string());
  std::string target = ToStd(req.target());
  size_t q = target.find('?');
  std::string path = target.substr(0, q);
  std::string query = q == std::string::npos ? "" : target.substr(q + 1);
  static_cast<void>(HostAllowed(ToStd(req[http::field::host]), GatewayOptions{}.allowed_hosts));
  if (path == "/" || path == "/healthz" || path == "/readyz" || path == "/metrics" ||
      path == "/openapi.json") {
    // Fixed endpoints: only the request id is read from the request.
    static_cast<void>(RequestIdFromHeader(ToStd(req["X-Request-Id"])));
    return;
  }

  HeaderList headers;
  for (const auto& field : req) {
    headers.emplace_back(ToStd(field.name_string()), ToStd(field.value()));
  }
  absl::StatusOr<CallMetadata> md = MetadataFromHeaders(headers, [] { return kJobId; });
  if (!md.ok()) return;

  std::vector<std::string> allowed;
  const bool preflight =
      method == "OPTIONS" && !req[http::field::access_control_request_method].empty();
  std::string lookup_method =
      preflight ? ToStd(req[http::field::access_control_request_method]) : method;
  absl::StatusOr<RouteTable::Match> match = Routes().Find(lookup_method, path, &allowed);
  if (method == "OPTIONS") {
    if (match.ok() && allowed.empty()) static_cast<void>(Routes().Find("", path, &allowed));
    return;
  }
  if (!match.ok()) return;
  const Route& route = *match->route;
  if (method != "GET" && method != "HEAD" && method != "DELETE" &&
      !IsJsonContentType(ToStd(req[http::field::content_type]))) {
    return;
  }

  std::unique_ptr<pb::Message> request(
      pb::MessageFactory::generated_factory()->GetPrototype(route.method->input_type())->New());
  if (!BuildRequest(route, match->bindings, query, req.body(), MapperOptions(), request.get())
           .ok()) {
    return;
  }

  bool want_sse = false;
  if (route.server_streaming) {
    if (route.client_streaming) return;
    std::string last_event_id = ToStd(req["Last-Event-ID"]);
    absl::StatusOr<std::vector<std::pair<std::string, std::string>>> params =
        ParseQueryString(query);
    if (params.ok()) {
      for (const auto& [k, v] : *params) {
        if (k == "last_event_id") last_event_id = v;
      }
    }
    if (!last_event_id.empty()) {
      const pb::FieldDescriptor* f = route.method->input_type()->FindFieldByName("after_seq");
      int64_t seq = 0;
      if (f == nullptr || f->cpp_type() != pb::FieldDescriptor::CPPTYPE_INT64) return;
      if (!absl::SimpleAtoi(last_event_id, &seq) || seq < 0) return;
      const pb::Reflection* r = request->GetReflection();
      if (seq > r->GetInt64(*request, f)) r->SetInt64(request.get(), f, seq);
    }
    want_sse = ToStd(req[http::field::accept]).find("text/event-stream") != std::string::npos;
  }

  // What goes upstream, and what comes back.
  std::string wire = request->SerializeAsString();
  std::unique_ptr<pb::Message> reply = EchoUpstream(route, wire);
  if (reply != nullptr) Respond(req, route, *reply, want_sse);
}

// Session::ReadHeader/OnHeader/ReadBody/HandleRequest for one connection: requests are read
// one after the other from the same buffer until the connection would close.
void ServeConnection(absl::string_view bytes) {
  BytesStream stream(bytes);
  beast::flat_buffer buffer{kMaxBufferedBytes};
  for (int i = 0; i < kMaxRequestsPerConnection; ++i) {
    RequestParser parser;
    parser.body_limit(HttpServerOptions{}.max_body_bytes);
    beast::error_code ec;
    http::read_header(stream, buffer, parser, ec);
    // "Expect: 100-continue" only makes the session answer 100 before it reads the body.
    if (!ec && !parser.is_done()) http::read(stream, buffer, parser, ec);
    if (ec) return;  // refused, malformed or cut off: the session answers (or not) and closes
    HttpRequest req = parser.release();
    const bool keep_alive = req.keep_alive();
    HandleRequest(req);
    if (!keep_alive) return;
  }
}

}  // namespace
}  // namespace aijobs::gateway

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Protobuf logs what it refuses (e.g. invalid UTF-8): noise, and slow.
  static const bool silenced = (google::protobuf::SetLogHandler(nullptr), true);
  static_cast<void>(silenced);
  aijobs::gateway::ServeConnection(
      absl::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
