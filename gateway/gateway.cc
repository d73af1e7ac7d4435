#include "gateway/gateway.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "aijobs/v1/admin_service.pb.h"
#include "aijobs/v1/job_service.pb.h"
#include "common/text.h"
#include "common/uuid.h"
#include "gateway/call_metadata.h"
#include "gateway/sse.h"
#include "gateway/transcoding/http_status.h"
#include "gateway/transcoding/openapi.h"
#include "spdlog/spdlog.h"

namespace aijobs::gateway {

namespace pb = google::protobuf;

namespace {

constexpr char kJson[] = "application/json";
constexpr absl::string_view kLastEventIdParam = "last_event_id";

std::string ToStd(boost::beast::string_view s) { return std::string(s.data(), s.size()); }

// Serialized straight into the slice gRPC sends (no intermediate string).
grpc::ByteBuffer Serialize(const pb::Message& message) {
  size_t size = message.ByteSizeLong();
  grpc::Slice slice(size);
  message.SerializeWithCachedSizesToArray(const_cast<uint8_t*>(slice.begin()));
  return grpc::ByteBuffer(&slice, 1);
}

bool Parse(const grpc::ByteBuffer& buffer, pb::Message* message) {
  std::vector<grpc::Slice> slices;
  if (!buffer.Dump(&slices).ok()) return false;
  if (slices.size() == 1) {  // The usual case for small messages: parse in place.
    return message->ParseFromArray(slices[0].begin(), static_cast<int>(slices[0].size()));
  }
  std::string bytes;
  bytes.reserve(buffer.Length());
  for (const grpc::Slice& s : slices) {
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return message->ParseFromString(bytes);
}

// The code's name as Abseil (and gRPC) spell it, e.g. "UNAVAILABLE": the label of
// upstream-error metrics.
std::string StatusCodeName(grpc::StatusCode code) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

std::multimap<std::string, std::string> ToStdMultimap(
    const std::multimap<grpc::string_ref, grpc::string_ref>& md) {
  std::multimap<std::string, std::string> out;
  for (const auto& [k, v] : md)
    out.emplace(std::string(k.data(), k.size()), std::string(v.data(), v.size()));
  return out;
}

// The name of the message's set oneof field (the event kind), or "message".
std::string EventName(const pb::Message& message) {
  const pb::Descriptor* d = message.GetDescriptor();
  for (int i = 0; i < d->oneof_decl_count(); ++i) {
    if (d->oneof_decl(i)->is_synthetic()) continue;  // proto3 `optional`, not a real oneof.
    const pb::FieldDescriptor* f =
        message.GetReflection()->GetOneofFieldDescriptor(message, d->oneof_decl(i));
    if (f != nullptr) return f->name();
  }
  return "message";
}

// The value of an integer or string field named `name`, as text ("" when absent).
std::string EventId(const pb::Message& message, const std::string& name) {
  const pb::FieldDescriptor* f = message.GetDescriptor()->FindFieldByName(name);
  if (f == nullptr || f->is_repeated()) return "";
  const pb::Reflection* r = message.GetReflection();
  switch (f->cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_INT64:
      return absl::StrCat(r->GetInt64(message, f));
    case pb::FieldDescriptor::CPPTYPE_UINT64:
      return absl::StrCat(r->GetUInt64(message, f));
    case pb::FieldDescriptor::CPPTYPE_INT32:
      return absl::StrCat(r->GetInt32(message, f));
    case pb::FieldDescriptor::CPPTYPE_UINT32:
      return absl::StrCat(r->GetUInt32(message, f));
    case pb::FieldDescriptor::CPPTYPE_STRING:
      return r->GetString(message, f);
    default:
      return "";
  }
}

}  // namespace

// What the gateway knows about a request before (and while) it is routed.
struct Gateway::RequestContext {
  std::string method;
  std::string path;
  std::string query;
  std::string origin;
  std::string route_label = "unmatched";
  std::string request_id;
  CallMetadata metadata;
  bool want_sse = false;
  std::string client_ip;  // the peer, or who a trusted proxy says it forwards for
  bool holds_stream_slot = false;
};

// Relays one server-streaming call to an HTTP client as SSE or NDJSON. The HTTP header goes
// out with the first message, so a call that fails at once (NOT_FOUND) is an ordinary error
// response. One message is in flight at a time: the next read starts when the previous
// frame was written to the socket, so a slow client costs bounded memory.
class StreamRelay final : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  StreamRelay(Gateway* gateway, std::shared_ptr<HttpExchange> exchange, Gateway::RequestContext rc,
              const Route* route)
      : gateway_(gateway), exchange_(std::move(exchange)), rc_(std::move(rc)), route_(route) {}

  void Start(std::shared_ptr<StreamRelay> self, const pb::Message& request) {
    self_ = self;
    request_ = Serialize(request);
    for (const auto& [k, v] : rc_.metadata.entries) context_.AddMetadata(k, v);
    if (rc_.metadata.timeout) {
      context_.set_deadline(absl::ToChronoTime(absl::Now() + *rc_.metadata.timeout));
    }
    std::weak_ptr<StreamRelay> weak = self;
    exchange_->OnClientGone([weak] {
      if (auto relay = weak.lock()) relay->context_.TryCancel();
    });
    gateway_->stub_.PrepareBidiStreamingCall(&context_, route_->grpc_path, grpc::StubOptions(),
                                             this);
    StartWriteLast(&request_, grpc::WriteOptions());
    StartRead(&response_);
    StartCall();
  }

  void Cancel() { context_.TryCancel(); }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // OnDone follows with the status.
    std::unique_ptr<pb::Message> message(pb::MessageFactory::generated_factory()
                                             ->GetPrototype(route_->method->output_type())
                                             ->New());
    if (!Parse(response_, message.get())) {
      parse_error_ = true;
      context_.TryCancel();
      return;
    }
    absl::StatusOr<std::string> json = ResponseToJson(*route_, *message, gateway_->json_options_);
    if (!json.ok()) {
      parse_error_ = true;
      context_.TryCancel();
      return;
    }
    if (!header_sent_) SendHeader();
    std::string frame =
        rc_.want_sse ? FormatSseEvent(EventName(*message),
                                      EventId(*message, gateway_->options_.event_id_field), *json)
                     : FormatNdjsonResult(*json);
    // The hold keeps OnDone (and our destruction) away until the next read is started.
    AddHold();
    exchange_->Write(std::move(frame), [this](bool written) {
      if (written) {
        StartRead(&response_);
      } else {
        context_.TryCancel();
      }
      RemoveHold();
    });
  }

  void OnDone(const grpc::Status& status) override {
    grpc::Status s = status;
    if (parse_error_) {
      s = grpc::Status(grpc::StatusCode::INTERNAL, "upstream sent a message that does not parse");
    }
    if (!s.ok()) gateway_->metrics_.RecordUpstreamError(StatusCodeName(s.error_code()));
    int http_status = 200;
    if (!header_sent_) {
      if (s.ok()) {
        SendHeader();
        exchange_->EndStream();
      } else {
        http_status = HttpStatusFromGrpc(s.error_code());
        gateway_->FinishError(exchange_, rc_, s.error_code(), s.error_message());
        http_status = -1;  // FinishError recorded the request.
      }
    } else {
      if (!s.ok() && s.error_code() != grpc::StatusCode::CANCELLED) {
        std::string body = ErrorBodyJson(s.error_code(), s.error_message());
        exchange_->Write(rc_.want_sse ? FormatSseEvent("error", "", body)
                                      : FormatNdjsonError(body));
      }
      exchange_->EndStream();
      gateway_->metrics_.StreamClosed();
    }
    if (http_status >= 0) {
      gateway_->metrics_.RecordRequest(rc_.route_label, http_status,
                                       absl::Now() - exchange_->received_at());
    }
    gateway_->Unregister(this, rc_);
    exchange_.reset();
    self_.reset();  // May destroy this.
  }

 private:
  void SendHeader() {
    header_sent_ = true;
    gateway_->metrics_.StreamOpened();
    HttpStreamHeader header(http::status::ok, exchange_->request().version());
    if (rc_.want_sse) {
      header.set(http::field::content_type, "text/event-stream; charset=utf-8");
      header.set(http::field::cache_control, "no-cache");
      header.set("X-Accel-Buffering", "no");
    } else {
      header.set(http::field::content_type, "application/x-ndjson");
    }
    header.set("X-Request-Id", rc_.request_id);
    gateway_->AddCorsHeaders(rc_, &header);
    if (rc_.want_sse) {
      exchange_->StartStream(std::move(header), gateway_->options_.sse_heartbeat,
                             std::string(kSseHeartbeat));
    } else {
      exchange_->StartStream(std::move(header));
    }
  }

  Gateway* const gateway_;
  std::shared_ptr<HttpExchange> exchange_;
  const Gateway::RequestContext rc_;
  const Route* const route_;
  std::shared_ptr<StreamRelay> self_;
  grpc::ClientContext context_;
  grpc::ByteBuffer request_;
  grpc::ByteBuffer response_;
  // Touched only from reactions, which gRPC never runs concurrently for one call's reads.
  bool header_sent_ = false;
  bool parse_error_ = false;
};

absl::StatusOr<std::unique_ptr<Gateway>> Gateway::Create(const GatewayOptions& options,
                                                         std::shared_ptr<grpc::Channel> channel) {
  // The services' descriptors are registered by their generated code, which a static link
  // drops unless something references it.
  static_cast<void>(aijobs::v1::GetJobRequest::descriptor());
  static_cast<void>(aijobs::v1::CreateApiKeyRequest::descriptor());
  std::vector<const pb::ServiceDescriptor*> services;
  for (const std::string& name : options.services) {
    const pb::ServiceDescriptor* s = pb::DescriptorPool::generated_pool()->FindServiceByName(name);
    if (s == nullptr) {
      return absl::NotFoundError(absl::StrCat("service \"", name, "\" is not compiled in"));
    }
    services.push_back(s);
  }
  absl::StatusOr<RouteTable> routes = RouteTable::FromServices(services);
  if (!routes.ok()) return routes.status();
  return std::unique_ptr<Gateway>(new Gateway(options, std::move(*routes), std::move(channel)));
}

Gateway::Gateway(const GatewayOptions& options, RouteTable routes,
                 std::shared_ptr<grpc::Channel> channel)
    : options_(options),
      routes_(std::move(routes)),
      json_options_{options.lenient_json, false, {std::string(kLastEventIdParam)}},
      channel_(std::move(channel)),
      stub_(channel_),
      health_stub_(grpc::health::v1::Health::NewStub(channel_)),
      openapi_json_(BuildOpenApiJson(routes_, "aijobs", options.api_version)),
      page_csp_(ContentSecurityPolicyFor(WebIndexHtml())) {
  if (options_.anonymous_requests_per_minute > 0) {
    anonymous_rate_ = std::make_unique<PerClientRate>(options_.anonymous_requests_per_minute,
                                                      options_.anonymous_burst);
  }
}

Gateway::~Gateway() {
  // A relay's OnDone uses the gateway (metrics, Unregister): let them all run first.
  CancelStreams();
  if (!WaitForStreamsToEnd(absl::Seconds(5))) {
    spdlog::error("gateway destroyed with {} stream relays still running", OpenStreams());
  }
}

void Gateway::CancelStreams() {
  absl::MutexLock lock(&mu_);
  streams_cancelled_ = true;
  for (StreamRelay* r : relays_) r->Cancel();
}

bool Gateway::WaitForStreamsToEnd(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto all_done = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return relays_.empty(); };
  return mu_.AwaitWithTimeout(absl::Condition(&all_done), timeout);
}

size_t Gateway::OpenStreams() {
  absl::MutexLock lock(&mu_);
  return relays_.size();
}

void Gateway::Unregister(StreamRelay* relay, const RequestContext& rc) {
  if (rc.holds_stream_slot) streams_per_ip_.Release(rc.client_ip);
  absl::MutexLock lock(&mu_);
  relays_.erase(relay);
}

bool Gateway::OriginAllowed(absl::string_view origin) const {
  if (origin.empty()) return false;
  for (const std::string& o : options_.cors_allowed_origins) {
    if (o == "*" || o == origin) return true;
  }
  return false;
}

template <typename Message>
void Gateway::AddCorsHeaders(const RequestContext& rc, Message* response) const {
  if (!OriginAllowed(rc.origin)) return;
  response->set(http::field::access_control_allow_origin, rc.origin);
  response->set(http::field::vary, "Origin");
  response->set(http::field::access_control_expose_headers, "Location, X-Request-Id");
}

void Gateway::AddCommonHeaders(const RequestContext& rc, HttpResponse* response) const {
  if (!rc.request_id.empty()) response->set("X-Request-Id", rc.request_id);
  AddCorsHeaders(rc, response);
}

void Gateway::Finish(const std::shared_ptr<HttpExchange>& exchange, const RequestContext& rc,
                     HttpResponse response) {
  AddCommonHeaders(rc, &response);
  int status = response.result_int();
  absl::Duration latency = absl::Now() - exchange->received_at();
  metrics_.RecordRequest(rc.route_label, status, latency);
  if (options_.access_log || status >= 500) {
    auto level = status >= 500 ? spdlog::level::warn : spdlog::level::info;
    spdlog::log(level, "request_id={} {} {} -> {} in {:.3f} ms", rc.request_id, rc.method, rc.path,
                status, absl::ToDoubleMilliseconds(latency));
  }
  exchange->Respond(std::move(response));
}

void Gateway::FinishError(const std::shared_ptr<HttpExchange>& exchange, const RequestContext& rc,
                          int grpc_code, absl::string_view message,
                          const std::string& retry_after) {
  int status = HttpStatusFromGrpc(static_cast<grpc::StatusCode>(grpc_code));
  HttpResponse res =
      MakeResponse(exchange->request(), status, kJson, ErrorBodyJson(grpc_code, message));
  if (status == 401) {
    const bool had_credential =
        exchange->request().find(http::field::authorization) != exchange->request().end();
    res.set(http::field::www_authenticate, WwwAuthenticateValue(had_credential, message));
  }
  if (!retry_after.empty()) res.set(http::field::retry_after, retry_after);
  Finish(exchange, rc, std::move(res));
}

HttpResponse Gateway::RejectUnreadable(int http_status, absl::string_view reason) {
  int code = http_status == 413   ? grpc::StatusCode::RESOURCE_EXHAUSTED
             : http_status == 501 ? grpc::StatusCode::UNIMPLEMENTED
                                  : grpc::StatusCode::INVALID_ARGUMENT;
  HttpResponse res(static_cast<http::status>(http_status), 11);
  res.set(http::field::content_type, kJson);
  res.body() = ErrorBodyJson(code, reason);
  metrics_.RecordRequest("unreadable", http_status, absl::ZeroDuration());
  return res;
}

namespace {

// The request's X-Request-Id when it is a valid one, else a new id.
std::string RequestIdOrNew(const HttpRequest& req) {
  absl::StatusOr<std::string> id = RequestIdFromHeader(ToStd(req["X-Request-Id"]));
  return id.ok() && !id->empty() ? *std::move(id) : NewUuid();
}

}  // namespace

void Gateway::Handle(std::shared_ptr<HttpExchange> exchange) {
  const HttpRequest& req = exchange->request();
  RequestContext rc;
  rc.method = ToStd(req.method_string());
  std::string target = ToStd(req.target());
  size_t q = target.find('?');
  rc.path = target.substr(0, q);
  if (q != std::string::npos) rc.query = target.substr(q + 1);
  rc.origin = ToStd(req[http::field::origin]);

  // Operational endpoints: no upstream call (but /readyz), fixed route labels.
  static const absl::flat_hash_set<std::string>* const kFixed =
      new absl::flat_hash_set<std::string>{"/", "/healthz", "/readyz", "/metrics", "/openapi.json"};
  if (rc.path != "/healthz" && rc.path != "/readyz" &&
      !HostAllowed(ToStd(req[http::field::host]), options_.allowed_hosts)) {
    rc.route_label = "host_not_allowed";
    rc.request_id = RequestIdOrNew(req);
    std::string host = ToStd(req[http::field::host]);
    return Finish(exchange, rc,
                  MakeResponse(req, 400, kJson,
                               ErrorBodyJson(grpc::StatusCode::INVALID_ARGUMENT,
                                             absl::StrCat("Host \"", aijobs::Utf8Prefix(host, 64),
                                                          "\" is not served here (the "
                                                          "gateway's --allowed_hosts)"))));
  }
  if (kFixed->contains(rc.path)) {
    rc.route_label = rc.path;
    // Echoed like on every route (a malformed one is replaced, these answer regardless).
    rc.request_id = RequestIdOrNew(req);
    if (rc.method == "OPTIONS") {
      HttpResponse res = MakeResponse(req, 204, "text/plain", "");
      res.set(http::field::allow, "GET, OPTIONS");
      if (OriginAllowed(rc.origin)) {
        res.set(http::field::access_control_allow_methods, "GET, OPTIONS");
        res.set(http::field::access_control_max_age, "600");
      }
      return Finish(exchange, rc, std::move(res));
    }
    if (rc.method != "GET") {
      HttpResponse res = MakeResponse(
          req, 405, kJson,
          ErrorBodyJson(grpc::StatusCode::UNIMPLEMENTED,
                        absl::StrCat(rc.method, " is not allowed on ", rc.path, "; use GET")));
      res.set(http::field::allow, "GET, OPTIONS");
      return Finish(exchange, rc, std::move(res));
    }
    if (rc.path == "/healthz") {
      return Finish(exchange, rc, MakeResponse(req, 200, kJson, R"({"status":"ok"})"));
    }
    if (rc.path == "/readyz") return HandleReadyz(std::move(exchange), std::move(rc));
    if (rc.path == "/metrics") {
      const std::string client = ClientAddress(exchange->peer_ip(), ToStd(req["X-Forwarded-For"]),
                                               options_.trusted_proxies);
      if (!options_.metrics_allowed.empty() && !options_.metrics_allowed.Contains(client)) {
        return Finish(exchange, rc,
                      MakeResponse(req, 403, kJson,
                                   ErrorBodyJson(grpc::StatusCode::PERMISSION_DENIED,
                                                 "/metrics is not served to this address (the "
                                                 "gateway's --metrics_allowed)")));
      }
      return Finish(exchange, rc,
                    MakeResponse(req, 200, "text/plain; version=0.0.4; charset=utf-8",
                                 metrics_.RenderPrometheus()));
    }
    if (rc.path == "/openapi.json") {
      return Finish(exchange, rc, MakeResponse(req, 200, kJson, openapi_json_));
    }
    HttpResponse page =
        MakeResponse(req, 200, "text/html; charset=utf-8", std::string(WebIndexHtml()));
    page.set(http::field::cache_control, "no-cache");
    page.set("Content-Security-Policy", page_csp_);
    page.set("X-Content-Type-Options", "nosniff");
    page.set("X-Frame-Options", "DENY");
    page.set("Referrer-Policy", "no-referrer");
    return Finish(exchange, rc, std::move(page));
  }
  HandleRoute(std::move(exchange), std::move(rc));
}

void Gateway::HandleRoute(std::shared_ptr<HttpExchange> exchange, RequestContext rc) {
  const HttpRequest& req = exchange->request();
  HeaderList headers;
  for (const auto& field : req)
    headers.emplace_back(ToStd(field.name_string()), ToStd(field.value()));
  absl::StatusOr<CallMetadata> md = MetadataFromHeaders(headers, [] { return NewUuid(); });
  if (!md.ok()) {
    // Echo the caller's request id when that header was fine (another one was not).
    rc.request_id = RequestIdOrNew(req);
    if (md.status().code() == absl::StatusCode::kResourceExhausted) {
      return Finish(
          exchange, rc,
          MakeResponse(req, 431, kJson,
                       ErrorBodyJson(grpc::StatusCode::INVALID_ARGUMENT, md.status().message())));
    }
    return FinishError(exchange, rc, grpc::StatusCode::INVALID_ARGUMENT, md.status().message());
  }
  rc.request_id = md->request_id;
  rc.metadata = std::move(*md);
  rc.client_ip =
      ClientAddress(exchange->peer_ip(), ToStd(req["X-Forwarded-For"]), options_.trusted_proxies);
  // Callers without a credential are held to a request rate per address for anything that
  // changes state (the public job types are open to the whole internet).
  if (anonymous_rate_ != nullptr && req.find(http::field::authorization) == req.end() &&
      rc.method != "GET" && rc.method != "HEAD" && rc.method != "OPTIONS") {
    absl::Duration wait;
    if (!anonymous_rate_->Allow(rc.client_ip, absl::Now(), &wait)) {
      HttpResponse res = MakeResponse(
          req, 429, kJson,
          ErrorBodyJson(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        absl::StrCat("too many requests without a credential from this address "
                                     "(the gateway's --anonymous_requests_per_minute); retry in ",
                                     absl::FormatDuration(wait))));
      res.set(http::field::retry_after, absl::StrCat(absl::ToInt64Seconds(wait)));
      return Finish(exchange, rc, std::move(res));
    }
  }

  std::vector<std::string> allowed;
  // A preflight asks about the method it names; anything else about its own.
  const bool preflight =
      rc.method == "OPTIONS" && !req[http::field::access_control_request_method].empty();
  std::string lookup_method =
      preflight ? ToStd(req[http::field::access_control_request_method]) : rc.method;
  absl::StatusOr<RouteTable::Match> match = routes_.Find(lookup_method, rc.path, &allowed);
  if (rc.method == "OPTIONS") {
    rc.route_label = "OPTIONS";
    if (!match.ok() && allowed.empty()) {
      return FinishError(exchange, rc, grpc::StatusCode::NOT_FOUND,
                         absl::StrCat("no route for ", rc.path));
    }
    if (match.ok() && allowed.empty()) {
      // No route has the method "": Find lists every method of this path instead.
      static_cast<void>(routes_.Find("", rc.path, &allowed));
      if (allowed.empty()) allowed.push_back(lookup_method);
    }
    allowed.push_back("OPTIONS");
    std::string allow = absl::StrJoin(allowed, ", ");
    HttpResponse res = MakeResponse(req, 204, "text/plain", "");
    res.set(http::field::allow, allow);
    if (preflight && OriginAllowed(rc.origin)) {
      res.set(http::field::access_control_allow_methods, allow);
      std::string asked = ToStd(req[http::field::access_control_request_headers]);
      res.set(http::field::access_control_allow_headers,
              asked.empty() ? "Content-Type, Authorization, X-Request-Id, Last-Event-ID" : asked);
      res.set(http::field::access_control_max_age, "600");
    }
    return Finish(exchange, rc, std::move(res));
  }
  if (!match.ok()) {
    if (!allowed.empty()) {
      rc.route_label = "method_not_allowed";
      allowed.push_back("OPTIONS");
      HttpResponse res =
          MakeResponse(req, 405, kJson,
                       ErrorBodyJson(grpc::StatusCode::UNIMPLEMENTED,
                                     absl::StrCat(rc.method, " is not allowed on ", rc.path,
                                                  "; allowed: ", absl::StrJoin(allowed, ", "))));
      res.set(http::field::allow, absl::StrJoin(allowed, ", "));
      return Finish(exchange, rc, std::move(res));
    }
    return FinishError(exchange, rc, grpc::StatusCode::NOT_FOUND,
                       absl::StrCat("no route for ", rc.method, " ", rc.path));
  }
  const Route& route = *match->route;
  rc.route_label = route.label;
  // A web page may make a browser send a POST with a form or text/plain body (or none) to
  // any site without asking first; only a JSON request needs a CORS preflight. So a call
  // that changes something must say it is JSON, or other sites could submit, cancel or
  // retry with a signed-in user's browser.
  if (rc.method != "GET" && rc.method != "HEAD" && rc.method != "DELETE" &&
      !IsJsonContentType(ToStd(req[http::field::content_type]))) {
    return Finish(
        exchange, rc,
        MakeResponse(req, 415, kJson,
                     ErrorBodyJson(grpc::StatusCode::INVALID_ARGUMENT,
                                   absl::StrCat(rc.method, " ", rc.path,
                                                " needs Content-Type: application/json"))));
  }

  std::unique_ptr<pb::Message> request(
      pb::MessageFactory::generated_factory()->GetPrototype(route.method->input_type())->New());
  absl::Status built =
      BuildRequest(route, match->bindings, rc.query, req.body(), json_options_, request.get());
  if (!built.ok()) {
    return FinishError(exchange, rc, static_cast<int>(built.code()), built.message());
  }

  if (!route.server_streaming) {
    return CallUnary(std::move(exchange), std::move(rc), *match, std::move(request));
  }
  if (route.client_streaming) {
    return FinishError(exchange, rc, grpc::StatusCode::UNIMPLEMENTED,
                       "client-streaming methods are not served over HTTP");
  }
  // Resume point: Last-Event-ID (what EventSource sends on reconnect) or ?last_event_id=.
  std::string last_event_id = ToStd(req["Last-Event-ID"]);
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> params =
      ParseQueryString(rc.query);
  if (params.ok()) {
    for (const auto& [k, v] : *params) {
      if (k == kLastEventIdParam) last_event_id = v;
    }
  }
  if (!last_event_id.empty()) {
    const pb::FieldDescriptor* f =
        route.method->input_type()->FindFieldByName(options_.resume_field);
    int64_t seq = 0;
    if (f == nullptr || f->cpp_type() != pb::FieldDescriptor::CPPTYPE_INT64 || f->is_repeated()) {
      return FinishError(exchange, rc, grpc::StatusCode::INVALID_ARGUMENT,
                         absl::StrCat(route.method->full_name(),
                                      " cannot resume: its request has "
                                      "no int64 field ",
                                      options_.resume_field));
    }
    if (!absl::SimpleAtoi(last_event_id, &seq) || seq < 0) {
      return FinishError(
          exchange, rc, grpc::StatusCode::INVALID_ARGUMENT,
          absl::StrCat("Last-Event-ID \"", last_event_id, "\" is not a non-negative event id"));
    }
    const pb::Reflection* r = request->GetReflection();
    if (seq > r->GetInt64(*request, f)) r->SetInt64(request.get(), f, seq);
  }
  rc.want_sse = absl::StrContains(ToStd(req[http::field::accept]), "text/event-stream");
  if (!streams_per_ip_.TryAcquire(rc.client_ip, options_.max_streams_per_ip)) {
    HttpResponse res = MakeResponse(
        req, 429, kJson,
        ErrorBodyJson(grpc::StatusCode::RESOURCE_EXHAUSTED,
                      absl::StrCat("too many open event streams from this address (the "
                                   "gateway's --max_streams_per_ip, ",
                                   options_.max_streams_per_ip, "); close one or retry later")));
    res.set(http::field::retry_after, "1");
    return Finish(exchange, rc, std::move(res));
  }
  rc.holds_stream_slot = true;
  auto relay = std::make_shared<StreamRelay>(this, exchange, std::move(rc), &route);
  bool cancelled;
  {
    absl::MutexLock lock(&mu_);
    relays_.insert(relay.get());
    cancelled = streams_cancelled_;
  }
  relay->Start(relay, *request);
  // Shutting down: end it at once (a call that already finished ignores TryCancel).
  if (cancelled) relay->Cancel();
}

namespace {

// A failed call whose request may still have been carried out: the gateway cannot tell a
// request that never reached the scheduler from an answer that never came back.
bool OutcomeUnknown(grpc::StatusCode code) {
  return code == grpc::StatusCode::DEADLINE_EXCEEDED || code == grpc::StatusCode::UNAVAILABLE ||
         code == grpc::StatusCode::CANCELLED || code == grpc::StatusCode::UNKNOWN ||
         code == grpc::StatusCode::INTERNAL;
}

}  // namespace

// One unary HTTP request: the upstream call, and its one retry when that is safe.
struct Gateway::UnaryCall {
  std::shared_ptr<HttpExchange> exchange;
  RequestContext rc;
  const Route* route = nullptr;
  grpc::ByteBuffer request;
  // A POST changes something; with an idempotency key it may be sent again safely.
  bool changes = false;
  std::string key;
  int attempts = 0;
  std::unique_ptr<grpc::ClientContext> context;
  grpc::ByteBuffer response;
};

void Gateway::CallUnary(std::shared_ptr<HttpExchange> exchange, RequestContext rc,
                        const RouteTable::Match& match, std::unique_ptr<pb::Message> request) {
  auto call = std::make_shared<UnaryCall>();
  call->route = match.route;
  call->changes = rc.method == "POST";
  const pb::FieldDescriptor* key_field =
      options_.idempotency_field.empty()
          ? nullptr
          : request->GetDescriptor()->FindFieldByName(options_.idempotency_field);
  if (call->changes && key_field != nullptr && !key_field->is_repeated() &&
      key_field->cpp_type() == pb::FieldDescriptor::CPPTYPE_STRING) {
    call->key = request->GetReflection()->GetString(*request, key_field);
    if (call->key.empty() && options_.assign_idempotency_keys) {
      call->key = absl::StrCat("gw-", NewUuid());
      request->GetReflection()->SetString(request.get(), key_field, call->key);
    }
  }
  call->request = Serialize(*request);
  call->exchange = std::move(exchange);
  const absl::Duration deadline = rc.metadata.timeout.value_or(options_.default_deadline);
  call->rc = std::move(rc);
  StartUnary(std::move(call), deadline);
}

void Gateway::StartUnary(std::shared_ptr<UnaryCall> call, absl::Duration deadline) {
  ++call->attempts;
  call->context = std::make_unique<grpc::ClientContext>();
  call->response.Clear();
  for (const auto& [k, v] : call->rc.metadata.entries) call->context->AddMetadata(k, v);
  call->context->set_deadline(absl::ToChronoTime(absl::Now() + deadline));
  grpc::ClientContext* context = call->context.get();
  stub_.UnaryCall(context, call->route->grpc_path, grpc::StubOptions(), &call->request,
                  &call->response,
                  [this, call](grpc::Status status) { OnUnaryDone(call, std::move(status)); });
}

void Gateway::OnUnaryDone(std::shared_ptr<UnaryCall> call, grpc::Status status) {
  const Route* route = call->route;
  if (!status.ok()) {
    metrics_.RecordUpstreamError(StatusCodeName(status.error_code()));
    if (!call->changes || !OutcomeUnknown(status.error_code())) {
      // A refusal may say when to come back (an overloaded scheduler, a quota).
      HttpResponseShape shape =
          ShapeFromResponseMetadata(ToStdMultimap(call->context->GetServerInitialMetadata()),
                                    ToStdMultimap(call->context->GetServerTrailingMetadata()));
      std::string retry_after;
      for (const auto& [k, v] : shape.headers) {
        if (absl::EqualsIgnoreCase(k, "Retry-After")) retry_after = v;
      }
      return FinishError(call->exchange, call->rc, status.error_code(), status.error_message(),
                         retry_after);
    }
    // Sent again with the same idempotency key, the request either finds what the first
    // one did or does it now: either way the answer is definite.
    if (!call->key.empty() && call->attempts == 1) {
      return StartUnary(std::move(call), options_.retry_deadline);
    }
    HttpResponse res = MakeResponse(
        call->exchange->request(), HttpStatusFromGrpc(status.error_code()), kJson,
        ErrorBodyJson(status.error_code(),
                      call->key.empty()
                          ? absl::StrCat(status.error_message(),
                                         " (the request may have been carried out; send an "
                                         "idempotency key so that a retry cannot do it twice)")
                          : absl::StrCat(status.error_message(),
                                         " (the request may have been carried out: send it "
                                         "again with idempotency key \"",
                                         aijobs::Utf8Prefix(call->key, 64),
                                         "\" to find out without doing it twice)")));
    res.set(kOutcomeHeader, "unknown");
    if (!call->key.empty()) res.set(kIdempotencyKeyHeader, call->key);
    return Finish(call->exchange, call->rc, std::move(res));
  }
  // The upstream call succeeded: whatever goes wrong now, it was carried out.
  auto done_anyway = [&](absl::string_view why) {
    HttpResponse res = MakeResponse(
        call->exchange->request(), 500, kJson,
        ErrorBodyJson(grpc::StatusCode::INTERNAL,
                      absl::StrCat("the request was carried out, but its answer could not be "
                                   "converted to JSON: ",
                                   why)));
    res.set(kOutcomeHeader, "done");
    Finish(call->exchange, call->rc, std::move(res));
  };
  std::unique_ptr<pb::Message> response(
      pb::MessageFactory::generated_factory()->GetPrototype(route->method->output_type())->New());
  if (!Parse(call->response, response.get())) {
    return done_anyway("upstream sent a response that does not parse");
  }
  absl::StatusOr<std::string> json = ResponseToJson(*route, *response, json_options_);
  if (!json.ok()) return done_anyway(json.status().message());
  HttpResponseShape shape =
      ShapeFromResponseMetadata(ToStdMultimap(call->context->GetServerInitialMetadata()),
                                ToStdMultimap(call->context->GetServerTrailingMetadata()));
  HttpResponse res = MakeResponse(call->exchange->request(), shape.http_status.value_or(200), kJson,
                                  std::move(*json));
  for (const auto& [k, v] : shape.headers) res.set(k, v);
  Finish(call->exchange, call->rc, std::move(res));
}

void Gateway::HandleReadyz(std::shared_ptr<HttpExchange> exchange, RequestContext rc) {
  struct Check {
    grpc::ClientContext context;
    grpc::health::v1::HealthCheckRequest request;
    grpc::health::v1::HealthCheckResponse response;
  };
  auto check = std::make_shared<Check>();
  check->context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
  auto* rcp = new RequestContext(std::move(rc));
  health_stub_->async()->Check(
      &check->context, &check->request, &check->response,
      [this, check, exchange = std::move(exchange), rcp](grpc::Status status) {
        std::unique_ptr<RequestContext> rc(rcp);
        const HttpRequest& req = exchange->request();
        if (status.ok() &&
            check->response.status() == grpc::health::v1::HealthCheckResponse::SERVING) {
          return Finish(exchange, *rc, MakeResponse(req, 200, kJson, R"({"status":"ready"})"));
        }
        std::string why =
            status.ok() ? absl::StrCat("upstream health is ",
                                       grpc::health::v1::HealthCheckResponse::ServingStatus_Name(
                                           check->response.status()))
                        : absl::StrCat("upstream unreachable: ", status.error_message());
        Finish(exchange, *rc,
               MakeResponse(req, 503, kJson, ErrorBodyJson(grpc::StatusCode::UNAVAILABLE, why)));
      });
}

namespace {

// "Example.COM.:8080" -> {"example.com", "8080"}; "[::1]:80" -> {"[::1]", "80"}.
std::pair<std::string, std::string> SplitHost(absl::string_view value) {
  std::string lower = absl::AsciiStrToLower(absl::StripAsciiWhitespace(value));
  absl::string_view v = lower;
  absl::string_view name = v, port;
  size_t colon = v.rfind(':');
  if (colon != absl::string_view::npos && (v[0] != '[' || v.rfind(']') < colon)) {
    name = v.substr(0, colon);
    port = v.substr(colon + 1);
  }
  if (absl::EndsWith(name, ".")) name.remove_suffix(1);
  return {std::string(name), std::string(port)};
}

}  // namespace

bool HostAllowed(absl::string_view host, const std::vector<std::string>& allowed) {
  if (host.empty()) return true;  // HTTP/1.0 without Host: not a browser
  auto [name, port] = SplitHost(host);
  for (const std::string& entry : allowed) {
    if (entry == "*") return true;
    auto [want, want_port] = SplitHost(entry);
    if (!want_port.empty() && want_port != port) continue;
    if (absl::StartsWith(want, "*.")) {
      if (absl::EndsWith(name, want.substr(1)) && name.size() > want.size() - 1) return true;
    } else if (name == want) {
      return true;
    }
  }
  return false;
}

bool IsJsonContentType(absl::string_view value) {
  absl::string_view type = absl::StripAsciiWhitespace(value.substr(0, value.find(';')));
  std::string lower = absl::AsciiStrToLower(type);
  return lower == "application/json" ||
         (absl::StartsWith(lower, "application/") && absl::EndsWith(lower, "+json"));
}

std::string ContentSecurityPolicyFor(absl::string_view html) {
  // 'sha256-<base64>' of the text between each opening and closing tag.
  auto hashes = [html](absl::string_view open, absl::string_view close) {
    std::string out;
    size_t at = 0;
    while ((at = html.find(open, at)) != absl::string_view::npos) {
      size_t begin = at + open.size();
      size_t end = html.find(close, begin);
      if (end == absl::string_view::npos) break;
      absl::string_view body = html.substr(begin, end - begin);
      unsigned char digest[SHA256_DIGEST_LENGTH];
      SHA256(reinterpret_cast<const unsigned char*>(body.data()), body.size(), digest);
      unsigned char b64[4 * ((SHA256_DIGEST_LENGTH + 2) / 3) + 1];
      EVP_EncodeBlock(b64, digest, SHA256_DIGEST_LENGTH);
      absl::StrAppend(&out, " 'sha256-", reinterpret_cast<const char*>(b64), "'");
      at = end + close.size();
    }
    return out;
  };
  return absl::StrCat("default-src 'none'; script-src", hashes("<script>", "</script>"),
                      "; style-src", hashes("<style>", "</style>"),
                      "; connect-src 'self'; img-src 'self' data:; base-uri 'none'; "
                      "form-action 'none'; frame-ancestors 'none'");
}

}  // namespace aijobs::gateway
