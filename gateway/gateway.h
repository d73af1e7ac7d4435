// The aijobs HTTP gateway: a RequestHandler that transcodes REST/JSON to gRPC from the
// google.api.http annotations of the served services (routes come from the compiled
// descriptors; calls go out through gRPC's generic stub), serves server-streaming RPCs as
// Server-Sent Events (resumable with Last-Event-ID) or newline-delimited JSON, and answers
// /healthz, /readyz, /metrics, /openapi.json, CORS preflights and the web chat page at /.
//
//   auto gateway = Gateway::Create(options, grpc::CreateChannel(target, creds));
//   auto server = HttpServer::Start(http_options, gateway->get());
//   ...; gateway->CancelStreams(); gateway->WaitForStreamsToEnd(absl::Seconds(5));
//   server->Shutdown();
#pragma once

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "gateway/client_limits.h"
#include "gateway/http_server.h"
#include "gateway/metrics.h"
#include "gateway/transcoding/request_mapper.h"
#include "gateway/transcoding/route_table.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace aijobs::gateway {

struct GatewayOptions {
  // Fully-qualified names of the gRPC services to expose.
  std::vector<std::string> services = {"aijobs.v1.JobService", "aijobs.v1.AdminService"};
  // Deadline of unary calls without a Grpc-Timeout header. Streams get none by default: a
  // watch lives as long as its client.
  absl::Duration default_deadline = absl::Seconds(30);
  // Accept unknown JSON fields and query parameters (dropped) instead of answering 400.
  bool lenient_json = false;
  // Origins allowed to call from a browser; "*" allows any. Empty: no CORS headers.
  std::vector<std::string> cors_allowed_origins;
  // A comment frame is sent on an idle event stream this often.
  absl::Duration sse_heartbeat = absl::Seconds(15);
  // The request field that resumes a stream (set from Last-Event-ID / ?last_event_id=) and
  // the response field whose value becomes the SSE `id:`.
  std::string resume_field = "after_seq";
  std::string event_id_field = "seq";
  // Log one line per request (otherwise only failures are logged).
  bool access_log = false;
  // Shown in /openapi.json.
  std::string api_version = "v1";
  // A POST whose call fails in a way that leaves its outcome unknown (DEADLINE_EXCEEDED,
  // UNAVAILABLE, CANCELLED, UNKNOWN, INTERNAL) is sent once more, with this deadline, when
  // its request has a non-empty string field of this name (the retry cannot do it twice);
  // when that fails too, the error response carries `Aijobs-Outcome: unknown` and the key.
  std::string idempotency_field = "idempotency_key";
  absl::Duration retry_deadline = absl::Seconds(5);
  // A POST without one gets a key of its own ("gw-<uuid>"), so that such a failure is always
  // resolved by the retry: the client then learns for certain whether its job exists.
  bool assign_idempotency_keys = true;
  // Host header values served (a name, optionally :port; "*.example.com" for subdomains;
  // "*" for any): others are 400, which defeats DNS rebinding. /healthz and /readyz answer
  // any Host (probes use the pod address).
  std::vector<std::string> allowed_hosts = {"localhost", "127.0.0.1", "[::1]"};
  // Peers whose X-Forwarded-For names the client (a load balancer, an ingress); the client
  // address is otherwise the connection's peer.
  TrustedProxies trusted_proxies;
  // Event streams one client address may hold open (0: unlimited); more are 429.
  int max_streams_per_ip = 32;
  // Requests without a credential that change something (POST, DELETE, ...) per client
  // address: this many a minute on average, in bursts of anonymous_burst (0: unlimited).
  double anonymous_requests_per_minute = 60;
  double anonymous_burst = 20;
  // Client addresses (and CIDR networks) that may read /metrics; empty: any.
  TrustedProxies metrics_allowed;
};

// Set on an error response when it says whether the request was carried out: "unknown" (it
// may have been; see GatewayOptions::idempotency_field) or "done" (it was; only its answer
// failed). Absent: a failed request changed nothing.
inline constexpr char kOutcomeHeader[] = "Aijobs-Outcome";
// With Aijobs-Outcome: unknown, the idempotency key to send the request again with.
inline constexpr char kIdempotencyKeyHeader[] = "Aijobs-Idempotency-Key";

class StreamRelay;

class Gateway final : public RequestHandler {
 public:
  // Builds the route table from the services' descriptors; INVALID_ARGUMENT naming the
  // method for a bad annotation, NOT_FOUND for an unknown service name.
  static absl::StatusOr<std::unique_ptr<Gateway>> Create(const GatewayOptions& options,
                                                         std::shared_ptr<grpc::Channel> channel);
  ~Gateway() override;

  void Handle(std::shared_ptr<HttpExchange> exchange) override;
  HttpResponse RejectUnreadable(int http_status, absl::string_view reason) override;

  // Cancels every open upstream stream (for shutdown); their clients see the stream end.
  // Streams that open afterwards are cancelled as they start.
  void CancelStreams();
  // Waits until every stream relay has finished (written its last chunk and let go of the
  // gateway), for at most `timeout`; returns whether they all did. Call after CancelStreams.
  bool WaitForStreamsToEnd(absl::Duration timeout);
  // Stream relays not finished yet.
  size_t OpenStreams();

  GatewayMetrics& metrics() { return metrics_; }
  const RouteTable& routes() const { return routes_; }

 private:
  friend class StreamRelay;
  Gateway(const GatewayOptions& options, RouteTable routes, std::shared_ptr<grpc::Channel> channel);

  struct RequestContext;
  void HandleRoute(std::shared_ptr<HttpExchange> exchange, RequestContext rc);
  struct UnaryCall;
  void CallUnary(std::shared_ptr<HttpExchange> exchange, RequestContext rc,
                 const RouteTable::Match& match,
                 std::unique_ptr<google::protobuf::Message> request);
  void StartUnary(std::shared_ptr<UnaryCall> call, absl::Duration deadline);
  void OnUnaryDone(std::shared_ptr<UnaryCall> call, grpc::Status status);
  void HandleReadyz(std::shared_ptr<HttpExchange> exchange, RequestContext rc);
  void Finish(const std::shared_ptr<HttpExchange>& exchange, const RequestContext& rc,
              HttpResponse response);
  void FinishError(const std::shared_ptr<HttpExchange>& exchange, const RequestContext& rc,
                   int grpc_code, absl::string_view message, const std::string& retry_after = "");
  void AddCommonHeaders(const RequestContext& rc, HttpResponse* response) const;
  template <typename Message>
  void AddCorsHeaders(const RequestContext& rc, Message* response) const;
  bool OriginAllowed(absl::string_view origin) const;
  void Unregister(StreamRelay* relay, const RequestContext& rc);

  const GatewayOptions options_;
  const RouteTable routes_;
  const JsonOptions json_options_;
  std::shared_ptr<grpc::Channel> channel_;
  grpc::GenericStub stub_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_stub_;
  std::string openapi_json_;
  // Content-Security-Policy of the chat page: its inline script and style by hash only.
  std::string page_csp_;
  GatewayMetrics metrics_;
  absl::Mutex mu_;
  absl::flat_hash_set<StreamRelay*> relays_ ABSL_GUARDED_BY(mu_);
  PerClientCounter streams_per_ip_;
  std::unique_ptr<PerClientRate> anonymous_rate_;  // null: unlimited
  bool streams_cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

// The web chat page served at GET / (gateway/web/index.html, embedded at build time).
absl::string_view WebIndexHtml();

// A Content-Security-Policy for `html` that allows nothing but its own inline <script> and
// <style> blocks (by SHA-256 hash), requests to its own origin and data: images, and no
// framing.
std::string ContentSecurityPolicyFor(absl::string_view html);

// Whether a request with Host header `host` (empty: none, HTTP/1.0) is served under
// GatewayOptions::allowed_hosts `allowed`. Names compare without case and trailing dot; an
// entry without a port matches any port.
bool HostAllowed(absl::string_view host, const std::vector<std::string>& allowed);

// True for "application/json" and "application/<x>+json", parameters (charset) allowed.
bool IsJsonContentType(absl::string_view value);

}  // namespace aijobs::gateway
