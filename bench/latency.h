// Latency percentiles shared by the benchmark suites and the load generator: one definition
// of "p99" for every figure the project reports.
//
//   aijobs::bench::LatencySummary s = aijobs::bench::Summarize(latencies_ms);
//   printf("p50 %.2f ms, p99 %.2f ms\n", s.p50_ms, s.p99_ms);
#pragma once

#include <cstddef>
#include <vector>

namespace aijobs::bench {

struct LatencySummary {
  size_t count = 0;
  double p50_ms = 0;
  double p90_ms = 0;
  double p99_ms = 0;
  double max_ms = 0;
  double mean_ms = 0;
};

// Nearest-rank percentile (p in [0, 100]) of an already sorted vector: the smallest sample
// with at least p% of the samples at or below it. 0 when empty.
double Percentile(const std::vector<double>& sorted, double p);

// Count, nearest-rank p50/p90/p99, max and mean of `ms` (any order).
LatencySummary Summarize(std::vector<double> ms);

}  // namespace aijobs::bench
