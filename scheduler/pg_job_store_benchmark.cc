// Store micro-benchmarks: the PgJobStore batch statements on the hot path (InsertJobs,
// ClaimJobs, FinishAttempts, AppendDeltas) against a private, durable PostgreSQL (fsync and
// synchronous_commit on: every batch pays one commit). Each reports jobs_per_s (or
// rows_per_s) and the per-batch latency percentiles, timed around the one store call.
//
//   build/bench/bench_store
//   build/bench/bench_store --benchmark_filter=BM_Store_ClaimJobs
//   AIJOBS_BENCH_SMOKE=1 build/bench/bench_store --benchmark_min_time=0.01
#include <benchmark/benchmark.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "bench/bench_util.h"
#include "common/pg/connection.h"
#include "common/pg/pool.h"
#include "common/time_util.h"
#include "common/uuid.h"
#include "scheduler/migrations.h"
#include "scheduler/pg_job_store.h"

namespace aijobs::bench {
namespace {

using scheduler::AttemptOutcome;
using scheduler::ClaimedJob;
using scheduler::DeltaRow;
using scheduler::NewJob;

constexpr absl::Duration kLease = absl::Seconds(30);
constexpr absl::Duration kTimeout = absl::Minutes(10);

struct StoreEnv {
  std::unique_ptr<testing::PgServer> pg;
  std::unique_ptr<pg::Connection> admin;
  std::unique_ptr<pg::Pool> pool;
  std::unique_ptr<scheduler::PgJobStore> store;

  ~StoreEnv() {
    store.reset();
    pool.reset();
    admin.reset();
    pg.reset();
  }
};

StoreEnv* Env(benchmark::State& state) {
  static std::unique_ptr<StoreEnv> env;
  static std::string error;
  if (env == nullptr && error.empty()) {
    auto e = std::make_unique<StoreEnv>();
    auto pg = testing::PgServer::Create();
    if (!pg.ok()) {
      error = absl::StrCat("cannot start PostgreSQL: ", pg.status().ToString());
    } else {
      e->pg = std::move(*pg);
      auto conn = pg::Connection::Open(e->pg->conninfo(), 0);
      absl::Status s = conn.ok() ? scheduler::ApplyMigrations(**conn) : conn.status();
      if (!s.ok()) {
        error = absl::StrCat("cannot prepare the database: ", s.ToString());
      } else {
        e->admin = std::move(*conn);
        e->pool = std::make_unique<pg::Pool>(e->pg->conninfo(), 4);
        e->store = std::make_unique<scheduler::PgJobStore>(e->pool.get());
        env = std::move(e);
      }
    }
  }
  if (env == nullptr) {
    state.SkipWithError(error.c_str());
    return nullptr;
  }
  auto r = env->admin->Exec("TRUNCATE jobs, job_events");
  if (!r.ok()) {
    state.SkipWithError(r.status().ToString().c_str());
    return nullptr;
  }
  return env.get();
}

// A job like the benchmarks' no-op chat request.
NewJob MakeJob() {
  static const v1::SubmitJobRequest request = SimChatRequest(R"({"ttft_ms":0,"tokens":1})");
  NewJob j;
  j.id = NewUuid();
  j.type = "chat";
  *j.spec.mutable_input() = request.input();
  return j;
}

std::vector<NewJob> MakeJobs(int n) {
  std::vector<NewJob> jobs;
  jobs.reserve(n);
  for (int i = 0; i < n; ++i) jobs.push_back(MakeJob());
  return jobs;
}

void Report(benchmark::State& state, int per_batch, const std::vector<double>& batch_ms,
            const char* rate_name) {
  double total_ms = 0;
  for (double ms : batch_ms) total_ms += ms;
  state.counters[rate_name] =
      total_ms > 0 ? per_batch * static_cast<double>(batch_ms.size()) / (total_ms / 1000) : 0;
  state.counters["batch"] = per_batch;
  ReportLatency(state, "", Summarize(batch_ms));
}

// The loop of every store benchmark. Each iteration calls `prepare()` outside the timed
// region for the batch's input (an absl::StatusOr), then `call(input)`, the one store call,
// timed alone into the batch latencies; it returns the call's status. The first error ends
// the benchmark with SkipWithError. Reports `rate_name` and the batch latency percentiles.
template <typename Prepare, typename Call>
void RunBatches(benchmark::State& state, int per_batch, const char* rate_name, Prepare prepare,
                Call call) {
  std::vector<double> batch_ms;
  for (auto _ : state) {
    state.PauseTiming();
    auto input = prepare();
    state.ResumeTiming();
    if (!input.ok()) {
      state.SkipWithError(input.status().ToString().c_str());
      return;
    }
    absl::Time t0 = absl::Now();
    absl::Status s = call(*input);
    batch_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - t0));
    if (!s.ok()) {
      state.SkipWithError(s.ToString().c_str());
      return;
    }
  }
  Report(state, per_batch, batch_ms, rate_name);
}

// OK when `result` holds `want` rows; otherwise its error, or `short_message` when it holds
// fewer or more rows.
template <typename T>
absl::Status HasRows(const absl::StatusOr<std::vector<T>>& result, int want,
                     const char* short_message) {
  if (!result.ok()) return result.status();
  if (static_cast<int>(result->size()) != want) return absl::InternalError(short_message);
  return absl::OkStatus();
}

// Inserts `n` jobs and claims them all (outside any timed region).
absl::StatusOr<std::vector<ClaimedJob>> InsertAndClaim(StoreEnv* env, int n) {
  auto inserted = env->store->InsertJobs(MakeJobs(n));
  if (!inserted.ok()) return inserted.status();
  auto claimed = env->store->ClaimJobs({"chat"}, n, "bench-session", kLease, kTimeout);
  if (!claimed.ok()) return claimed.status();
  if (static_cast<int>(claimed->size()) != n) {
    return absl::InternalError(absl::StrCat("claimed ", claimed->size(), " of ", n, " jobs"));
  }
  return claimed;
}

void BM_Store_InsertJobs(benchmark::State& state) {
  const int batch = static_cast<int>(state.range(0));
  StoreEnv* env = Env(state);
  if (env == nullptr) return;
  RunBatches(
      state, batch, "jobs_per_s",
      [&]() -> absl::StatusOr<std::vector<NewJob>> { return MakeJobs(batch); },
      [&](const std::vector<NewJob>& jobs) { return env->store->InsertJobs(jobs).status(); });
}
BENCHMARK(BM_Store_InsertJobs)
    ->ArgName("batch")
    ->Arg(1)
    ->Arg(64)
    ->Arg(1024)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

void BM_Store_ClaimJobs(benchmark::State& state) {
  const int batch = static_cast<int>(state.range(0));
  StoreEnv* env = Env(state);
  if (env == nullptr) return;
  RunBatches(
      state, batch, "jobs_per_s", [&] { return env->store->InsertJobs(MakeJobs(batch)); },
      [&](const std::vector<scheduler::SubmitOutcome>&) {
        return HasRows(env->store->ClaimJobs({"chat"}, batch, "bench-session", kLease, kTimeout),
                       batch, "claimed fewer jobs than queued");
      });
}
BENCHMARK(BM_Store_ClaimJobs)
    ->ArgName("batch")
    ->Arg(1)
    ->Arg(64)
    ->Arg(256)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

void BM_Store_FinishAttempts(benchmark::State& state) {
  const int batch = static_cast<int>(state.range(0));
  StoreEnv* env = Env(state);
  if (env == nullptr) return;
  google::protobuf::Struct result;
  (*result.mutable_fields())["text"].set_string_value("x");
  auto claim_batch = [&]() -> absl::StatusOr<std::vector<AttemptOutcome>> {
    auto claimed = InsertAndClaim(env, batch);
    if (!claimed.ok()) return claimed.status();
    std::vector<AttemptOutcome> outcomes;
    for (const ClaimedJob& c : *claimed) {
      AttemptOutcome o;
      o.job_id = c.job.id();
      o.attempt = c.job.attempt();
      o.kind = AttemptOutcome::Kind::kSucceeded;
      o.result = result;
      o.last_seq = c.job.last_seq();
      outcomes.push_back(std::move(o));
    }
    return outcomes;
  };
  RunBatches(state, batch, "jobs_per_s", claim_batch,
             [&](const std::vector<AttemptOutcome>& outcomes) {
               return HasRows(env->store->FinishAttempts(outcomes), batch,
                              "finished fewer attempts than claimed");
             });
}
BENCHMARK(BM_Store_FinishAttempts)
    ->ArgName("batch")
    ->Arg(1)
    ->Arg(64)
    ->Arg(256)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// One coalesced row per running job (4 pieces each), as the event flusher writes them.
void BM_Store_AppendDeltas(benchmark::State& state) {
  const int rows = static_cast<int>(state.range(0));
  StoreEnv* env = Env(state);
  if (env == nullptr) return;
  auto claimed = InsertAndClaim(env, rows);
  if (!claimed.ok()) {
    state.SkipWithError(claimed.status().ToString().c_str());
    return;
  }
  std::vector<int64_t> seq;
  for (const ClaimedJob& c : *claimed) seq.push_back(c.job.last_seq());
  auto next_batch = [&]() -> absl::StatusOr<std::vector<DeltaRow>> {
    std::vector<DeltaRow> batch;
    int64_t now_us = NowMicros();
    for (int i = 0; i < rows; ++i) {
      DeltaRow row;
      row.job_id = (*claimed)[i].job.id();
      row.batch.set_attempt((*claimed)[i].job.attempt());
      for (int p = 0; p < 4; ++p) {
        auto* piece = row.batch.add_pieces();
        piece->set_seq(++seq[i]);
        piece->set_text("word ");
        piece->set_time_us(now_us);
      }
      batch.push_back(std::move(row));
    }
    return batch;
  };
  RunBatches(state, rows, "rows_per_s", next_batch,
             [&](const std::vector<DeltaRow>& batch) { return env->store->AppendDeltas(batch); });
}
BENCHMARK(BM_Store_AppendDeltas)
    ->ArgName("rows")
    ->Arg(1)
    ->Arg(64)
    ->Arg(256)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace aijobs::bench

int main(int argc, char** argv) { return aijobs::bench::RunBenchmarksMain(argc, argv); }
