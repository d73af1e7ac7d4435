#include "gateway/metrics.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace aijobs::gateway {
namespace {

using ::testing::HasSubstr;

TEST(GatewayMetricsTest, CountsRequestsByRouteAndCode) {
  GatewayMetrics m;
  m.RecordRequest("GET /v1/jobs/{job_id}", 200, absl::Microseconds(300));
  m.RecordRequest("GET /v1/jobs/{job_id}", 200, absl::Milliseconds(3));
  m.RecordRequest("GET /v1/jobs/{job_id}", 404, absl::Milliseconds(1));
  std::string text = m.RenderPrometheus();
  EXPECT_THAT(text,
              HasSubstr("aijobs_gateway_requests_total{route=\"GET /v1/jobs/{job_id}\",code=\"200\"} 2\n"));
  EXPECT_THAT(text,
              HasSubstr("aijobs_gateway_requests_total{route=\"GET /v1/jobs/{job_id}\",code=\"404\"} 1\n"));
}

TEST(GatewayMetricsTest, HistogramIsCumulative) {
  GatewayMetrics m;
  m.RecordRequest("r", 200, absl::Microseconds(200));  // <= 0.00025
  m.RecordRequest("r", 200, absl::Milliseconds(2));    // <= 0.0025
  m.RecordRequest("r", 200, absl::Seconds(20));        // only +Inf
  std::string text = m.RenderPrometheus();
  EXPECT_THAT(text, HasSubstr("_bucket{route=\"r\",le=\"0.00025\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("_bucket{route=\"r\",le=\"0.001\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("_bucket{route=\"r\",le=\"0.0025\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("_bucket{route=\"r\",le=\"10\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("_bucket{route=\"r\",le=\"+Inf\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("aijobs_gateway_request_duration_seconds_count{route=\"r\"} 3\n"));
}

TEST(GatewayMetricsTest, TracksStreamsAndUpstreamErrors) {
  GatewayMetrics m;
  m.StreamOpened();
  m.StreamOpened();
  m.StreamClosed();
  m.RecordUpstreamError("UNAVAILABLE");
  std::string text = m.RenderPrometheus();
  EXPECT_THAT(text, HasSubstr("aijobs_gateway_open_streams 1\n"));
  EXPECT_THAT(text, HasSubstr("aijobs_gateway_upstream_errors_total{code=\"UNAVAILABLE\"} 1\n"));
}

TEST(GatewayMetricsTest, EscapesLabelValues) {
  GatewayMetrics m;
  m.RecordRequest("a\"b\\c", 200, absl::ZeroDuration());
  EXPECT_THAT(m.RenderPrometheus(), HasSubstr("route=\"a\\\"b\\\\c\""));
}

}  // namespace
}  // namespace aijobs::gateway
