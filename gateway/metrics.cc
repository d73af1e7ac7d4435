#include "gateway/metrics.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace aijobs::gateway {
namespace {

// Label values escape backslash, double quote and newline (exposition format).
std::string Label(const std::string& v) {
  return absl::StrReplaceAll(v, {{"\\", "\\\\"}, {"\"", "\\\""}, {"\n", "\\n"}});
}

}  // namespace

GatewayMetrics::GatewayMetrics()
    : bounds_{0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
              5, 10} {}

void GatewayMetrics::RecordRequest(const std::string& route, int http_status,
                                   absl::Duration latency) {
  double s = absl::ToDoubleSeconds(latency);
  size_t bucket = std::lower_bound(bounds_.begin(), bounds_.end(), s) - bounds_.begin();
  absl::MutexLock lock(&mu_);
  RouteStats& r = routes_[route];
  if (r.buckets.empty()) r.buckets.assign(bounds_.size() + 1, 0);
  ++r.by_status[http_status];
  ++r.buckets[bucket];
  r.sum_seconds += s;
  ++r.count;
}

void GatewayMetrics::RecordUpstreamError(const std::string& grpc_code) {
  absl::MutexLock lock(&mu_);
  ++upstream_errors_[grpc_code];
}

std::string GatewayMetrics::RenderPrometheus() const {
  std::string out;
  absl::MutexLock lock(&mu_);
  absl::StrAppend(&out,
                  "# HELP aijobs_gateway_requests_total HTTP requests answered, by route and "
                  "status code.\n# TYPE aijobs_gateway_requests_total counter\n");
  for (const auto& [route, r] : routes_) {
    for (const auto& [code, n] : r.by_status) {
      absl::StrAppend(&out, "aijobs_gateway_requests_total{route=\"", Label(route), "\",code=\"",
                      code, "\"} ", n, "\n");
    }
  }
  absl::StrAppend(&out,
                  "# HELP aijobs_gateway_request_duration_seconds Time from a request's last "
                  "byte to its response (for event streams: to the end of the stream).\n"
                  "# TYPE aijobs_gateway_request_duration_seconds histogram\n");
  for (const auto& [route, r] : routes_) {
    uint64_t cumulative = 0;
    for (size_t i = 0; i < bounds_.size(); ++i) {
      cumulative += r.buckets[i];
      absl::StrAppend(&out, "aijobs_gateway_request_duration_seconds_bucket{route=\"",
                      Label(route), "\",le=\"", bounds_[i], "\"} ", cumulative, "\n");
    }
    absl::StrAppend(&out, "aijobs_gateway_request_duration_seconds_bucket{route=\"", Label(route),
                    "\",le=\"+Inf\"} ", r.count, "\n");
    absl::StrAppend(&out, "aijobs_gateway_request_duration_seconds_sum{route=\"", Label(route),
                    "\"} ", r.sum_seconds, "\n");
    absl::StrAppend(&out, "aijobs_gateway_request_duration_seconds_count{route=\"", Label(route),
                    "\"} ", r.count, "\n");
  }
  absl::StrAppend(&out,
                  "# HELP aijobs_gateway_open_streams Event streams (SSE or NDJSON) open now.\n"
                  "# TYPE aijobs_gateway_open_streams gauge\naijobs_gateway_open_streams ",
                  open_streams_.load(std::memory_order_relaxed), "\n");
  absl::StrAppend(&out,
                  "# HELP aijobs_gateway_upstream_errors_total Upstream gRPC calls that ended "
                  "with a non-OK status, by code.\n"
                  "# TYPE aijobs_gateway_upstream_errors_total counter\n");
  for (const auto& [code, n] : upstream_errors_) {
    absl::StrAppend(&out, "aijobs_gateway_upstream_errors_total{code=\"", Label(code), "\"} ", n,
                    "\n");
  }
  return out;
}

}  // namespace aijobs::gateway
