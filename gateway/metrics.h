// The gateway's Prometheus metrics: requests by route and status code, a latency histogram
// per route, open event streams and upstream (gRPC) errors, rendered in the Prometheus text
// exposition format for GET /metrics.
//
//   GatewayMetrics m;
//   m.RecordRequest("GET /v1/jobs/{job_id}", 200, absl::Microseconds(350));
//   std::string text = m.RenderPrometheus();
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace aijobs::gateway {

class GatewayMetrics {
 public:
  GatewayMetrics();

  // Counts one finished request. `route` is a bounded label: a route's "METHOD template", or
  // a fixed name such as "unmatched" (never the raw path, which would explode cardinality).
  void RecordRequest(const std::string& route, int http_status, absl::Duration latency);
  void StreamOpened() { open_streams_.fetch_add(1, std::memory_order_relaxed); }
  void StreamClosed() { open_streams_.fetch_sub(1, std::memory_order_relaxed); }
  // Counts a call that ended with a non-OK gRPC status (by its code name, e.g. "UNAVAILABLE").
  void RecordUpstreamError(const std::string& grpc_code);

  int64_t open_streams() const { return open_streams_.load(std::memory_order_relaxed); }
  std::string RenderPrometheus() const;

 private:
  struct RouteStats {
    std::map<int, uint64_t> by_status;
    std::vector<uint64_t> buckets;  // Cumulative at render time; per-bucket counts here.
    double sum_seconds = 0;
    uint64_t count = 0;
  };
  const std::vector<double> bounds_;
  mutable absl::Mutex mu_;
  std::map<std::string, RouteStats> routes_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, uint64_t> upstream_errors_ ABSL_GUARDED_BY(mu_);
  std::atomic<int64_t> open_streams_{0};
};

}  // namespace aijobs::gateway
