// The fault suite: "nothing acknowledged is lost", proven under the faults that lose work in
// production, on a topology that behaves like separate machines (tests/faults/topology.h):
// a PostgreSQL host, two scheduler hosts, three worker hosts and a client host, each its own
// network namespace. Every scenario runs under load (aijobs-fault-client: keyed submits,
// every 10th job streamed and watched from seq 0 to its end), injects one fault with the
// real tools (kill -9, pg_ctl stop -m immediate / fast, a switch port set down, a
// blackhole route, SIGTERM one process at a time), and then checks independently of the
// processes under test, from the database and the client's own records:
//   - every acknowledged job ends SUCCEEDED (lost: missing or not terminal; failed: FAILED);
//   - no job has two terminal events, and no attempt number was dispatched twice;
//   - every watcher's text (discarding superseded attempts) equals the job's result, so no
//     token was lost or repeated, and seqs only grew;
//   - recovery: seconds from the fault healing to the first job finishing after it.
// AIJOBS_FAULTS=full (./dev faults) runs every scenario at full size; otherwise (./dev test)
// the short versions of scenarios 1-3 run. Each run writes faults-report.{json,md} to
// $AIJOBS_FAULTS_REPORT_DIR (default: the test log directory).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "tests/faults/topology.h"
#include "tests/fixtures/process.h"

namespace aijobs::testing {
namespace {

constexpr char kPgIp[] = "10.213.0.10";
constexpr char kStandbyIp[] = "10.213.0.11";  // DatabaseFailover only
constexpr int kPgPort = 5432;
constexpr int kPgBouncerPort = 6432;  // PgBouncer* scenarios: on the database host
constexpr int kSchedulerPort = 50051;
const std::vector<std::string> kSchedulerIps = {"10.213.0.21", "10.213.0.22"};
const std::vector<std::string> kWorkerIps = {"10.213.0.31", "10.213.0.32", "10.213.0.33"};
constexpr char kClientIp[] = "10.213.0.40";
constexpr char kPsql[] = "/usr/bin/psql";

// What ./dev test runs (scenarios 1-3, short); the rest need AIJOBS_FAULTS=full.
const std::set<std::string> kShortScenarios = {"WorkerKill", "SchedulerKill", "DatabaseCrash"};

bool FullRun() {
  const char* v = std::getenv("AIJOBS_FAULTS");
  return v != nullptr && std::string(v) == "full";
}

struct Figures {
  std::string scenario;
  int jobs = 0;
  int acknowledged = 0;
  int refused = 0;  // submits not acknowledged after the SDK's retries (allowed in outages)
  int lost = 0;
  int failed = 0;
  int completed_twice = 0;
  int attempts_reused = 0;
  int watched = 0;
  int watch_problems = 0;
  double recovery_s = -1;
  std::string note;
};

std::vector<Figures>& Report() {
  static auto* rows = new std::vector<Figures>();
  return *rows;
}

std::string ReportDir() {
  const char* dir = std::getenv("AIJOBS_FAULTS_REPORT_DIR");
  return dir != nullptr && *dir != '\0' ? dir : LogDir();
}

// Writes the rows gathered so far as JSON and Markdown (after every scenario, so a run that
// is cut short still leaves its report).
void WriteReport() {
  std::filesystem::create_directories(ReportDir());
  std::ofstream json(ReportDir() + "/faults-report.json");
  std::ofstream md(ReportDir() + "/faults-report.md");
  json << "{\"mode\": \"" << (FullRun() ? "full" : "short") << "\", \"scenarios\": [\n";
  md << "| scenario | jobs | acknowledged | refused | lost | failed | completed twice | "
        "attempt reused | watched | watch problems | recovery s |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n";
  const auto& rows = Report();
  for (size_t i = 0; i < rows.size(); ++i) {
    const Figures& f = rows[i];
    json << absl::StrFormat(
        "  {\"scenario\": \"%s\", \"jobs\": %d, \"acknowledged\": %d, \"refused\": %d, "
        "\"lost\": %d, \"failed\": %d, \"completed_twice\": %d, \"attempts_reused\": %d, "
        "\"watched\": %d, \"watch_problems\": %d, \"recovery_s\": %.2f, \"note\": \"%s\"}%s\n",
        f.scenario, f.jobs, f.acknowledged, f.refused, f.lost, f.failed, f.completed_twice,
        f.attempts_reused, f.watched, f.watch_problems, f.recovery_s, f.note,
        i + 1 < rows.size() ? "," : "");
    // -1: no job finished after the fault healed (everything had already finished during it).
    std::string recovery = f.recovery_s < 0 ? "n/a (all done during the fault)"
                                            : absl::StrFormat("%.2f", f.recovery_s);
    md << absl::StrFormat("| %s | %d | %d | %d | %d | %d | %d | %d | %d | %d | %s |\n", f.scenario,
                          f.jobs, f.acknowledged, f.refused, f.lost, f.failed, f.completed_twice,
                          f.attempts_reused, f.watched, f.watch_problems, recovery);
  }
  json << "]}\n";
}

double EpochSeconds(absl::Time t) { return absl::ToDoubleSeconds(t - absl::UnixEpoch()); }

class FaultSuite : public ::testing::Test {
 protected:
  struct Load {
    int jobs;
    double rate;
  };

  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "the fault suite needs root (network namespaces)";
    const std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    if (!FullRun() && kShortScenarios.count(name) == 0) {
      GTEST_SKIP() << "full run only (AIJOBS_FAULTS=full, ./dev faults)";
    }
    auto net = Topology::Create();
    ASSERT_TRUE(net.ok()) << net.status();
    net_ = std::move(*net);
    ASSERT_TRUE(net_->AddHost("pg", kPgIp).ok());
    failover_ = name == "DatabaseFailover";
    pooler_ = name.rfind("PgBouncer", 0) == 0;
    if (failover_) {
      ASSERT_TRUE(net_->AddHost("pg2", kStandbyIp).ok());
    }
    for (size_t i = 0; i < kSchedulerIps.size(); ++i) {
      ASSERT_TRUE(net_->AddHost(SchedulerHost(i), kSchedulerIps[i]).ok());
    }
    for (size_t i = 0; i < kWorkerIps.size(); ++i) {
      ASSERT_TRUE(net_->AddHost(WorkerHost(i), kWorkerIps[i]).ok());
    }
    ASSERT_TRUE(net_->AddHost("client", kClientIp).ok());
    workdir_ = absl::StrCat("/tmp/aijobs-faults-", getpid(), "-",
                            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(workdir_);
    std::filesystem::create_directories(workdir_);
    chmod(workdir_.c_str(), 0755);  // the postgres user creates its data directory here
    ASSERT_NO_FATAL_FAILURE(StartPg());
    if (failover_) {
      ASSERT_NO_FATAL_FAILURE(StartSynchronousStandby());
    }
    if (pooler_) {
      ASSERT_NO_FATAL_FAILURE(StartPgBouncer());
    }
    schedulers_.resize(kSchedulerIps.size());
    workers_.resize(kWorkerIps.size());
    for (size_t i = 0; i < kSchedulerIps.size(); ++i) ASSERT_NO_FATAL_FAILURE(StartScheduler(i));
    for (size_t i = 0; i < kWorkerIps.size(); ++i) ASSERT_NO_FATAL_FAILURE(StartWorker(i));
  }

  void TearDown() override {
    client_.reset();
    workers_.clear();
    schedulers_.clear();
    pgbouncer_.reset();
    if (net_ != nullptr) {
      (void)net_->RunIn("pg", PgScript(), {"stop", PgDir()}, absl::Seconds(60));
      if (failover_) {
        (void)net_->RunIn("pg2", PgScript(), {"stop", StandbyDir()}, absl::Seconds(60));
      }
    }
    net_.reset();
    if (!HasFailure() && !workdir_.empty()) std::filesystem::remove_all(workdir_);
  }

  static std::string SchedulerHost(size_t i) { return absl::StrCat("sched", i); }
  static std::string WorkerHost(size_t i) { return absl::StrCat("worker", i); }
  static std::string SchedulerAddress(size_t i) {
    return absl::StrCat(kSchedulerIps[i], ":", kSchedulerPort);
  }
  std::string PgDir() const { return workdir_ + "/pg"; }
  std::string StandbyDir() const { return workdir_ + "/pg2"; }
  static std::string PgScript() { return SourceDir() + "/scripts/pg.sh"; }
  // With a standby: both hosts, and libpq picks the one that accepts writes.
  std::string Conninfo() const {
    if (failover_) {
      return absl::StrCat("host=", kPgIp, ",", kStandbyIp, " port=", kPgPort, ",", kPgPort,
                          " dbname=aijobs user=postgres connect_timeout=3 "
                          "target_session_attrs=read-write");
    }
    return absl::StrCat("host=", kPgIp, " port=", pooler_ ? kPgBouncerPort : kPgPort,
                        " dbname=aijobs user=postgres connect_timeout=3");
  }

  // Debian's pgbouncer in transaction-pooling mode in front of the database, run as the
  // postgres user (it refuses root).
  void StartPgBouncer() {
    const std::string ini = workdir_ + "/pgbouncer.ini";
    const std::string users = workdir_ + "/userlist.txt";
    std::ofstream(users) << "\"postgres\" \"\"\n";
    std::ofstream(ini) << "[databases]\n"
                       << "aijobs = host=127.0.0.1 port=" << kPgPort
                       << " dbname=aijobs user=postgres\n"
                       << "[pgbouncer]\n"
                       << "listen_addr = " << kPgIp << "\n"
                       << "listen_port = " << kPgBouncerPort << "\n"
                       << "unix_socket_dir =\n"
                       << "auth_type = trust\n"
                       << "auth_file = " << users << "\n"
                       << "pool_mode = transaction\n"
                       << "max_client_conn = 1000\n"
                       << "default_pool_size = 40\n"
                       << "server_login_retry = 1\n"
                       << "admin_users = postgres\n";
    chmod(ini.c_str(), 0644);
    chmod(users.c_str(), 0644);
    ProcessOptions o;
    o.path = "/usr/bin/setpriv";
    o.args = {"--reuid=postgres", "--regid=postgres", "--clear-groups", "/usr/sbin/pgbouncer", ini};
    o.log_name = "pgbouncer";
    auto p = Process::Start(net_->InHost("pg", o));
    ASSERT_TRUE(p.ok()) << p.status();
    pgbouncer_ = std::move(*p);
    ASSERT_NO_FATAL_FAILURE(WaitForLog(pgbouncer_.get(), "process up", absl::Seconds(20)));
  }

  // A streaming standby of "pg" on "pg2", made synchronous: the primary acknowledges a
  // commit only once the standby has it.
  void StartSynchronousStandby() {
    auto base =
        net_->RunIn("pg2", PgScript(), {"standby", StandbyDir(), kPgIp, absl::StrCat(kPgPort)},
                    absl::Seconds(120));
    ASSERT_TRUE(base.ok()) << base.status();
    ASSERT_EQ(base->exit_code, 0) << base->err;
    auto r = net_->RunIn("pg2", "/usr/bin/env",
                         {absl::StrCat("AIJOBS_PG_LISTEN=127.0.0.1,", kStandbyIp), PgScript(),
                          "start", StandbyDir(), absl::StrCat(kPgPort)},
                         absl::Seconds(120));
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->exit_code, 0) << r->err;
    Query("ALTER SYSTEM SET synchronous_standby_names = '*'");
    Query("SELECT pg_reload_conf()");
    ASSERT_TRUE(WaitFor(
        [&] {
          auto rows = Query("SELECT sync_state FROM pg_stat_replication");
          return !rows.empty() && rows[0][0] == "sync";
        },
        absl::Seconds(30), absl::Milliseconds(200)))
        << "the standby never became synchronous";
  }

  void StartPg() {
    auto r = net_->RunIn("pg", "/usr/bin/env",
                         {absl::StrCat("AIJOBS_PG_LISTEN=127.0.0.1,", kPgIp), PgScript(), "start",
                          PgDir(), absl::StrCat(kPgPort)},
                         absl::Seconds(120));
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->exit_code, 0) << r->err;
  }
  void StopPg(const char* how) {
    auto r = net_->RunIn("pg", PgScript(), {how, PgDir()}, absl::Seconds(60));
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->exit_code, 0) << r->err;
  }

  // Waits for `needle` in the process log; fails the test with the log tail otherwise.
  void WaitForLog(Process* p, const std::string& needle, absl::Duration timeout) {
    ASSERT_TRUE(WaitFor([&] { return p->ReadStdout().find(needle) != std::string::npos; }, timeout,
                        absl::Milliseconds(50)))
        << "no '" << needle << "' in the log:\n"
        << p->LogTail();
  }

  void StartScheduler(size_t i) {
    ProcessOptions o;
    o.path = BinPath("aijobs-scheduler");
    o.args = {"--listen",
              SchedulerAddress(i),
              "--database_url",
              Conninfo(),
              "--replica_id",
              SchedulerHost(i),
              "--lease_ms",
              "10000",
              "--retry_base_ms",
              "50",
              "--retry_max_ms",
              "200",
              "--shutdown_grace_ms",
              "5000",
              "--auth=off"};
    if (pooler_) o.args.push_back("--db_transaction_pooler");  // and no LISTEN: poll only
    o.log_name = absl::StrCat("aijobs-scheduler-", SchedulerHost(i), "-", ++starts_);
    auto p = Process::Start(net_->InHost(SchedulerHost(i), o));
    ASSERT_TRUE(p.ok()) << p.status();
    schedulers_[i] = std::move(*p);
    ASSERT_NO_FATAL_FAILURE(WaitForLog(schedulers_[i].get(), "serving on port", absl::Seconds(60)));
  }

  void StartWorker(size_t i) {
    // Workers list the replicas in different orders, so both replicas have workers.
    std::vector<std::string> list = {SchedulerAddress(i % 2), SchedulerAddress((i + 1) % 2)};
    ProcessOptions o;
    o.path = BinPath("aijobs-worker");
    o.args = {"--scheduler",
              absl::StrJoin(list, ","),
              "--worker_id",
              WorkerHost(i),
              "--slots",
              "64",
              "--sim_ttft_ms",
              "0",
              "--sim_tokens_per_s",
              "0",
              "--reconnect_max_ms",
              "500",
              "--drain_timeout_ms",
              "10000"};
    o.log_name = absl::StrCat("aijobs-worker-", WorkerHost(i), "-", ++starts_);
    auto p = Process::Start(net_->InHost(WorkerHost(i), o));
    ASSERT_TRUE(p.ok()) << p.status();
    workers_[i] = std::move(*p);
    ASSERT_NO_FATAL_FAILURE(
        WaitForLog(workers_[i].get(), "connected to scheduler", absl::Seconds(30)));
  }

  // SIGTERM, then waits for the process to exit on its own.
  void Stop(std::unique_ptr<Process>& p, absl::Duration timeout) {
    ASSERT_TRUE(p->Signal(SIGTERM).ok());
    auto code = p->Wait(timeout);
    ASSERT_TRUE(code.ok()) << "did not stop within " << timeout << ":\n" << p->LogTail();
    EXPECT_EQ(*code, 0) << p->LogTail();
  }

  Load LoadFor() const { return FullRun() ? Load{2500, 150} : Load{400, 100}; }
  // When, after the load starts, the fault is injected: 40% into the submitting phase.
  absl::Duration FaultAt(const Load& load) const {
    return absl::Seconds(0.4 * load.jobs / load.rate);
  }

  void StartClient(const Load& load) {
    load_ = load;
    client_out_ = workdir_ + "/client.tsv";
    ProcessOptions o;
    o.path = BinPath("aijobs-fault-client");
    o.args = {"--scheduler", absl::StrCat(SchedulerAddress(0), ",", SchedulerAddress(1)),
              "--jobs",      absl::StrCat(load.jobs),
              "--rate",      absl::StrCat(load.rate),
              "--run_id",    ::testing::UnitTest::GetInstance()->current_test_info()->name(),
              "--out",       client_out_,
              "--max_s",     FullRun() ? "240" : "120"};
    o.log_name = "aijobs-fault-client";
    auto p = Process::Start(net_->InHost("client", o));
    ASSERT_TRUE(p.ok()) << p.status();
    client_ = std::move(*p);
    load_started_ = absl::Now();
  }
  // Starts the load and sleeps until the fault is due.
  void StartLoadUntilFault() {
    ASSERT_NO_FATAL_FAILURE(StartClient(LoadFor()));
    SleepUntilFault();
  }
  // kill -9 of worker 0; a replacement starts 2 s later.
  void KillAndReplaceWorker() {
    workers_[0]->Kill();
    absl::SleepFor(absl::Seconds(2));
    ASSERT_NO_FATAL_FAILURE(StartWorker(0));
  }
  // PostgreSQL stopped (`how`: pg.sh crash = -m immediate, stop = -m fast), back 3 s later.
  void BounceDatabase(const char* how) {
    ASSERT_NO_FATAL_FAILURE(StopPg(how));
    absl::SleepFor(absl::Seconds(3));
    ASSERT_NO_FATAL_FAILURE(StartPg());
  }
  void SleepUntilFault() {
    absl::Time at = load_started_ + FaultAt(load_);
    if (at > absl::Now()) absl::SleepFor(at - absl::Now());
  }

  // psql -tA inside the database host; rows split on '\n', columns on '|'.
  std::vector<std::vector<std::string>> Query(const std::string& sql) {
    auto r = net_->RunIn(db_host_, kPsql,
                         {"-h", "127.0.0.1", "-p", absl::StrCat(kPgPort), "-U", "postgres", "-d",
                          "aijobs", "-tA", "-c", sql},
                         absl::Seconds(60));
    std::vector<std::vector<std::string>> rows;
    EXPECT_TRUE(r.ok() && r->exit_code == 0) << sql << ": " << (r.ok() ? r->err : "");
    if (!r.ok()) return rows;
    for (absl::string_view line : absl::StrSplit(r->out, '\n', absl::SkipEmpty())) {
      rows.push_back(absl::StrSplit(line, '|'));
    }
    return rows;
  }
  int QueryInt(const std::string& sql) {
    auto rows = Query(sql);
    int v = -1;
    if (rows.empty() || rows[0].empty() || !absl::SimpleAtoi(rows[0][0], &v)) return -1;
    return v;
  }

  // Waits for the client and for every acknowledged job to end, then checks everything and
  // records the scenario's figures. `healed`: when the fault ended.
  Figures Check(const std::string& scenario, absl::Time healed, const std::string& note = "") {
    Figures f;
    f.scenario = scenario;
    f.jobs = load_.jobs;
    f.note = note;
    auto code = client_->Wait(absl::Seconds(FullRun() ? 300 : 150));
    EXPECT_TRUE(code.ok() && *code == 0) << "fault client: " << client_->LogTail();
    std::ifstream in(client_out_);
    std::map<std::string, int> acked;  // job id -> index
    std::string line;
    std::vector<std::string> problems;
    while (std::getline(in, line)) {
      std::vector<std::string> cols = absl::StrSplit(line, '\t');
      if (cols[0] == "ack" && cols.size() >= 3) {
        acked[cols[2]] = std::atoi(cols[1].c_str());
      } else if (cols[0] == "nack") {
        ++f.refused;
        if (problems.size() < 5) problems.push_back(line);
      } else if (cols[0] == "watch" && cols.size() >= 3) {
        ++f.watched;
        if (cols[2] != "ok") {
          ++f.watch_problems;
          if (problems.size() < 10) problems.push_back(line);
        }
      }
    }
    f.acknowledged = static_cast<int>(acked.size());
    // Every acknowledged job must end; give the queue a bounded time to drain.
    WaitFor([&] { return QueryInt("SELECT count(*) FROM jobs WHERE state IN (1, 2)") == 0; },
            absl::Seconds(FullRun() ? 120 : 60), absl::Milliseconds(500));
    std::map<std::string, std::string> states;
    for (const auto& row : Query("SELECT id, state FROM jobs")) {
      if (row.size() == 2) states[row[0]] = row[1];
    }
    for (const auto& [id, index] : acked) {
      auto it = states.find(id);
      if (it == states.end() || it->second == "1" || it->second == "2") {
        ++f.lost;
        if (problems.size() < 15) problems.push_back("lost: job " + id);
      } else if (it->second != "3") {
        ++f.failed;
        if (problems.size() < 15) problems.push_back("not succeeded: job " + id);
      }
    }
    f.completed_twice = QueryInt(
        "SELECT count(*) FROM (SELECT job_id FROM job_events WHERE kind = 3 GROUP BY job_id "
        "HAVING count(*) > 1) x");
    f.attempts_reused = QueryInt(
        "SELECT count(*) FROM (SELECT job_id, attempt FROM job_events WHERE kind = 1 AND "
        "state = 2 GROUP BY job_id, attempt HAVING count(*) > 1) x");
    auto first = Query(
        absl::StrFormat("SELECT extract(epoch FROM min(finished_at)) FROM jobs WHERE finished_at > "
                        "to_timestamp(%.3f)",
                        EpochSeconds(healed)));
    double at = 0;
    if (!first.empty() && !first[0].empty() && absl::SimpleAtod(first[0][0], &at)) {
      f.recovery_s = at - EpochSeconds(healed);
    }
    Report().push_back(f);
    WriteReport();

    EXPECT_GT(f.acknowledged, 0);
    EXPECT_EQ(f.lost, 0) << absl::StrJoin(problems, "\n");
    EXPECT_EQ(f.failed, 0) << absl::StrJoin(problems, "\n");
    EXPECT_EQ(f.completed_twice, 0);
    EXPECT_EQ(f.attempts_reused, 0);
    EXPECT_EQ(f.watch_problems, 0) << absl::StrJoin(problems, "\n");
    EXPECT_GT(f.watched, 0);
    std::printf(
        "%s: %d jobs, %d acknowledged, %d refused, %d lost, %d failed, %d completed "
        "twice, %d attempts reused, %d/%d watches with problems, recovery %.2f s\n",
        scenario.c_str(), f.jobs, f.acknowledged, f.refused, f.lost, f.failed, f.completed_twice,
        f.attempts_reused, f.watch_problems, f.watched, f.recovery_s);
    return f;
  }

  std::unique_ptr<Topology> net_;
  bool failover_ = false;
  bool pooler_ = false;  // the schedulers reach PostgreSQL through PgBouncer
  std::unique_ptr<Process> pgbouncer_;
  std::string db_host_ = "pg";  // where the primary runs (the checker queries it)
  std::string workdir_;
  std::vector<std::unique_ptr<Process>> schedulers_;
  std::vector<std::unique_ptr<Process>> workers_;
  std::unique_ptr<Process> client_;
  std::string client_out_;
  Load load_{0, 1};
  absl::Time load_started_;
  int starts_ = 0;
};

// 1. kill -9 of a worker under load; a replacement starts 2 s later.
TEST_F(FaultSuite, WorkerKill) {
  ASSERT_NO_FATAL_FAILURE(StartLoadUntilFault());
  ASSERT_NO_FATAL_FAILURE(KillAndReplaceWorker());
  Figures f = Check("1 worker kill -9", absl::Now());
  EXPECT_EQ(f.refused, 0);
}

// 2. kill -9 of one scheduler replica under load: workers and clients fail over to the
// other one, which requeues what the dead one ran (reported abandoned, or by lease).
TEST_F(FaultSuite, SchedulerKill) {
  ASSERT_NO_FATAL_FAILURE(StartLoadUntilFault());
  schedulers_[0]->Kill();
  Figures f = Check("2 scheduler kill -9", absl::Now(), "replica 0 stays down");
  EXPECT_EQ(f.refused, 0);
}

// 3. PostgreSQL crash (immediate stop: no checkpoint) under load, 3 s down.
TEST_F(FaultSuite, DatabaseCrash) {
  ASSERT_NO_FATAL_FAILURE(StartLoadUntilFault());
  ASSERT_NO_FATAL_FAILURE(BounceDatabase("crash"));
  Check("3 postgres crash (-m immediate), 3 s down", absl::Now());
}

// 3. PostgreSQL fast restart under load, 3 s down.
TEST_F(FaultSuite, DatabaseRestart) {
  ASSERT_NO_FATAL_FAILURE(StartLoadUntilFault());
  ASSERT_NO_FATAL_FAILURE(BounceDatabase("stop"));
  Check("3 postgres restart (-m fast), 3 s down", absl::Now());
}

// 4. PostgreSQL failover: the primary (with a synchronous standby) is killed and the standby
// promoted; the schedulers' multi-host conninfo (target_session_attrs=read-write) finds it.
TEST_F(FaultSuite, DatabaseFailover) {
  ASSERT_NO_FATAL_FAILURE(StartLoadUntilFault());
  ASSERT_NO_FATAL_FAILURE(StopPg("crash"));
  auto r = net_->RunIn("pg2", PgScript(), {"promote", StandbyDir()}, absl::Seconds(60));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->exit_code, 0) << r->err;
  db_host_ = "pg2";
  Check("4 postgres failover (primary stopped -m immediate, sync standby promoted)", absl::Now());
}

// 5. One worker partitioned from everyone (its switch port down) for 30 s, then healed.
TEST_F(FaultSuite, WorkerPartition) {
  ASSERT_NO_FATAL_FAILURE(StartLoadUntilFault());
  ASSERT_TRUE(net_->Cut(WorkerHost(0)).ok());
  absl::SleepFor(absl::Seconds(30));
  ASSERT_TRUE(net_->Heal(WorkerHost(0)).ok());
  Figures f = Check("5 worker partitioned 30 s", absl::Now());
  EXPECT_EQ(f.refused, 0);
}

// 5. One scheduler partitioned from PostgreSQL only (a blackhole route) for 30 s.
TEST_F(FaultSuite, SchedulerDatabasePartition) {
  ASSERT_NO_FATAL_FAILURE(StartLoadUntilFault());
  ASSERT_TRUE(net_->Blackhole(SchedulerHost(0), kPgIp).ok());
  absl::SleepFor(absl::Seconds(30));
  ASSERT_TRUE(net_->Unblackhole(SchedulerHost(0), kPgIp).ok());
  Check("5 scheduler partitioned from postgres 30 s", absl::Now());
}

// 6. Rolling restart of every scheduler and worker, one at a time (SIGTERM, drain, start),
// under load: no failed job and no refused submit.
TEST_F(FaultSuite, RollingRestart) {
  ASSERT_NO_FATAL_FAILURE(StartLoadUntilFault());
  for (size_t i = 0; i < schedulers_.size(); ++i) {
    ASSERT_NO_FATAL_FAILURE(Stop(schedulers_[i], absl::Seconds(30)));
    ASSERT_NO_FATAL_FAILURE(StartScheduler(i));
  }
  for (size_t i = 0; i < workers_.size(); ++i) {
    ASSERT_NO_FATAL_FAILURE(Stop(workers_[i], absl::Seconds(30)));
    ASSERT_NO_FATAL_FAILURE(StartWorker(i));
  }
  Figures f = Check("6 rolling restart (2 schedulers, 3 workers)", absl::Now());
  EXPECT_EQ(f.refused, 0);
}

// 7. PgBouncer in transaction-pooling mode between the schedulers and PostgreSQL (poll-only
// schedulers: no LISTEN through it), with scenario 1 and 3 through it.
TEST_F(FaultSuite, PgBouncerWorkerKill) {
  ASSERT_NO_FATAL_FAILURE(StartLoadUntilFault());
  ASSERT_NO_FATAL_FAILURE(KillAndReplaceWorker());
  Figures f = Check("7 pgbouncer (transaction pooling): worker kill -9", absl::Now());
  EXPECT_EQ(f.refused, 0);
}

TEST_F(FaultSuite, PgBouncerDatabaseCrash) {
  ASSERT_NO_FATAL_FAILURE(StartLoadUntilFault());
  ASSERT_NO_FATAL_FAILURE(BounceDatabase("crash"));
  Check("7 pgbouncer (transaction pooling): postgres crash, 3 s down", absl::Now());
}

}  // namespace
}  // namespace aijobs::testing
