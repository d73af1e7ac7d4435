// PgJobStore against a real PostgreSQL (the shared private test server): every JobStore
// contract the scheduler builds on — idempotent submit, tenant scoping, SKIP LOCKED claims,
// attempt fencing, retries, cancel/redrive, the coalesced event log, leases, retention and
// paging — plus concurrent schema migrations.
#include "scheduler/pg_job_store.h"

#include <gmock/gmock.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/pg/connection.h"
#include "common/pg/pool.h"
#include "common/time_util.h"
#include "common/uuid.h"
#include "scheduler/attempt_finisher.h"
#include "scheduler/cache_key.h"
#include "scheduler/event_hub.h"
#include "scheduler/migrations.h"
#include "scheduler/submit_batcher.h"
#include "scheduler/testing/fake_job_store.h"
#include "tests/fixtures/pg_server.h"
#include "tests/fixtures/process.h"

namespace aijobs::scheduler {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using Kind = AttemptOutcome::Kind;

constexpr absl::Duration kLease = absl::Seconds(30);
constexpr absl::Duration kDefaultTimeout = absl::Minutes(10);

// A short, comparable description of an event, so sequences read as expectations. The
// error of a RUNNING state change is left out here: StoredTransitionEventsMatchLiveOnes
// covers it (see the regression test there), the other tests are about other things.
std::string Describe(const v1::JobEvent& e) {
  switch (e.event_case()) {
    case v1::JobEvent::kStateChange: {
      const v1::StateChange& sc = e.state_change();
      bool show_error = sc.has_error() && sc.state() != v1::RUNNING;
      return absl::StrCat(e.seq(), " state ", v1::JobState_Name(sc.state()), " a", sc.attempt(),
                          sc.discard_output() ? " discard" : "",
                          show_error ? absl::StrCat(" err=", sc.error().code()) : "");
    }
    case v1::JobEvent::kOutputDelta:
      return absl::StrCat(e.seq(), " delta a", e.output_delta().attempt(), " ",
                          e.output_delta().text());
    case v1::JobEvent::kFinalJob:
      return absl::StrCat(e.seq(), " final ", v1::JobState_Name(e.final_job().state()), " a",
                          e.final_job().attempt());
    default:
      return absl::StrCat(e.seq(), " empty");
  }
}

std::vector<std::string> DescribeAll(const std::vector<v1::JobEvent>& events) {
  std::vector<std::string> out;
  for (const auto& e : events) out.push_back(Describe(e));
  return out;
}

std::vector<std::string> Ids(const std::vector<ClaimedJob>& claimed) {
  std::vector<std::string> out;
  for (const auto& c : claimed) out.push_back(c.job.id());
  return out;
}

google::protobuf::Struct TextStruct(const std::string& key, const std::string& value) {
  google::protobuf::Struct s;
  (*s.mutable_fields())[key].set_string_value(value);
  return s;
}

DeltaRow Deltas(const std::string& job_id, int32_t attempt, int64_t first_seq,
                const std::vector<std::string>& texts) {
  DeltaRow row;
  row.job_id = job_id;
  row.batch.set_attempt(attempt);
  int64_t seq = first_seq;
  for (const auto& t : texts) {
    auto* p = row.batch.add_pieces();
    p->set_seq(seq++);
    p->set_text(t);
    p->set_time_us(NowMicros());
  }
  return row;
}

class PgJobStoreTest : public aijobs::testing::PgTest {
 protected:
  void SetUp() override {
    PgTest::SetUp();
    if (HasFatalFailure()) return;
    auto conn = pg::Connection::Open(conninfo());
    ASSERT_TRUE(conn.ok()) << conn.status();
    absl::Status migrated = ApplyMigrations(**conn);
    ASSERT_TRUE(migrated.ok()) << migrated;
    admin_ = std::move(*conn);
    pool_ = std::make_unique<pg::Pool>(conninfo(), 8);
    store_ = std::make_unique<PgJobStore>(pool_.get());
  }

  void TearDown() override {
    store_.reset();
    pool_.reset();
    admin_.reset();
  }

  NewJob MakeJob(const std::string& type = "chat", int32_t priority = 0, int32_t max_attempts = 3,
                 Caller caller = Caller{}) {
    NewJob j;
    j.id = NewUuid();
    j.caller = std::move(caller);
    j.type = type;
    *j.spec.mutable_input() = TextStruct("prompt", "hello " + j.id);
    (*j.spec.mutable_labels())["origin"] = "test";
    j.priority = priority;
    j.max_attempts = max_attempts;
    return j;
  }

  // Inserts one job and returns it as stored.
  v1::Job Submit(NewJob j) {
    auto out = store_->InsertJobs({std::move(j)});
    EXPECT_TRUE(out.ok()) << out.status();
    if (!out.ok() || out->size() != 1) return v1::Job();
    return (*out)[0].job;
  }

  // Claims exactly one job of `type` and returns it.
  ClaimedJob ClaimOne(const std::string& type = "chat", absl::Duration lease = kLease,
                      const std::string& owner = "session-1") {
    auto claimed = store_->ClaimJobs({type}, 1, owner, lease, kDefaultTimeout);
    EXPECT_TRUE(claimed.ok()) << claimed.status();
    if (!claimed.ok() || claimed->size() != 1) {
      ADD_FAILURE() << "expected to claim one " << type << " job";
      return ClaimedJob();
    }
    return (*claimed)[0];
  }

  std::vector<v1::Job> Finish(const std::string& id, int32_t attempt, Kind kind,
                              absl::Duration delay = absl::ZeroDuration(), int64_t last_seq = 0) {
    AttemptOutcome o;
    o.job_id = id;
    o.attempt = attempt;
    o.kind = kind;
    if (kind == Kind::kSucceeded) {
      o.result = TextStruct("text", "result of attempt " + std::to_string(attempt));
    } else {
      o.error.set_code(kind == Kind::kRetryableFailure ? "RATE_LIMITED" : "INVALID_INPUT");
      o.error.set_message("attempt failed");
      o.error.set_retryable(kind == Kind::kRetryableFailure);
    }
    o.retry_delay = delay;
    o.last_seq = last_seq;
    auto r = store_->FinishAttempts({o});
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : std::vector<v1::Job>{};
  }

  v1::Job Get(const std::string& id, const Caller& caller = Caller{}) {
    auto job = store_->GetJob(caller, id);
    EXPECT_TRUE(job.ok()) << job.status();
    return job.ok() ? *job : v1::Job();
  }

  std::vector<v1::JobEvent> Events(const std::string& id, int64_t after_seq = 0) {
    auto page = store_->ReadEvents(Caller{}, id, after_seq, 1000);
    EXPECT_TRUE(page.ok()) << page.status();
    return page.ok() ? page->events : std::vector<v1::JobEvent>{};
  }

  int64_t QueryInt(const std::string& sql) {
    auto r = admin_->Exec(sql);
    EXPECT_TRUE(r.ok()) << r.status() << " in " << sql;
    return r.ok() ? r->GetInt(0, 0) : -1;
  }

  std::unique_ptr<pg::Connection> admin_;
  std::unique_ptr<pg::Pool> pool_;
  std::unique_ptr<PgJobStore> store_;
};

// ---------------------------------------------------------------------------------------
// InsertJobs / GetJob

TEST_F(PgJobStoreTest, InsertJobsReturnsQueuedJobsWithFirstEvent) {
  NewJob a = MakeJob("chat", 2, 5, Caller{"t1", "alice"});
  a.timeout_ms = 1500;
  NewJob b = MakeJob("embed");
  absl::Time before = absl::Now() - absl::Seconds(5);
  auto out = store_->InsertJobs({a, b});
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(), 2u);

  const v1::Job& ja = (*out)[0].job;
  EXPECT_FALSE((*out)[0].existing);
  EXPECT_EQ(ja.id(), a.id);
  EXPECT_EQ(ja.type(), "chat");
  EXPECT_EQ(ja.state(), v1::QUEUED);
  EXPECT_EQ(ja.attempt(), 0);
  EXPECT_EQ(ja.max_attempts(), 5);
  EXPECT_EQ(ja.priority(), 2);
  EXPECT_EQ(ja.tenant_id(), "t1");
  EXPECT_EQ(ja.owner(), "alice");
  EXPECT_EQ(ja.last_seq(), 1);
  EXPECT_EQ(ja.labels().at("origin"), "test");
  EXPECT_EQ(ja.input().fields().at("prompt").string_value(), "hello " + a.id);
  EXPECT_EQ(FromProtoDuration(ja.timeout()), absl::Milliseconds(1500));
  EXPECT_GT(FromProtoTimestamp(ja.created_at()), before);
  EXPECT_LT(FromProtoTimestamp(ja.created_at()), absl::Now() + absl::Seconds(5));
  EXPECT_EQ((*out)[1].job.id(), b.id);
  EXPECT_EQ((*out)[1].job.type(), "embed");
  EXPECT_EQ((*out)[1].job.tenant_id(), "default");

  // What InsertJobs answered is exactly what is stored.
  auto stored = store_->GetJob(Caller{"t1", "bob"}, a.id);
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*stored, ja))
      << "stored:\n"
      << stored->DebugString() << "returned:\n"
      << ja.DebugString();

  auto page = store_->ReadEvents(Caller{"t1", "alice"}, a.id, 0, 100);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_THAT(DescribeAll(page->events), ElementsAre("1 state QUEUED a0"));
  EXPECT_FALSE(page->more);
  EXPECT_EQ(page->job.id(), a.id);
}

TEST_F(PgJobStoreTest, EmptyBatchesAreNoOps) {
  auto inserted = store_->InsertJobs({});
  ASSERT_TRUE(inserted.ok()) << inserted.status();
  EXPECT_THAT(*inserted, IsEmpty());
  auto finished = store_->FinishAttempts({});
  ASSERT_TRUE(finished.ok()) << finished.status();
  EXPECT_THAT(*finished, IsEmpty());
  EXPECT_TRUE(store_->AppendDeltas({}).ok());
  EXPECT_TRUE(store_->ExtendLeases({}, kLease).ok());
  auto claimed = store_->ClaimJobs({"chat"}, 10, "s", kLease, kDefaultTimeout);
  ASSERT_TRUE(claimed.ok()) << claimed.status();
  EXPECT_THAT(*claimed, IsEmpty());
  EXPECT_EQ(QueryInt("SELECT count(*) FROM jobs"), 0);
}

TEST_F(PgJobStoreTest, IdempotencyKeyReturnsExistingJobAcrossCalls) {
  NewJob first = MakeJob();
  first.idempotency_key = "order-42";
  v1::Job created = Submit(first);

  NewJob again = MakeJob();
  again.idempotency_key = "order-42";
  auto out = store_->InsertJobs({again});
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(), 1u);
  EXPECT_TRUE((*out)[0].existing);
  EXPECT_EQ((*out)[0].job.id(), created.id());
  EXPECT_EQ((*out)[0].job.idempotency_key(), "order-42");
  EXPECT_EQ((*out)[0].job.input().fields().at("prompt").string_value(), "hello " + first.id);
  EXPECT_EQ(store_->GetJob(Caller{}, again.id).status().code(), absl::StatusCode::kNotFound);

  // The same key in another tenant is a different job.
  NewJob other = MakeJob("chat", 0, 3, Caller{"other-tenant", "x"});
  other.idempotency_key = "order-42";
  auto out2 = store_->InsertJobs({other});
  ASSERT_TRUE(out2.ok()) << out2.status();
  EXPECT_FALSE((*out2)[0].existing);
  EXPECT_EQ((*out2)[0].job.id(), other.id);
  EXPECT_EQ(QueryInt("SELECT count(*) FROM jobs"), 2);
}

TEST_F(PgJobStoreTest, IdempotencyKeyTwiceInOneBatchCreatesOneJob) {
  NewJob a = MakeJob();
  a.idempotency_key = "dup";
  NewJob plain = MakeJob();
  NewJob b = MakeJob();
  b.idempotency_key = "dup";
  NewJob c = MakeJob("chat", 0, 3, Caller{"t2", "y"});
  c.idempotency_key = "dup";
  auto out = store_->InsertJobs({a, plain, b, c});
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(), 4u);
  EXPECT_FALSE((*out)[0].existing);
  EXPECT_EQ((*out)[0].job.id(), a.id);
  EXPECT_FALSE((*out)[1].existing);
  EXPECT_EQ((*out)[1].job.id(), plain.id);
  EXPECT_TRUE((*out)[2].existing);
  EXPECT_EQ((*out)[2].job.id(), a.id);
  EXPECT_FALSE((*out)[3].existing);
  EXPECT_EQ((*out)[3].job.id(), c.id);
  EXPECT_EQ((*out)[3].job.tenant_id(), "t2");
  EXPECT_EQ(QueryInt("SELECT count(*) FROM jobs"), 3);
  // One job, so one QUEUED event (derived from the job row, not stored).
  EXPECT_EQ(QueryInt(absl::StrCat("SELECT count(*) FROM job_events WHERE job_id = '", a.id, "'")),
            0);
  EXPECT_THAT(DescribeAll(Events(a.id)), ElementsAre("1 state QUEUED a0"));
}

TEST_F(PgJobStoreTest, ConcurrentSubmitsWithOneKeyCreateOneJob) {
  constexpr int kThreads = 8;
  std::vector<absl::StatusOr<std::vector<SubmitOutcome>>> results(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    NewJob j = MakeJob();
    j.idempotency_key = "same-key";
    threads.emplace_back([this, &results, i, j] { results[i] = store_->InsertJobs({j}); });
  }
  for (auto& t : threads) t.join();
  std::set<std::string> ids;
  int created = 0;
  for (const auto& r : results) {
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->size(), 1u);
    ids.insert((*r)[0].job.id());
    if (!(*r)[0].existing) ++created;
  }
  EXPECT_EQ(ids.size(), 1u) << "callers with one idempotency key got different jobs";
  EXPECT_EQ(created, 1);
  EXPECT_EQ(QueryInt("SELECT count(*) FROM jobs"), 1);
}

TEST_F(PgJobStoreTest, OtherTenantsJobIsNotFound) {
  v1::Job job = Submit(MakeJob("chat", 0, 3, Caller{"acme", "alice"}));
  Caller intruder{"evil", "mallory"};

  EXPECT_EQ(store_->GetJob(Caller{}, NewUuid()).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->GetJob(intruder, job.id()).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->ReadEvents(intruder, job.id(), 0, 10).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->CancelJob(intruder, job.id(), "", 0).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->RetryJob(intruder, job.id()).status().code(), absl::StatusCode::kNotFound);
  ListQuery q;
  q.caller = intruder;
  auto page = store_->ListJobs(q);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_THAT(page->jobs, IsEmpty());
  // The intruder's cancel changed nothing.
  EXPECT_EQ(Get(job.id(), Caller{"acme", "bob"}).state(), v1::QUEUED);
}

// ---------------------------------------------------------------------------------------
// ClaimJobs

TEST_F(PgJobStoreTest, ClaimOrdersByPriorityThenAgeAndRespectsTypeAndLimit) {
  // Separate inserts so every job has its own created_at / run_after.
  v1::Job low1 = Submit(MakeJob("chat", 0));
  v1::Job high1 = Submit(MakeJob("chat", 5));
  v1::Job low2 = Submit(MakeJob("chat", 0));
  v1::Job embed = Submit(MakeJob("embed", 9));
  v1::Job high2 = Submit(MakeJob("chat", 5));

  absl::Time before = absl::Now();
  auto claimed = store_->ClaimJobs({"chat"}, 3, "session-1", kLease, kDefaultTimeout);
  ASSERT_TRUE(claimed.ok()) << claimed.status();
  EXPECT_THAT(Ids(*claimed), ElementsAre(high1.id(), high2.id(), low1.id()));
  for (const ClaimedJob& c : *claimed) {
    EXPECT_EQ(c.job.state(), v1::RUNNING);
    EXPECT_EQ(c.job.attempt(), 1);
    EXPECT_EQ(c.job.last_seq(), 2);
    EXPECT_TRUE(c.job.has_started_at());
    EXPECT_GE(c.deadline, before + kDefaultTimeout);
    EXPECT_LE(c.deadline, absl::Now() + kDefaultTimeout);
    EXPECT_THAT(DescribeAll(Events(c.job.id())),
                ElementsAre("1 state QUEUED a0", "2 state RUNNING a1"));
    v1::Job stored = Get(c.job.id());
    EXPECT_EQ(stored.state(), v1::RUNNING);
    EXPECT_EQ(stored.attempt(), 1);
  }

  auto rest = store_->ClaimJobs({"chat"}, 10, "session-1", kLease, kDefaultTimeout);
  ASSERT_TRUE(rest.ok()) << rest.status();
  EXPECT_THAT(Ids(*rest), ElementsAre(low2.id()));
  EXPECT_EQ(Get(embed.id()).state(), v1::QUEUED);

  auto embeds = store_->ClaimJobs({"embed", "chat"}, 10, "session-2", kLease, kDefaultTimeout);
  ASSERT_TRUE(embeds.ok()) << embeds.status();
  EXPECT_THAT(Ids(*embeds), ElementsAre(embed.id()));

  auto none = store_->ClaimJobs({"chat", "embed"}, 10, "session-1", kLease, kDefaultTimeout);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_THAT(*none, IsEmpty());
}

// Regression (issue 10, item 6): the queue index led with priority, so 20,000 jobs of a type
// no worker served, at priority INT32_MAX, sat at its head and every claim read past all of
// them ("Rows Removed by Filter: 20001", 7 ms). A claim now walks only its types' queues.
TEST_F(PgJobStoreTest, ClaimReadsNoQueuedJobsOfTypesItDoesNotServe) {
  std::vector<NewJob> clog;
  for (int i = 0; i < 2000; ++i) clog.push_back(MakeJob("nobody-serves-this", 1000));
  ASSERT_TRUE(store_->InsertJobs(clog).ok());
  v1::Job chat = Submit(MakeJob("chat", 0));
  v1::Job embed = Submit(MakeJob("embed", 7));
  ASSERT_TRUE(admin_->Exec("ANALYZE jobs").ok());

  auto plan = admin_->Exec(absl::StrCat(
      "PREPARE claim(text[], int8, text, int8) AS ", PgJobStore::kClaimJobsSql, ";",
      "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE claim('{chat,embed}', 10, 's', 30000)"));
  ASSERT_TRUE(plan.ok()) << plan.status();
  std::string text;
  int64_t removed = 0;
  for (int i = 0; i < plan->rows(); ++i) {
    std::string line = plan->GetString(i, 0);
    absl::StrAppend(&text, line, "\n");
    if (auto at = line.find("Rows Removed by Filter: "); at != std::string::npos) {
      removed += std::stoll(line.substr(at + 24));
    }
  }
  EXPECT_LE(removed, 2) << text;
  EXPECT_THAT(text, ::testing::HasSubstr("jobs_queue")) << text;
  // Both were claimed, the higher priority first, and nothing of the clog.
  auto claimed = store_->ClaimJobs({"chat"}, 10, "s", kLease, kDefaultTimeout);
  ASSERT_TRUE(claimed.ok()) << claimed.status();
  EXPECT_THAT(*claimed, IsEmpty());
  EXPECT_EQ(Get(chat.id()).state(), v1::RUNNING);
  EXPECT_EQ(Get(embed.id()).state(), v1::RUNNING);
  EXPECT_EQ(QueryInt("SELECT count(*) FROM jobs WHERE state = 1"), 2000);
}

TEST_F(PgJobStoreTest, ClaimTakesTheBestJobsAcrossTypesAndEachTypeOnce) {
  v1::Job chat_low = Submit(MakeJob("chat", -5));
  v1::Job embed_high = Submit(MakeJob("embed", 9));
  v1::Job chat_mid = Submit(MakeJob("chat", 3));
  v1::Job embed_low = Submit(MakeJob("embed", -9));
  auto claimed =
      store_->ClaimJobs({"chat", "embed", "chat"}, 3, "session-1", kLease, kDefaultTimeout);
  ASSERT_TRUE(claimed.ok()) << claimed.status();
  EXPECT_THAT(Ids(*claimed), ElementsAre(embed_high.id(), chat_mid.id(), chat_low.id()));
  EXPECT_EQ(Get(embed_low.id()).state(), v1::QUEUED);
}

// Issue 10, item 6: a queued job nobody takes ends FAILED EXPIRED once it has been runnable
// for its queue timeout; a job without one, or waiting out a retry delay, stays queued.
TEST_F(PgJobStoreTest, QueuedJobPastItsQueueTimeoutExpires) {
  NewJob short_wait = MakeJob("nobody-serves-this");
  short_wait.queue_timeout_ms = 1;
  v1::Job expiring = Submit(short_wait);
  EXPECT_EQ(expiring.queue_timeout().nanos(), 1000000);
  v1::Job forever = Submit(MakeJob("nobody-serves-this"));
  NewJob retried = MakeJob("chat");
  retried.queue_timeout_ms = 1;
  v1::Job backing_off = Submit(retried);
  ClaimedJob c = ClaimOne("chat");
  Finish(c.job.id(), 1, Kind::kRetryableFailure, absl::Hours(1));

  std::vector<v1::Job> expired;
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (expired.empty() && absl::Now() < deadline) {
    auto r = store_->ExpireQueuedJobs(100);
    ASSERT_TRUE(r.ok()) << r.status();
    expired = *r;
    absl::SleepFor(absl::Milliseconds(2));
  }
  ASSERT_EQ(expired.size(), 1u);
  EXPECT_EQ(expired[0].id(), expiring.id());
  EXPECT_EQ(expired[0].state(), v1::FAILED);
  EXPECT_EQ(expired[0].error().code(), "EXPIRED");
  EXPECT_FALSE(expired[0].error().retryable());
  EXPECT_TRUE(expired[0].has_finished_at());
  EXPECT_THAT(DescribeAll(Events(expiring.id())),
              ElementsAre("1 state QUEUED a0", "2 final FAILED a0"));
  EXPECT_EQ(Get(forever.id()).state(), v1::QUEUED);
  EXPECT_EQ(Get(backing_off.id()).state(), v1::QUEUED);
  auto again = store_->ExpireQueuedJobs(100);
  ASSERT_TRUE(again.ok());
  EXPECT_THAT(*again, IsEmpty());
  // A redrive queues it again (its wait starts over).
  auto redriven = store_->RetryJob(Caller{}, expiring.id());
  ASSERT_TRUE(redriven.ok()) << redriven.status();
  EXPECT_EQ(redriven->state(), v1::QUEUED);
}

// Issue 10, item 6: a job type stays known while a worker is seen serving it, and is
// forgotten once nobody served it for the ttl.
TEST_F(PgJobStoreTest, JobTypesUnseenForTheirTtlAreNotKnownAndAreForgotten) {
  ASSERT_TRUE(store_->RegisterJobTypes({"old", "kept"}).ok());
  ASSERT_TRUE(
      admin_->Exec("UPDATE worker_types SET last_seen = now() - interval '2 hours'").ok());
  ASSERT_TRUE(store_->RegisterJobTypes({"kept", "new"}).ok());
  auto known = store_->KnownJobTypes(absl::Hours(1));
  ASSERT_TRUE(known.ok()) << known.status();
  std::sort(known->begin(), known->end());
  EXPECT_THAT(*known, ElementsAre("kept", "new"));
  auto forgotten = store_->ForgetJobTypes(absl::Hours(1));
  ASSERT_TRUE(forgotten.ok()) << forgotten.status();
  EXPECT_EQ(*forgotten, 1);
  EXPECT_EQ(QueryInt("SELECT count(*) FROM worker_types"), 2);
}

TEST_F(PgJobStoreTest, ClaimDeadlineUsesJobTimeout) {
  NewJob j = MakeJob();
  j.timeout_ms = 2000;
  Submit(j);
  absl::Time before = absl::Now();
  ClaimedJob c = ClaimOne();
  EXPECT_GE(c.deadline, before + absl::Seconds(2));
  EXPECT_LE(c.deadline, absl::Now() + absl::Seconds(2));
}

TEST_F(PgJobStoreTest, ConcurrentClaimsNeverHandOutAJobTwice) {
  constexpr int kJobs = 500;
  std::vector<NewJob> batch;
  std::set<std::string> all;
  for (int i = 0; i < kJobs; ++i) {
    batch.push_back(MakeJob("chat", i % 3));
    all.insert(batch.back().id);
  }
  auto inserted = store_->InsertJobs(batch);
  ASSERT_TRUE(inserted.ok()) << inserted.status();

  absl::Mutex mu;
  std::vector<std::string> claimed_ids;
  std::vector<std::string> errors;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      // Its own pool: each claimer surely runs on its own connection.
      pg::Pool pool(conninfo(), 1);
      PgJobStore store(&pool);
      while (true) {
        auto c =
            store.ClaimJobs({"chat"}, 25, absl::StrCat("session-", t), kLease, kDefaultTimeout);
        absl::MutexLock lock(&mu);
        if (!c.ok()) {
          errors.push_back(c.status().ToString());
          return;
        }
        if (c->empty()) return;
        for (const auto& job : *c) {
          claimed_ids.push_back(job.job.id());
          if (job.job.attempt() != 1) errors.push_back("attempt != 1 for " + job.job.id());
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_THAT(errors, IsEmpty());
  std::set<std::string> unique(claimed_ids.begin(), claimed_ids.end());
  EXPECT_EQ(claimed_ids.size(), unique.size()) << "a job was claimed twice";
  EXPECT_EQ(unique, all);
  EXPECT_EQ(QueryInt("SELECT count(*) FROM jobs WHERE state = 2 AND attempt = 1"), kJobs);
}

// ---------------------------------------------------------------------------------------
// FinishAttempts

TEST_F(PgJobStoreTest, StaleAttemptIsFenced) {
  v1::Job job = Submit(MakeJob());
  ClaimedJob first = ClaimOne();
  ASSERT_EQ(first.job.attempt(), 1);
  ASSERT_EQ(Finish(job.id(), 1, Kind::kRetryableFailure).size(), 1u);
  ClaimedJob second = ClaimOne();
  ASSERT_EQ(second.job.attempt(), 2);

  // A zombie worker of attempt 1 reports success: nothing changes.
  EXPECT_THAT(Finish(job.id(), 1, Kind::kSucceeded), IsEmpty());
  EXPECT_THAT(Finish(job.id(), 1, Kind::kFatalFailure), IsEmpty());
  v1::Job now = Get(job.id());
  EXPECT_EQ(now.state(), v1::RUNNING);
  EXPECT_EQ(now.attempt(), 2);
  EXPECT_FALSE(now.has_result());
  EXPECT_EQ(now.last_seq(), second.job.last_seq());

  // The current attempt is accepted once; a repeat of it changes nothing either.
  auto done = Finish(job.id(), 2, Kind::kSucceeded);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].state(), v1::SUCCEEDED);
  EXPECT_THAT(Finish(job.id(), 2, Kind::kFatalFailure), IsEmpty());
  EXPECT_EQ(Get(job.id()).state(), v1::SUCCEEDED);
}

TEST_F(PgJobStoreTest, RetryableFailureRequeuesAfterDelay) {
  v1::Job job = Submit(MakeJob());
  ClaimOne();
  absl::Time before = absl::Now();
  auto changed = Finish(job.id(), 1, Kind::kRetryableFailure, absl::Hours(1));
  ASSERT_EQ(changed.size(), 1u);
  const v1::Job& q = changed[0];
  EXPECT_EQ(q.state(), v1::QUEUED);
  EXPECT_EQ(q.attempt(), 1);
  EXPECT_EQ(q.error().code(), "RATE_LIMITED");
  EXPECT_TRUE(q.error().retryable());
  EXPECT_FALSE(q.has_finished_at());
  EXPECT_GT(FromProtoTimestamp(q.run_after()), before + absl::Minutes(59));
  EXPECT_EQ(q.last_seq(), 3);

  // Not claimable before run_after.
  auto none = store_->ClaimJobs({"chat"}, 10, "session-1", kLease, kDefaultTimeout);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_THAT(*none, IsEmpty());
  EXPECT_THAT(DescribeAll(Events(job.id())), ElementsAre("1 state QUEUED a0", "2 state RUNNING a1",
                                                         "3 state QUEUED a1 err=RATE_LIMITED"));
}

TEST_F(PgJobStoreTest, RetryableFailureFailsWhenAttemptsAreUsedUp) {
  v1::Job job = Submit(MakeJob("chat", 0, /*max_attempts=*/2));
  ASSERT_EQ(ClaimOne().job.attempt(), 1);
  auto r1 = Finish(job.id(), 1, Kind::kRetryableFailure);
  ASSERT_EQ(r1.size(), 1u);
  EXPECT_EQ(r1[0].state(), v1::QUEUED);

  ClaimedJob second = ClaimOne();
  ASSERT_EQ(second.job.attempt(), 2);
  auto r2 = Finish(job.id(), 2, Kind::kRetryableFailure);
  ASSERT_EQ(r2.size(), 1u);
  EXPECT_EQ(r2[0].state(), v1::FAILED);
  EXPECT_EQ(r2[0].attempt(), 2);
  EXPECT_EQ(r2[0].error().code(), "RATE_LIMITED");
  EXPECT_TRUE(r2[0].has_finished_at());

  auto events = Events(job.id());
  EXPECT_THAT(DescribeAll(events), ElementsAre("1 state QUEUED a0", "2 state RUNNING a1",
                                               "3 state QUEUED a1 err=RATE_LIMITED",
                                               "4 state RUNNING a2 discard", "5 final FAILED a2"));
  ASSERT_EQ(events.size(), 5u);
  EXPECT_EQ(events[4].final_job().error().code(), "RATE_LIMITED");
  EXPECT_EQ(events[4].final_job().id(), job.id());
}

TEST_F(PgJobStoreTest, FatalFailureFailsAtOnce) {
  v1::Job job = Submit(MakeJob("chat", 0, 5));
  ClaimOne();
  auto r = Finish(job.id(), 1, Kind::kFatalFailure, absl::ZeroDuration(), /*last_seq=*/7);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].state(), v1::FAILED);
  EXPECT_EQ(r[0].attempt(), 1);
  EXPECT_EQ(r[0].error().code(), "INVALID_INPUT");
  EXPECT_FALSE(r[0].error().retryable());
  EXPECT_EQ(r[0].last_seq(), 8);
  auto none = store_->ClaimJobs({"chat"}, 10, "session-1", kLease, kDefaultTimeout);
  ASSERT_TRUE(none.ok());
  EXPECT_THAT(*none, IsEmpty());
}

TEST_F(PgJobStoreTest, SuccessStoresResultAndFinalEvent) {
  v1::Job job = Submit(MakeJob());
  ClaimOne();
  // The replica streamed deltas with seqs 3..5: the final event comes after them.
  ASSERT_TRUE(store_->AppendDeltas({Deltas(job.id(), 1, 3, {"Hel", "lo", "!"})}).ok());
  auto r = Finish(job.id(), 1, Kind::kSucceeded, absl::ZeroDuration(), /*last_seq=*/5);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].state(), v1::SUCCEEDED);
  EXPECT_EQ(r[0].last_seq(), 6);
  EXPECT_EQ(r[0].result().fields().at("text").string_value(), "result of attempt 1");
  EXPECT_FALSE(r[0].has_error());
  EXPECT_TRUE(r[0].has_finished_at());

  v1::Job stored = Get(job.id());
  EXPECT_EQ(stored.state(), v1::SUCCEEDED);
  EXPECT_EQ(stored.result().fields().at("text").string_value(), "result of attempt 1");

  auto page = store_->ReadEvents(Caller{}, job.id(), 0, 100);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_THAT(DescribeAll(page->events),
              ElementsAre("1 state QUEUED a0", "2 state RUNNING a1", "3 delta a1 Hel",
                          "4 delta a1 lo", "5 delta a1 !", "6 final SUCCEEDED a1"));
  const v1::Job& final_job = page->events.back().final_job();
  EXPECT_EQ(final_job.result().fields().at("text").string_value(), "result of attempt 1");
  EXPECT_EQ(final_job.last_seq(), 6);
  EXPECT_FALSE(final_job.has_error());
  EXPECT_EQ(page->job.state(), v1::SUCCEEDED);
}

// ---------------------------------------------------------------------------------------
// Batches over the real database: one refused item fails alone (SubmitBatcher,
// AttemptFinisher), binary bytea parameters round-trip.

// Delegates to the real store; the first InsertJobs/FinishAttempts call waits for the gate,
// so the test can gather the next batch behind it.
class GatedPgStore : public FakeJobStore {
 public:
  explicit GatedPgStore(JobStore* real) : real_(real) {}
  void OpenGate() {
    absl::MutexLock lock(&mu_);
    open_ = true;
  }
  bool WaitForCalls(int n) {
    absl::MutexLock lock(&mu_);
    auto started = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return calls_ >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&started), absl::Seconds(10));
  }
  absl::StatusOr<std::vector<SubmitOutcome>> InsertJobs(const std::vector<NewJob>& jobs) override {
    Enter();
    return real_->InsertJobs(jobs);
  }
  absl::StatusOr<std::vector<v1::Job>> FinishAttempts(
      const std::vector<AttemptOutcome>& outcomes) override {
    Enter();
    return real_->FinishAttempts(outcomes);
  }

 private:
  void Enter() {
    absl::MutexLock lock(&mu_);
    ++calls_;
    auto open = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return open_; };
    mu_.Await(absl::Condition(&open));
  }
  JobStore* real_;
  absl::Mutex mu_;
  bool open_ ABSL_GUARDED_BY(mu_) = false;
  int calls_ ABSL_GUARDED_BY(mu_) = 0;
};

// Regression (issue 10 item 4): a NUL in one submit's idempotency key made the group-commit
// statement fail ("malformed array literal ... parameter $8") for every submit in the batch.
// (Validation now rejects such a key up front; this is the store-level safety net.)
TEST_F(PgJobStoreTest, SubmitRefusedByTheDatabaseFailsAloneInItsBatch) {
  GatedPgStore gated(store_.get());
  SubmitBatcher batcher(&gated, nullptr, /*writers=*/1);
  constexpr int kSubmits = 8;
  absl::Mutex mu;
  std::vector<std::optional<absl::StatusOr<SubmitOutcome>>> answers(kSubmits);
  auto answer = [&](int i) {
    return [&, i](absl::StatusOr<SubmitOutcome> r) {
      absl::MutexLock lock(&mu);
      answers[i] = std::move(r);
    };
  };
  batcher.Submit(MakeJob(), answer(0));
  ASSERT_TRUE(gated.WaitForCalls(1));  // batch 1 = {0}; the others gather behind it
  std::vector<std::thread> threads;
  for (int i = 1; i < kSubmits; ++i) {
    threads.emplace_back([&, i] {
      NewJob j = MakeJob();
      j.idempotency_key = i == 3 ? std::string("bad\0key", 7) : absl::StrCat("key-", i);
      batcher.Submit(std::move(j), answer(i));
    });
  }
  for (auto& t : threads) t.join();
  gated.OpenGate();
  batcher.Stop();  // answers everything queued
  for (int i = 0; i < kSubmits; ++i) {
    ASSERT_TRUE(answers[i].has_value()) << i;
    const absl::StatusOr<SubmitOutcome>& r = *answers[i];
    if (i == 3) {
      EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
      continue;
    }
    ASSERT_TRUE(r.ok()) << i << ": " << r.status();
    EXPECT_EQ(Get(r->job.id()).state(), v1::QUEUED);
  }
}

// Regression (issue 9 bug 2): an outcome the database refuses failed its whole batch, which
// was retried 50 times and dropped: the other jobs' finished results were lost and the jobs
// stayed RUNNING until their lease expired (then ran again: paid work done twice).
TEST_F(PgJobStoreTest, FinishedResultsSurviveAnOutcomeTheDatabaseRefuses) {
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(Submit(MakeJob()).id());
  auto claimed = store_->ClaimJobs({"chat"}, 4, "session-1", kLease, kDefaultTimeout);
  ASSERT_TRUE(claimed.ok()) << claimed.status();
  ASSERT_EQ(claimed->size(), 4u);

  GatedPgStore gated(store_.get());
  EventHub hub;
  AttemptFinisherOptions options;
  options.threads = 1;
  AttemptFinisher finisher(&gated, &hub, nullptr, options);
  AttemptOutcome first;
  first.job_id = ids[0];
  first.attempt = 1;
  first.result = TextStruct("text", "zero");
  finisher.Submit(first, {});
  ASSERT_TRUE(gated.WaitForCalls(1));
  for (int i = 1; i < 4; ++i) {
    AttemptOutcome o;
    o.job_id = ids[i];
    o.attempt = 1;
    o.last_seq = 4;  // the output below used seqs 3 and 4
    // A 1 MiB result: exercises the binary bytea[] parameters with real sizes.
    o.result = TextStruct("text", std::string(1 << 20, static_cast<char>('a' + i)));
    v1::internal::DeltaBatch out = Deltas(ids[i], 1, 3, {"par", "tial"}).batch;
    finisher.Submit(o, out);
    if (i == 2) {
      AttemptOutcome bad;  // the database cannot take this id
      bad.job_id = "not-a-uuid";
      bad.attempt = 1;
      finisher.Submit(bad, {});
    }
  }
  gated.OpenGate();
  finisher.Flush();
  for (int i = 0; i < 4; ++i) {
    v1::Job job = Get(ids[i]);
    EXPECT_EQ(job.state(), v1::SUCCEEDED) << i;
    if (i > 0) {
      EXPECT_EQ(job.result().fields().at("text").string_value().size(), size_t{1} << 20);
      auto page = store_->ReadEvents(Caller{}, ids[i], 0, 100);
      ASSERT_TRUE(page.ok()) << page.status();
      EXPECT_THAT(DescribeAll(page->events),
                  ElementsAre("1 state QUEUED a0", "2 state RUNNING a1", "3 delta a1 par",
                              "4 delta a1 tial", "5 final SUCCEEDED a1"));
    }
  }
  finisher.Stop();
}

// An outcome the database refuses for its own content ends the job FAILED with the reason.
TEST_F(PgJobStoreTest, OutcomeRefusedForItsContentFailsTheJobWithTheReason) {
  v1::Job job = Submit(MakeJob());
  ClaimOne();
  // A retry delay so long that the database's interval arithmetic overflows: PostgreSQL
  // refuses this one outcome (SQLSTATE 22008), however often it is retried.
  AttemptOutcome o;
  o.job_id = job.id();
  o.attempt = 1;
  o.kind = Kind::kRetryableFailure;
  o.error.set_code("RATE_LIMITED");
  o.retry_delay = absl::Hours(24LL * 365 * 400000);  // "interval out of range"
  EventHub hub;
  AttemptFinisherOptions options;
  options.threads = 1;
  AttemptFinisher finisher(store_.get(), &hub, nullptr, options);
  finisher.Submit(o, {});
  finisher.Flush();
  v1::Job stored = Get(job.id());
  EXPECT_EQ(stored.state(), v1::FAILED);
  EXPECT_EQ(stored.error().code(), "RESULT_NOT_STORED");
  EXPECT_THAT(stored.error().message(), ::testing::HasSubstr("could not be stored"));
  finisher.Stop();
}

// ---------------------------------------------------------------------------------------
// CancelJob / RetryJob

TEST_F(PgJobStoreTest, CancelQueuedAndRunningJobs) {
  v1::Job queued = Submit(MakeJob("embed"));
  auto c1 = store_->CancelJob(Caller{}, queued.id(), "", 0);
  ASSERT_TRUE(c1.ok()) << c1.status();
  EXPECT_EQ(c1->state(), v1::CANCELLED);
  EXPECT_EQ(c1->error().code(), "CANCELLED");
  EXPECT_FALSE(c1->error().message().empty());
  EXPECT_TRUE(c1->has_finished_at());
  EXPECT_THAT(DescribeAll(Events(queued.id())),
              ElementsAre("1 state QUEUED a0", "2 final CANCELLED a0"));
  auto none = store_->ClaimJobs({"embed"}, 10, "s", kLease, kDefaultTimeout);
  ASSERT_TRUE(none.ok());
  EXPECT_THAT(*none, IsEmpty());

  v1::Job running = Submit(MakeJob());
  ClaimOne();
  // The replica running it already used seqs up to 9 for deltas.
  auto c2 = store_->CancelJob(Caller{}, running.id(), "user gave up", 9);
  ASSERT_TRUE(c2.ok()) << c2.status();
  EXPECT_EQ(c2->state(), v1::CANCELLED);
  EXPECT_EQ(c2->error().message(), "user gave up");
  // Past anything a replica may have streamed without storing it (kTakeoverSeqGap).
  EXPECT_EQ(c2->last_seq(), 9 + kTakeoverSeqGap);
  // The worker's late completion of the cancelled attempt is fenced.
  EXPECT_THAT(Finish(running.id(), 1, Kind::kSucceeded), IsEmpty());
  EXPECT_EQ(Get(running.id()).state(), v1::CANCELLED);
  EXPECT_FALSE(Get(running.id()).has_result());
}

TEST_F(PgJobStoreTest, CancelFinishedJobIsFailedPrecondition) {
  v1::Job job = Submit(MakeJob());
  ClaimOne();
  ASSERT_EQ(Finish(job.id(), 1, Kind::kSucceeded).size(), 1u);
  auto r = store_->CancelJob(Caller{}, job.id(), "", 0);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
  EXPECT_EQ(Get(job.id()).state(), v1::SUCCEEDED);
  // Cancelling twice: the second one also finds nothing to cancel.
  v1::Job other = Submit(MakeJob());
  ASSERT_TRUE(store_->CancelJob(Caller{}, other.id(), "", 0).ok());
  EXPECT_EQ(store_->CancelJob(Caller{}, other.id(), "", 0).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->CancelJob(Caller{}, NewUuid(), "", 0).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(PgJobStoreTest, RetryJobRequeuesFailedJobWithGrowingAttempts) {
  v1::Job job = Submit(MakeJob("chat", 0, /*max_attempts=*/1));
  ClaimOne();
  ASSERT_EQ(Finish(job.id(), 1, Kind::kRetryableFailure).at(0).state(), v1::FAILED);

  auto retried = store_->RetryJob(Caller{}, job.id());
  ASSERT_TRUE(retried.ok()) << retried.status();
  EXPECT_EQ(retried->state(), v1::QUEUED);
  EXPECT_EQ(retried->attempt(), 1);
  EXPECT_EQ(retried->max_attempts(), 2);
  EXPECT_FALSE(retried->has_error());
  EXPECT_FALSE(retried->has_finished_at());

  // RetryJob on a QUEUED job has nothing to redrive.
  EXPECT_EQ(store_->RetryJob(Caller{}, job.id()).status().code(),
            absl::StatusCode::kFailedPrecondition);

  ClaimedJob again = ClaimOne();
  EXPECT_EQ(again.job.attempt(), 2);  // the fencing token keeps growing
  EXPECT_EQ(store_->RetryJob(Caller{}, job.id()).status().code(),
            absl::StatusCode::kFailedPrecondition);
  auto done = Finish(job.id(), 2, Kind::kSucceeded);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].state(), v1::SUCCEEDED);
  EXPECT_EQ(store_->RetryJob(Caller{}, job.id()).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(
      DescribeAll(Events(job.id())),
      ElementsAre("1 state QUEUED a0", "2 state RUNNING a1", "3 final FAILED a1",
                  "4 state QUEUED a1", "5 state RUNNING a2 discard", "6 final SUCCEEDED a2"));
}

TEST_F(PgJobStoreTest, RetryJobRedrivesCancelledJob) {
  v1::Job job = Submit(MakeJob("chat", 0, 3));
  ASSERT_TRUE(store_->CancelJob(Caller{}, job.id(), "", 0).ok());
  auto retried = store_->RetryJob(Caller{}, job.id());
  ASSERT_TRUE(retried.ok()) << retried.status();
  EXPECT_EQ(retried->state(), v1::QUEUED);
  EXPECT_EQ(ClaimOne().job.attempt(), 1);
}

// ---------------------------------------------------------------------------------------
// AppendDeltas / ReadEvents

TEST_F(PgJobStoreTest, DeltaRowsExpandInOrderAndResumeInsideARow) {
  v1::Job job = Submit(MakeJob());
  ClaimOne();
  ASSERT_TRUE(store_->AppendDeltas({Deltas(job.id(), 1, 3, {"a", "b", "c"})}).ok());
  ASSERT_TRUE(store_->AppendDeltas({Deltas(job.id(), 1, 6, {"d", "e"})}).ok());
  // Appending output leaves the job row alone (no contention with transitions)...
  EXPECT_EQ(Get(job.id()).last_seq(), 2);

  EXPECT_THAT(DescribeAll(Events(job.id())),
              ElementsAre("1 state QUEUED a0", "2 state RUNNING a1", "3 delta a1 a", "4 delta a1 b",
                          "5 delta a1 c", "6 delta a1 d", "7 delta a1 e"));
  // Resume from the middle of the first row: exactly the later pieces.
  EXPECT_THAT(DescribeAll(Events(job.id(), 4)),
              ElementsAre("5 delta a1 c", "6 delta a1 d", "7 delta a1 e"));
  EXPECT_THAT(DescribeAll(Events(job.id(), 5)), ElementsAre("6 delta a1 d", "7 delta a1 e"));
  EXPECT_THAT(Events(job.id(), 7), IsEmpty());
  // ...and a transition made without the running replica's counter still lands after it.
  auto cancelled = store_->CancelJob(Caller{}, job.id(), "", 0);
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(cancelled->last_seq(), 7 + kTakeoverSeqGap);

  // Each delta keeps the time it was streamed with.
  auto events = Events(job.id(), 2);
  ASSERT_FALSE(events.empty());
  EXPECT_GT(TimestampToMicros(events[0].time()), NowMicros() - 60'000'000);
}

TEST_F(PgJobStoreTest, DuplicatePiecesInTwoRowsAreEmittedOnce) {
  v1::Job job = Submit(MakeJob());
  ClaimOne();
  // The flusher wrote 3..5, then the attempt's end wrote its in-flight pieces again with 6.
  ASSERT_TRUE(store_->AppendDeltas({Deltas(job.id(), 1, 3, {"a", "b", "c"})}).ok());
  ASSERT_TRUE(store_->AppendDeltas({Deltas(job.id(), 1, 4, {"b", "c", "d"})}).ok());
  // And the very same row twice (a retried write) is harmless.
  ASSERT_TRUE(store_->AppendDeltas({Deltas(job.id(), 1, 4, {"b", "c", "d"})}).ok());
  EXPECT_THAT(DescribeAll(Events(job.id(), 2)),
              ElementsAre("3 delta a1 a", "4 delta a1 b", "5 delta a1 c", "6 delta a1 d"));
  EXPECT_THAT(DescribeAll(Events(job.id(), 3)),
              ElementsAre("4 delta a1 b", "5 delta a1 c", "6 delta a1 d"));
}

TEST_F(PgJobStoreTest, DeltasOfSupersededAttemptAreDropped) {
  v1::Job job = Submit(MakeJob());
  ClaimOne();
  ASSERT_EQ(Finish(job.id(), 1, Kind::kRetryableFailure).size(), 1u);  // seq 3
  ClaimedJob second = ClaimOne();                                      // seq 4
  ASSERT_EQ(second.job.attempt(), 2);
  // A zombie of attempt 1 and the live attempt 2 flush in one call.
  ASSERT_TRUE(store_
                  ->AppendDeltas(
                      {Deltas(job.id(), 1, 20, {"old", "stuff"}), Deltas(job.id(), 2, 5, {"new"})})
                  .ok());
  EXPECT_THAT(DescribeAll(Events(job.id(), 3)),
              ElementsAre("4 state RUNNING a2 discard", "5 delta a2 new"));
}

TEST_F(PgJobStoreTest, ReadEventsPagesByStoredRows) {
  v1::Job job = Submit(MakeJob());
  ClaimOne();
  ASSERT_TRUE(store_->AppendDeltas({Deltas(job.id(), 1, 3, {"a", "b"})}).ok());
  ASSERT_TRUE(store_->AppendDeltas({Deltas(job.id(), 1, 5, {"c"})}).ok());
  // Stored rows: RUNNING, delta(a,b), delta(c); the QUEUED event is derived, not a row.
  auto page = store_->ReadEvents(Caller{}, job.id(), 0, 2);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_TRUE(page->more);
  EXPECT_THAT(DescribeAll(page->events), ElementsAre("1 state QUEUED a0", "2 state RUNNING a1",
                                                     "3 delta a1 a", "4 delta a1 b"));
  page = store_->ReadEvents(Caller{}, job.id(), 4, 2);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_FALSE(page->more);
  EXPECT_THAT(DescribeAll(page->events), ElementsAre("5 delta a1 c"));
  page = store_->ReadEvents(Caller{}, job.id(), 5, 2);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_FALSE(page->more);
  EXPECT_THAT(page->events, IsEmpty());
}

TEST_F(PgJobStoreTest, ReadEventsBatchAnswersEachQueryAsReadEventsWould) {
  v1::Job running = Submit(MakeJob());
  ClaimOne();
  ASSERT_TRUE(store_->AppendDeltas({Deltas(running.id(), 1, 3, {"a", "b"})}).ok());
  ASSERT_TRUE(store_->AppendDeltas({Deltas(running.id(), 1, 5, {"c"})}).ok());
  v1::Job queued = Submit(MakeJob());
  v1::Job other = Submit(MakeJob("chat", 0, 3, Caller{"acme", "alice"}));
  const std::string missing = NewUuid();
  std::vector<EventQuery> queries = {{Caller{}, running.id(), 0},
                                     {Caller{}, queued.id(), 0},
                                     {Caller{}, other.id(), 0},  // another tenant's job
                                     {Caller{}, missing, 0},
                                     {Caller{}, running.id(), 4},
                                     {Caller{}, queued.id(), 1}};
  auto pages = store_->ReadEventsBatch(queries, 2);
  ASSERT_TRUE(pages.ok()) << pages.status();
  ASSERT_EQ(pages->size(), queries.size());
  for (size_t i = 0; i < queries.size(); ++i) {
    auto one = store_->ReadEvents(queries[i].caller, queries[i].job_id, queries[i].after_seq, 2);
    const auto& batched = (*pages)[i];
    ASSERT_EQ(batched.status().code(), one.status().code()) << i;
    if (!one.ok()) continue;
    EXPECT_EQ(batched->more, one->more) << i;
    EXPECT_EQ(DescribeAll(batched->events), DescribeAll(one->events)) << i;
    EXPECT_EQ(batched->job.id(), one->job.id()) << i;
    EXPECT_EQ(batched->job.state(), one->job.state()) << i;
  }
  EXPECT_EQ((*pages)[2].status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ((*pages)[3].status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(DescribeAll((*pages)[0]->events),
              ElementsAre("1 state QUEUED a0", "2 state RUNNING a1", "3 delta a1 a",
                          "4 delta a1 b"));
  EXPECT_TRUE((*pages)[0]->more);
  EXPECT_THAT(DescribeAll((*pages)[1]->events), ElementsAre("1 state QUEUED a0"));
  EXPECT_THAT(DescribeAll((*pages)[4]->events), ElementsAre("5 delta a1 c"));
  EXPECT_THAT((*pages)[5]->events, IsEmpty());
}

// Regression (fixed): AppendDeltas fences only on the attempt number (JOIN jobs ON j.attempt =
// u_attempt), not on the job still RUNNING. When a job is cancelled by another replica (its
// CancelJob only knows the stored last_seq), the replica that runs the attempt later flushes deltas
// it had buffered; they are stored after the final_job event and raise last_seq past it, so
// ReadEvents returns output after the "always the last event" final_job. Every legitimate
// AppendDeltas (flusher, AttemptFinisher, local CancelJob) happens while the job is RUNNING,
// so the fix is `AND j.state = 2` in the join of pg_job_store.cc AppendDeltas.
TEST_F(PgJobStoreTest, DeltasAfterTheFinalEventAreDropped) {
  v1::Job job = Submit(MakeJob());
  ClaimOne();
  ASSERT_TRUE(store_->AppendDeltas({Deltas(job.id(), 1, 3, {"a"})}).ok());
  auto cancelled = store_->CancelJob(Caller{}, job.id(), "", /*last_seq=*/0);
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  const int64_t final_seq = 3 + kTakeoverSeqGap;
  ASSERT_EQ(cancelled->last_seq(), final_seq);
  // The running replica's flusher had pieces 4..6 buffered.
  ASSERT_TRUE(store_->AppendDeltas({Deltas(job.id(), 1, 4, {"b", "c", "d"})}).ok());
  auto events = Events(job.id());
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(Describe(events.back()), absl::StrCat(final_seq, " final CANCELLED a1"))
      << "events: " << ::testing::PrintToString(DescribeAll(events));
  EXPECT_EQ(Get(job.id()).last_seq(), final_seq);
}

// A watcher on the running replica gets TransitionEvent(job) live; one that resumes later
// reads the same transition back from the store. Both must see the same event.
// Regression (fixed): the RUNNING state change of a retried attempt read back from job_events
// carries the previous attempt's error (e.g. RATE_LIMITED) while the live one (TransitionEvent,
// event_hub.cc:42, which drops the error for RUNNING) does not. Cause: ClaimJobs
// (pg_job_store.cc, claim_jobs) leaves jobs.error set, and TRANSITION_EVENTS copies the error
// column into every event; ReadEvents then attaches it. The job itself also reports the old
// error while RUNNING although job.proto says error is set only on FAILED/CANCELLED/QUEUED.
// Fix: `error = NULL` in ClaimJobs' UPDATE (or `CASE WHEN state = 2 THEN NULL ELSE error END`
// in TRANSITION_EVENTS, or skip the error for RUNNING in ReadEvents).
TEST_F(PgJobStoreTest, StoredTransitionEventsMatchLiveOnes) {
  v1::Job job = Submit(MakeJob("chat", 0, 3));
  std::vector<v1::JobEvent> live;
  live.push_back(TransitionEvent(ClaimOne().job));
  live.push_back(TransitionEvent(Finish(job.id(), 1, Kind::kRetryableFailure).at(0)));
  live.push_back(TransitionEvent(ClaimOne().job));
  live.push_back(TransitionEvent(Finish(job.id(), 2, Kind::kSucceeded).at(0)));
  std::vector<v1::JobEvent> stored = Events(job.id(), 1);
  ASSERT_EQ(stored.size(), live.size()) << ::testing::PrintToString(DescribeAll(stored));
  for (size_t i = 0; i < live.size(); ++i) {
    EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(stored[i], live[i]))
        << "stored:\n"
        << stored[i].DebugString() << "live:\n"
        << live[i].DebugString();
  }
}

// ---------------------------------------------------------------------------------------
// Leases

TEST_F(PgJobStoreTest, ExpiredLeaseIsRequeuedThenFailedWhenAttemptsAreUsedUp) {
  v1::Job held = Submit(MakeJob("embed"));
  ClaimOne("embed", absl::Minutes(5), "healthy-session");
  v1::Job job = Submit(MakeJob("chat", 0, /*max_attempts=*/2));
  ClaimOne("chat", absl::Milliseconds(1), "dead-session");

  // Poll the reaper until the 1 ms lease has expired on the server's clock.
  auto reap = [&]() -> std::vector<v1::Job> {
    absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (absl::Now() < deadline) {
      auto r = store_->RequeueExpiredLeases(100);
      EXPECT_TRUE(r.ok()) << r.status();
      if (!r.ok() || !r->empty()) return r.ok() ? *r : std::vector<v1::Job>{};
      absl::SleepFor(absl::Milliseconds(2));
    }
    return {};
  };
  std::vector<v1::Job> first = reap();
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0].id(), job.id());
  EXPECT_EQ(first[0].state(), v1::QUEUED);
  EXPECT_EQ(first[0].error().code(), "LEASE_EXPIRED");
  EXPECT_EQ(Get(held.id()).state(), v1::RUNNING);

  ClaimedJob again = ClaimOne("chat", absl::Milliseconds(1), "dead-session");
  EXPECT_EQ(again.job.attempt(), 2);
  std::vector<v1::Job> second = reap();
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].state(), v1::FAILED);
  EXPECT_EQ(second[0].error().code(), "LEASE_EXPIRED");
  EXPECT_TRUE(second[0].has_finished_at());
  EXPECT_THAT(
      DescribeAll(Events(job.id())),
      ElementsAre("1 state QUEUED a0", "2 state RUNNING a1",
                  absl::StrCat(2 + kTakeoverSeqGap, " state QUEUED a1 err=LEASE_EXPIRED"),
                  absl::StrCat(3 + kTakeoverSeqGap, " state RUNNING a2 discard"),
                  absl::StrCat(3 + 2 * kTakeoverSeqGap, " final FAILED a2")));
  EXPECT_EQ(Get(held.id()).state(), v1::RUNNING);
}

// Regression (found by the fault suite's scheduler kill): the replica streaming an attempt
// relays each piece to its watchers under a new seq before storing it. When it died, the
// other replica requeued the attempt at max(stored seq) + 1, a seq such a watcher had already
// seen; resuming after its last seq it skipped the requeue and the next attempt's
// discard_output, and showed the dead attempt's text followed by the new attempt's.
// Transitions another replica makes for a RUNNING job now land past that window.
TEST_F(PgJobStoreTest, TakeoverTransitionsLandPastSeqsTheRunningReplicaMayHaveStreamed) {
  v1::Job job = Submit(MakeJob("chat", 0, 3));
  ClaimOne("chat", absl::Minutes(5), "dead-replica-session");
  ASSERT_TRUE(store_->AppendDeltas({Deltas(job.id(), 1, 3, {"stored"})}).ok());
  // The dead replica had also streamed seqs 4..1000 live, never stored.
  const int64_t seen_live = 1000;
  v1::JobError error;
  error.set_code("WORKER_DISCONNECTED");
  auto released = store_->ReleaseAttempts({{job.id(), 1}}, error);
  ASSERT_TRUE(released.ok()) << released.status();
  ASSERT_EQ(released->size(), 1u);
  EXPECT_GT((*released)[0].last_seq(), seen_live);
  ClaimedJob again = ClaimOne();
  EXPECT_GT(again.job.last_seq(), seen_live);  // the discard_output RUNNING event
  auto cancelled = store_->CancelJob(Caller{}, job.id(), "", 0);
  ASSERT_TRUE(cancelled.ok());
  EXPECT_GT(cancelled->last_seq(), again.job.last_seq() + seen_live);
  // A transition of a job that is not running needs no gap.
  v1::Job queued = Submit(MakeJob());
  auto c = store_->CancelJob(Caller{}, queued.id(), "", 0);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->last_seq(), 2);
}

// A scheduler cut off from PostgreSQL (a partition, a dead host that sends no RST) must
// notice within seconds: with libpq's defaults a statement on such a connection hangs until
// TCP gives up, about 15 minutes later.
TEST(PgConnectionTest, LostNetworkIsNoticedInSecondsUnlessTheConninfoSaysOtherwise) {
  auto server = aijobs::testing::SharedPgServer();
  ASSERT_TRUE(server.ok()) << server.status();
  auto conn = pg::Connection::Open((*server)->conninfo());
  ASSERT_TRUE(conn.ok()) << conn.status();
  EXPECT_EQ((*conn)->Option("tcp_user_timeout"), "20000");
  EXPECT_EQ((*conn)->Option("keepalives_idle"), "10");
  EXPECT_EQ((*conn)->Option("connect_timeout"), "5");
  EXPECT_EQ((*conn)->Option("dbname"), "aijobs");
  auto own = pg::Connection::Open((*server)->conninfo() + " tcp_user_timeout=1234");
  ASSERT_TRUE(own.ok()) << own.status();
  EXPECT_EQ((*own)->Option("tcp_user_timeout"), "1234");
  // A URL works the same way.
  auto url = pg::Connection::Open(absl::StrCat("postgresql://postgres@127.0.0.1:",
                                               (*server)->port(), "/aijobs?connect_timeout=7"));
  ASSERT_TRUE(url.ok()) << url.status();
  EXPECT_EQ((*url)->Option("connect_timeout"), "7");
  EXPECT_EQ((*url)->Option("tcp_user_timeout"), "20000");
}

TEST_F(PgJobStoreTest, ReleaseAttemptsRequeuesOnlyTheNamedRunningAttempts) {
  v1::Job job = Submit(MakeJob("chat", 0, /*max_attempts=*/2));
  ClaimOne("chat", absl::Minutes(5), "lost-session");
  v1::Job other = Submit(MakeJob("embed"));
  ClaimOne("embed", absl::Minutes(5), "healthy-session");
  // Streamed output already flushed: the requeue event must come after it.
  ASSERT_TRUE(store_->AppendDeltas({Deltas(job.id(), 1, 3, {"Hel", "lo"})}).ok());
  v1::JobError error;
  error.set_code("WORKER_DISCONNECTED");
  error.set_retryable(true);

  // A stale attempt number, an unknown job and a job that is not running change nothing.
  auto none = store_->ReleaseAttempts(
      {{job.id(), 7}, {NewUuid(), 1}, {Submit(MakeJob("rare")).id(), 0}}, error);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_THAT(*none, IsEmpty());

  auto released = store_->ReleaseAttempts({{job.id(), 1}}, error);
  ASSERT_TRUE(released.ok()) << released.status();
  ASSERT_EQ(released->size(), 1u);
  EXPECT_EQ((*released)[0].state(), v1::QUEUED);
  EXPECT_EQ((*released)[0].error().code(), "WORKER_DISCONNECTED");
  EXPECT_EQ(Get(other.id()).state(), v1::RUNNING);
  EXPECT_THAT(DescribeAll(Events(job.id())),
              ElementsAre("1 state QUEUED a0", "2 state RUNNING a1", "3 delta a1 Hel",
                          "4 delta a1 lo",
                          absl::StrCat(4 + kTakeoverSeqGap,
                                       " state QUEUED a1 err=WORKER_DISCONNECTED")));
  // Released twice (the worker's report raced the replica's own requeue): no change.
  auto again = store_->ReleaseAttempts({{job.id(), 1}}, error);
  ASSERT_TRUE(again.ok());
  EXPECT_THAT(*again, IsEmpty());

  // The last attempt released fails the job, like an expired lease.
  EXPECT_EQ(ClaimOne().job.attempt(), 2);
  auto last = store_->ReleaseAttempts({{job.id(), 2}}, error);
  ASSERT_TRUE(last.ok());
  ASSERT_EQ(last->size(), 1u);
  EXPECT_EQ((*last)[0].state(), v1::FAILED);
  EXPECT_TRUE((*last)[0].has_finished_at());
}

TEST_F(PgJobStoreTest, ExtendLeasesKeepsTheNamedRunningJobs) {
  v1::Job job = Submit(MakeJob());
  v1::Job forgotten = Submit(MakeJob());
  ClaimOne("chat", absl::Milliseconds(1), "session-a");
  ClaimOne("chat", absl::Milliseconds(1), "session-a");
  ASSERT_TRUE(store_->ExtendLeases({job.id()}, absl::Minutes(5)).ok());
  // The job not named (its replica lost track of it) expires and is requeued.
  ASSERT_TRUE(aijobs::testing::WaitFor(
      [&] {
        auto r = store_->RequeueExpiredLeases(100);
        return r.ok() && r->size() == 1 && (*r)[0].id() == forgotten.id();
      },
      absl::Seconds(10)));
  EXPECT_EQ(Get(job.id()).state(), v1::RUNNING);
  EXPECT_EQ(Get(forgotten.id()).state(), v1::QUEUED);
  EXPECT_EQ(QueryInt(absl::StrCat("SELECT count(*) FROM jobs WHERE lease_expires_at > now() + "
                                  "interval '4 minutes' AND id = '",
                                  job.id(), "'")),
            1);
}

// ---------------------------------------------------------------------------------------
// Retention

TEST_F(PgJobStoreTest, DeleteFinishedBeforeDeletesOnlyOldFinishedJobs) {
  v1::Job succeeded = Submit(MakeJob());
  ClaimOne();
  ASSERT_EQ(Finish(succeeded.id(), 1, Kind::kSucceeded).size(), 1u);
  v1::Job failed = Submit(MakeJob());
  ClaimOne();
  ASSERT_TRUE(store_->AppendDeltas({Deltas(failed.id(), 1, 3, {"x"})}).ok());
  ASSERT_EQ(Finish(failed.id(), 1, Kind::kFatalFailure).size(), 1u);
  v1::Job cancelled = Submit(MakeJob());
  ASSERT_TRUE(store_->CancelJob(Caller{}, cancelled.id(), "", 0).ok());
  v1::Job running = Submit(MakeJob());
  ClaimOne();
  v1::Job queued = Submit(MakeJob());

  auto none = store_->DeleteFinishedBefore(absl::Now() - absl::Hours(1), 100);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(*none, 0);

  absl::Time cutoff = absl::Now() + absl::Minutes(1);
  auto n = store_->DeleteFinishedBefore(cutoff, 2);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 2);
  n = store_->DeleteFinishedBefore(cutoff, 2);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 1);
  n = store_->DeleteFinishedBefore(cutoff, 2);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 0);

  for (const v1::Job* gone : {&succeeded, &failed, &cancelled}) {
    EXPECT_EQ(store_->GetJob(Caller{}, gone->id()).status().code(), absl::StatusCode::kNotFound);
    EXPECT_EQ(
        QueryInt(absl::StrCat("SELECT count(*) FROM job_events WHERE job_id = '", gone->id(), "'")),
        0);
  }
  EXPECT_EQ(Get(running.id()).state(), v1::RUNNING);
  EXPECT_EQ(Get(queued.id()).state(), v1::QUEUED);
  EXPECT_THAT(DescribeAll(Events(running.id())),
              ElementsAre("1 state QUEUED a0", "2 state RUNNING a1"));
  EXPECT_THAT(DescribeAll(Events(queued.id())), ElementsAre("1 state QUEUED a0"));
}

// ---------------------------------------------------------------------------------------
// ListJobs

TEST_F(PgJobStoreTest, ListJobsFiltersByStateAndType) {
  v1::Job c1 = Submit(MakeJob("chat"));
  v1::Job e1 = Submit(MakeJob("embed"));
  v1::Job c2 = Submit(MakeJob("chat"));
  Submit(MakeJob("chat", 0, 3, Caller{"elsewhere", "x"}));
  auto claimed = store_->ClaimJobs({"chat"}, 1, "s", kLease, kDefaultTimeout);
  ASSERT_TRUE(claimed.ok());
  ASSERT_THAT(Ids(*claimed), ElementsAre(c1.id()));

  auto list = [&](v1::JobState state, const std::string& type) {
    ListQuery q;
    q.state = state;
    q.type = type;
    auto page = store_->ListJobs(q);
    EXPECT_TRUE(page.ok()) << page.status();
    std::vector<std::string> ids;
    if (page.ok()) {
      for (const auto& j : page->jobs) ids.push_back(j.id());
      EXPECT_EQ(page->next_page_token, "");
    }
    return ids;
  };
  // Newest first.
  EXPECT_THAT(list(v1::JOB_STATE_UNSPECIFIED, ""), ElementsAre(c2.id(), e1.id(), c1.id()));
  EXPECT_THAT(list(v1::QUEUED, ""), ElementsAre(c2.id(), e1.id()));
  EXPECT_THAT(list(v1::RUNNING, ""), ElementsAre(c1.id()));
  EXPECT_THAT(list(v1::JOB_STATE_UNSPECIFIED, "chat"), ElementsAre(c2.id(), c1.id()));
  EXPECT_THAT(list(v1::QUEUED, "embed"), ElementsAre(e1.id()));
  EXPECT_THAT(list(v1::SUCCEEDED, ""), IsEmpty());
  EXPECT_THAT(list(v1::JOB_STATE_UNSPECIFIED, "summarize"), IsEmpty());
}

// Follows ListJobs page tokens from `q` (at most 10 pages), recording each page's size and
// every job id in the order listed.
void ListAllPages(JobStore* store, ListQuery q, std::vector<size_t>* sizes,
                  std::vector<std::string>* seen) {
  for (int i = 0; i < 10; ++i) {
    auto page = store->ListJobs(q);
    ASSERT_TRUE(page.ok()) << page.status();
    sizes->push_back(page->jobs.size());
    for (const auto& j : page->jobs) seen->push_back(j.id());
    if (page->next_page_token.empty()) return;
    q.page_token = page->next_page_token;
  }
}

TEST_F(PgJobStoreTest, ListJobsPagesWithTokens) {
  // Some jobs share one created_at (one batch), so the id breaks ties across pages.
  std::set<std::string> all;
  std::vector<NewJob> batch;
  for (int i = 0; i < 12; ++i) batch.push_back(MakeJob());
  for (const auto& j : batch) all.insert(j.id);
  ASSERT_TRUE(store_->InsertJobs(batch).ok());
  for (int i = 0; i < 8; ++i) all.insert(Submit(MakeJob()).id());
  batch.clear();
  for (int i = 0; i < 5; ++i) batch.push_back(MakeJob());
  for (const auto& j : batch) all.insert(j.id);
  ASSERT_TRUE(store_->InsertJobs(batch).ok());
  ASSERT_EQ(all.size(), 25u);

  ListQuery q;
  q.page_size = 10;
  std::vector<size_t> sizes;
  std::vector<std::string> seen;
  ASSERT_NO_FATAL_FAILURE(ListAllPages(store_.get(), q, &sizes, &seen));
  EXPECT_THAT(sizes, ElementsAre(10u, 10u, 5u));
  std::set<std::string> unique(seen.begin(), seen.end());
  EXPECT_EQ(unique.size(), seen.size()) << "a job was listed twice";
  EXPECT_EQ(unique, all);
}

TEST_F(PgJobStoreTest, ListJobsPagesByBytesAsWellAsCount) {
  // Five jobs of ~300 KB: a 1 MB page holds three; every job is still reached exactly once.
  std::set<std::string> all;
  for (int i = 0; i < 5; ++i) {
    NewJob j = MakeJob();
    (*j.spec.mutable_input()->mutable_fields())["text"].set_string_value(
        std::string(300 * 1000, 'x'));
    all.insert(Submit(std::move(j)).id());
  }
  ListQuery q;
  q.page_size = 50;
  q.max_page_bytes = 1000 * 1000;
  std::vector<size_t> sizes;
  std::vector<std::string> seen;
  ASSERT_NO_FATAL_FAILURE(ListAllPages(store_.get(), q, &sizes, &seen));
  EXPECT_THAT(sizes, ElementsAre(3u, 2u));
  EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()), all);
  EXPECT_EQ(seen.size(), all.size());
  // A job larger than the budget still makes a page of its own.
  q = ListQuery{};
  q.max_page_bytes = 1000;
  auto page = store_->ListJobs(q);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_EQ(page->jobs.size(), 1u);
  EXPECT_FALSE(page->next_page_token.empty());
}

TEST_F(PgJobStoreTest, ListJobsRejectsInvalidPageToken) {
  Submit(MakeJob());
  const std::vector<std::string> tokens = {"garbage", "123.not-a-uuid",
                                           absl::StrCat("abc.", NewUuid()), "."};
  for (const std::string& token : tokens) {
    ListQuery q;
    q.page_token = token;
    auto page = store_->ListJobs(q);
    EXPECT_EQ(page.status().code(), absl::StatusCode::kInvalidArgument) << token;
  }
}

// Regression (issue 10, item 9): a token with negative micros reached PostgreSQL ("ERROR:
// timestamp out of range"), and a 9 KB token was echoed whole, overflowing the caller's
// metadata limit so the gateway answered 429.
TEST_F(PgJobStoreTest, ListJobsRejectsOutOfRangeAndHugeTokensWithAShortMessage) {
  for (const std::string& token :
       {absl::StrCat("-5.", NewUuid()), absl::StrCat("999999999999999999.", NewUuid()),
        absl::StrCat(std::string(9000, '1'), ".", NewUuid())}) {
    ListQuery q;
    q.page_token = token;
    auto page = store_->ListJobs(q);
    EXPECT_EQ(page.status().code(), absl::StatusCode::kInvalidArgument) << token.substr(0, 40);
    EXPECT_EQ(page.status().message().find("PostgreSQL"), std::string::npos);
    EXPECT_LT(page.status().message().size(), 200u);
  }
}

// ---------------------------------------------------------------------------------------
// Response cache

// A cache-enabled job: input {"prompt": prompt}, key from (tenant, type, input).
NewJob CachedJob(const std::string& prompt, absl::Duration ttl, Caller caller = Caller{}) {
  NewJob j;
  j.id = NewUuid();
  j.caller = std::move(caller);
  j.type = "chat";
  *j.spec.mutable_input() = TextStruct("prompt", prompt);
  j.cache_ttl = ttl;
  j.cache_key = CacheKey(j.caller.tenant_id, j.type, j.spec.input());
  return j;
}

class ResponseCacheTest : public PgJobStoreTest {
 protected:
  // Submits `j`, runs it to success with `result_text`, returns the finished job.
  v1::Job RunToSuccess(const NewJob& j, const std::string& result_text) {
    v1::Job job = Submit(j);
    ClaimedJob c = ClaimOne();
    EXPECT_EQ(c.job.id(), job.id());
    AttemptOutcome o;
    o.job_id = job.id();
    o.attempt = c.job.attempt();
    o.kind = Kind::kSucceeded;
    o.result = TextStruct("text", result_text);
    auto r = store_->FinishAttempts({o});
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() && r->size() == 1 ? (*r)[0] : v1::Job();
  }

  // The outcome of InsertFromCache for `j` (nullopt on a miss or an error, which fails).
  std::optional<SubmitOutcome> FromCache(const NewJob& j) {
    auto r = store_->InsertFromCache(j);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : std::nullopt;
  }

  int64_t CacheRows() { return QueryInt("SELECT count(*) FROM response_cache"); }
};

TEST_F(ResponseCacheTest, MissWritesNothingThenSuccessFillsAndHitIsAFinishedJob) {
  NewJob first = CachedJob("what is 2+2", absl::Hours(1));
  EXPECT_FALSE(FromCache(first).has_value());
  EXPECT_EQ(QueryInt("SELECT count(*) FROM jobs"), 0) << "a miss must not create the job";

  v1::Job done = RunToSuccess(first, "four");
  EXPECT_FALSE(done.cached());
  EXPECT_EQ(CacheRows(), 1);
  EXPECT_EQ(QueryInt("SELECT count(*) FROM response_cache WHERE expires_at BETWEEN "
                     "now() + interval '59 minutes' AND now() + interval '61 minutes'"),
            1);

  NewJob second = CachedJob("what is 2+2", absl::Hours(1));
  second.priority = 4;
  (*second.spec.mutable_labels())["k"] = "v";
  absl::Time before = absl::Now() - absl::Seconds(5);
  auto hit = FromCache(second);
  ASSERT_TRUE(hit.has_value());
  EXPECT_FALSE(hit->existing);
  const v1::Job& job = hit->job;
  EXPECT_EQ(job.id(), second.id);
  EXPECT_EQ(job.state(), v1::SUCCEEDED);
  EXPECT_TRUE(job.cached());
  EXPECT_EQ(job.attempt(), 0);
  EXPECT_EQ(job.priority(), 4);
  EXPECT_EQ(job.labels().at("k"), "v");
  EXPECT_EQ(job.result().fields().at("text").string_value(), "four");
  EXPECT_EQ(job.input().fields().at("prompt").string_value(), "what is 2+2");
  EXPECT_EQ(job.last_seq(), 2);
  EXPECT_GT(FromProtoTimestamp(job.finished_at()), before);
  EXPECT_FALSE(job.has_started_at());
  EXPECT_EQ(QueryInt("SELECT hits FROM response_cache"), 1);

  // Stored exactly as answered; never claimable; events: derived QUEUED, then final_job.
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(Get(job.id()), job))
      << Get(job.id()).DebugString() << "\nvs\n"
      << job.DebugString();
  auto none = store_->ClaimJobs({"chat"}, 10, "s", kLease, kDefaultTimeout);
  ASSERT_TRUE(none.ok());
  EXPECT_THAT(*none, IsEmpty());
  std::vector<v1::JobEvent> events = Events(job.id());
  EXPECT_THAT(DescribeAll(events), ElementsAre("1 state QUEUED a0", "2 final SUCCEEDED a0"));
  ASSERT_EQ(events.size(), 2u);
  EXPECT_TRUE(events[1].final_job().cached());
  EXPECT_EQ(events[1].final_job().result().fields().at("text").string_value(), "four");
  EXPECT_THAT(DescribeAll(Events(job.id(), 2)), IsEmpty());

  // A different input misses.
  EXPECT_FALSE(FromCache(CachedJob("what is 2+3", absl::Hours(1))).has_value());
}

TEST_F(ResponseCacheTest, OnlySuccessFills) {
  NewJob failed = CachedJob("fails", absl::Hours(1));
  Submit(failed);
  ClaimedJob c = ClaimOne();
  ASSERT_EQ(Finish(c.job.id(), 1, Kind::kFatalFailure).size(), 1u);

  NewJob retried = CachedJob("retried", absl::Hours(1));
  Submit(retried);
  c = ClaimOne();
  // Requeued for later (not claimable during this test).
  ASSERT_EQ(Finish(c.job.id(), 1, Kind::kRetryableFailure, absl::Hours(1)).size(), 1u);

  NewJob cancelled = CachedJob("cancelled", absl::Hours(1));
  Submit(cancelled);
  ASSERT_TRUE(store_->CancelJob(Caller{}, cancelled.id, "", 0).ok());

  NewJob not_opted = MakeJob();  // no cache key: its success stores nothing
  Submit(not_opted);
  c = ClaimOne();
  ASSERT_EQ(Finish(c.job.id(), c.job.attempt(), Kind::kSucceeded).size(), 1u);

  EXPECT_EQ(CacheRows(), 0);
  for (const char* prompt : {"fails", "retried", "cancelled"}) {
    EXPECT_FALSE(FromCache(CachedJob(prompt, absl::Hours(1))).has_value()) << prompt;
  }
  // A fenced (stale) completion does not fill either.
  NewJob stale = CachedJob("stale", absl::Hours(1));
  Submit(stale);
  c = ClaimOne();
  EXPECT_THAT(Finish(stale.id, c.job.attempt() + 1, Kind::kSucceeded), IsEmpty());
  EXPECT_EQ(CacheRows(), 0);
}

TEST_F(ResponseCacheTest, ExpiredOrTooOldForTheRequestMisses) {
  RunToSuccess(CachedJob("q", absl::Hours(1)), "a");
  ASSERT_TRUE(FromCache(CachedJob("q", absl::Hours(1))).has_value());

  // Stored 2 hours ago (still before expires_at): a request accepting at most 1 hour old
  // answers misses, one accepting 3 hours hits.
  ASSERT_TRUE(admin_
                  ->Exec("UPDATE response_cache SET created_at = now() - interval '2 hours', "
                         "expires_at = now() + interval '1 hour'")
                  .ok());
  EXPECT_FALSE(FromCache(CachedJob("q", absl::Hours(1))).has_value());
  EXPECT_TRUE(FromCache(CachedJob("q", absl::Hours(3))).has_value());

  ASSERT_TRUE(
      admin_->Exec("UPDATE response_cache SET expires_at = now() - interval '1 second'").ok());
  EXPECT_FALSE(FromCache(CachedJob("q", absl::Hours(24))).has_value());
  EXPECT_EQ(QueryInt("SELECT count(*) FROM jobs WHERE cached"), 2);
}

TEST_F(ResponseCacheTest, TenantsNeverSeeEachOthersEntries) {
  Caller a{"tenant-a", "alice"};
  Caller b{"tenant-b", "bob"};
  RunToSuccess(CachedJob("shared question", absl::Hours(1), a), "a's answer");
  EXPECT_FALSE(FromCache(CachedJob("shared question", absl::Hours(1), b)).has_value());
  // Even a request carrying tenant a's exact key bytes misses for tenant b.
  NewJob forged = CachedJob("shared question", absl::Hours(1), b);
  forged.cache_key = CacheKey("tenant-a", "chat", forged.spec.input());
  EXPECT_FALSE(FromCache(forged).has_value());
  auto hit = FromCache(CachedJob("shared question", absl::Hours(1), a));
  ASSERT_TRUE(hit.has_value());
  EXPECT_EQ(hit->job.tenant_id(), "tenant-a");
  EXPECT_EQ(hit->job.result().fields().at("text").string_value(), "a's answer");
}

TEST_F(ResponseCacheTest, IdempotencyKeyStillReturnsTheExistingJob) {
  RunToSuccess(CachedJob("q", absl::Hours(1)), "a");
  NewJob first = CachedJob("q", absl::Hours(1));
  first.idempotency_key = "req-1";
  auto hit = FromCache(first);
  ASSERT_TRUE(hit.has_value());
  EXPECT_FALSE(hit->existing);

  NewJob again = CachedJob("q", absl::Hours(1));
  again.idempotency_key = "req-1";
  auto replay = FromCache(again);
  ASSERT_TRUE(replay.has_value());
  EXPECT_TRUE(replay->existing);
  EXPECT_EQ(replay->job.id(), first.id);
  EXPECT_TRUE(replay->job.cached());
  EXPECT_EQ(QueryInt("SELECT count(*) FROM jobs WHERE idempotency_key = 'req-1'"), 1);
}

TEST_F(ResponseCacheTest, IdenticalJobsSucceedingInOneBatchFillOnce) {
  NewJob a = CachedJob("same", absl::Hours(1));
  NewJob b = CachedJob("same", absl::Hours(1));
  ASSERT_TRUE(store_->InsertJobs({a, b}).ok());
  auto claimed = store_->ClaimJobs({"chat"}, 10, "s", kLease, kDefaultTimeout);
  ASSERT_TRUE(claimed.ok());
  ASSERT_EQ(claimed->size(), 2u);
  std::vector<AttemptOutcome> outcomes;
  for (const auto& c : *claimed) {
    AttemptOutcome o;
    o.job_id = c.job.id();
    o.attempt = c.job.attempt();
    o.result = TextStruct("text", "answer");
    outcomes.push_back(o);
  }
  auto done = store_->FinishAttempts(outcomes);
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->size(), 2u);
  EXPECT_EQ(CacheRows(), 1);
}

TEST_F(ResponseCacheTest, PreComposedAnswerIsServedAndNotReplacedWhileLive) {
  google::protobuf::Struct input = TextStruct("prompt", "opening hours?");
  std::string key = CacheKey("default", "chat", input);
  auto expires =
      store_->PutCachedResult("default", key, "chat", TextStruct("text", "9 to 5"), absl::Hours(2));
  ASSERT_TRUE(expires.ok()) << expires.status();
  EXPECT_GT(*expires, absl::Now() + absl::Minutes(119));
  EXPECT_LT(*expires, absl::Now() + absl::Minutes(121));

  // Served even to a request whose own ttl is shorter than the entry's age.
  ASSERT_TRUE(
      admin_->Exec("UPDATE response_cache SET created_at = now() - interval '1 hour'").ok());
  auto hit = FromCache(CachedJob("opening hours?", absl::Minutes(1)));
  ASSERT_TRUE(hit.has_value());
  EXPECT_EQ(hit->job.result().fields().at("text").string_value(), "9 to 5");

  // A job that ran anyway (submitted before the put) does not overwrite it.
  RunToSuccess(CachedJob("opening hours?", absl::Minutes(1)), "model's guess");
  hit = FromCache(CachedJob("opening hours?", absl::Minutes(1)));
  ASSERT_TRUE(hit.has_value());
  EXPECT_EQ(hit->job.result().fields().at("text").string_value(), "9 to 5");

  // Putting again replaces it.
  ASSERT_TRUE(
      store_->PutCachedResult("default", key, "chat", TextStruct("text", "8 to 6"), absl::Hours(2))
          .ok());
  hit = FromCache(CachedJob("opening hours?", absl::Minutes(1)));
  ASSERT_TRUE(hit.has_value());
  EXPECT_EQ(hit->job.result().fields().at("text").string_value(), "8 to 6");
}

TEST_F(ResponseCacheTest, DeleteExpiredCacheEntriesDeletesOnlyExpiredInBatches) {
  for (const char* p : {"e1", "e2", "e3", "live"}) RunToSuccess(CachedJob(p, absl::Hours(1)), p);
  const std::string live_key = CachedJob("live", absl::Hours(1)).cache_key;
  ASSERT_TRUE(admin_
                  ->Exec(absl::StrCat("UPDATE response_cache SET expires_at = now() - interval "
                                      "'1 second' WHERE key <> '\\x",
                                      HexString(live_key), "'::bytea"))
                  .ok());
  ASSERT_EQ(QueryInt("SELECT count(*) FROM response_cache WHERE expires_at <= now()"), 3);
  auto n = store_->DeleteExpiredCacheEntries(2);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 2);
  n = store_->DeleteExpiredCacheEntries(2);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 1);
  n = store_->DeleteExpiredCacheEntries(2);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 0);
  EXPECT_EQ(CacheRows(), 1);
  EXPECT_TRUE(FromCache(CachedJob("live", absl::Hours(1))).has_value());
}

// ---------------------------------------------------------------------------------------
// Migrations

class MigrationsTest : public aijobs::testing::PgTest {
 protected:
  int64_t QueryInt(const std::string& sql) {
    auto conn = pg::Connection::Open(conninfo());
    EXPECT_TRUE(conn.ok()) << conn.status();
    if (!conn.ok()) return -1;
    auto r = (*conn)->Exec(sql);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->GetInt(0, 0) : -1;
  }
};

TEST_F(MigrationsTest, ApplyingTwiceIsANoOp) {
  auto conn = pg::Connection::Open(conninfo());
  ASSERT_TRUE(conn.ok()) << conn.status();
  absl::Status s1 = ApplyMigrations(**conn);
  ASSERT_TRUE(s1.ok()) << s1;
  absl::Status s2 = ApplyMigrations(**conn);
  ASSERT_TRUE(s2.ok()) << s2;
  EXPECT_EQ(QueryInt("SELECT count(*) FROM aijobs_schema_migrations"), LatestSchemaVersion());
  EXPECT_EQ(QueryInt("SELECT max(version) FROM aijobs_schema_migrations"), LatestSchemaVersion());
  // The advisory lock was released: another session can take it at once.
  EXPECT_EQ(QueryInt("SELECT pg_try_advisory_lock(107105385144947)::int"), 1);
}

TEST_F(MigrationsTest, ConcurrentReplicasMigrateOnce) {
  constexpr int kReplicas = 4;
  std::vector<absl::Status> results(kReplicas);
  std::vector<std::thread> threads;
  for (int i = 0; i < kReplicas; ++i) {
    threads.emplace_back([&, i] {
      auto conn = pg::Connection::Open(conninfo());
      if (!conn.ok()) {
        results[i] = conn.status();
        return;
      }
      results[i] = ApplyMigrations(**conn);
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& s : results) EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(QueryInt("SELECT count(*) FROM aijobs_schema_migrations"), LatestSchemaVersion());

  // The schema works.
  pg::Pool pool(conninfo(), 2);
  PgJobStore store(&pool);
  NewJob j;
  j.id = NewUuid();
  j.type = "chat";
  auto out = store.InsertJobs({j});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ((*out)[0].job.state(), v1::QUEUED);
}

// ---------------------------------------------------------------------------------------
// Database crash (issue 11, bugs 1 and 2): a claim that was dispatched and output deltas a
// watcher saw must survive `pg_ctl stop -m immediate`. The store is built as the scheduler
// builds it (a durable pool and a relaxed one), on a private server; the WAL writer is slowed
// to 10 s so that a commit not flushed by the committer itself is lost by the crash every time
// instead of only in a ~200 ms window.

class DatabaseCrashTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto server = testing::PgServer::Create();
    if (server.ok()) server_ = std::move(*server).release();
    else create_error_ = new absl::Status(server.status());
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(server_, nullptr) << *create_error_;
    ASSERT_TRUE(server_->Start().ok());
    absl::Status reset = testing::ResetDatabase(server_->conninfo());
    ASSERT_TRUE(reset.ok()) << reset;
    auto conn = pg::Connection::Open(server_->conninfo());
    ASSERT_TRUE(conn.ok()) << conn.status();
    absl::Status migrated = ApplyMigrations(**conn);
    ASSERT_TRUE(migrated.ok()) << migrated;
    for (const char* sql : {"ALTER SYSTEM SET wal_writer_delay = '10s'", "SELECT pg_reload_conf()"}) {
      auto r = (*conn)->Exec(sql);
      ASSERT_TRUE(r.ok()) << r.status();
    }
    absl::SleepFor(absl::Milliseconds(300));  // the WAL writer rereads its configuration
  }

  // A new pool and store after a restart: the old connections died with the server.
  struct Store {
    explicit Store(const std::string& conninfo)
        : pool(conninfo, 2), relaxed(conninfo, 2, 30000, /*synchronous_commit=*/false),
          store(&pool, &relaxed) {}
    pg::Pool pool;
    pg::Pool relaxed;
    PgJobStore store;
  };

  static testing::PgServer* server_;
  static absl::Status* create_error_;
};

testing::PgServer* DatabaseCrashTest::server_ = nullptr;
absl::Status* DatabaseCrashTest::create_error_ = nullptr;

TEST_F(DatabaseCrashTest, DispatchedClaimAndStreamedOutputSurviveACrash) {
  NewJob job;
  job.id = NewUuid();
  job.type = "chat";
  *job.spec.mutable_input() = TextStruct("prompt", "hello");
  job.max_attempts = 3;
  std::string id = job.id;
  {
    Store s(server_->conninfo());
    auto inserted = s.store.InsertJobs({std::move(job)});
    ASSERT_TRUE(inserted.ok()) << inserted.status();
    auto claimed = s.store.ClaimJobs({"chat"}, 1, "session-1", kLease, kDefaultTimeout);
    ASSERT_TRUE(claimed.ok()) << claimed.status();
    ASSERT_EQ(claimed->size(), 1u);
    const v1::Job& running = (*claimed)[0].job;
    ASSERT_EQ(running.attempt(), 1);
    // What a worker would stream under attempt 1, flushed by the hub as it arrives.
    absl::Status appended =
        s.store.AppendDeltas({Deltas(id, 1, running.last_seq() + 1, {"Good", " morning"})});
    ASSERT_TRUE(appended.ok()) << appended;
    absl::Status crashed = server_->Crash();
    ASSERT_TRUE(crashed.ok()) << crashed;
  }
  absl::Status started = server_->Start();
  ASSERT_TRUE(started.ok()) << started;

  Store s(server_->conninfo());
  auto after = s.store.GetJob(Caller{}, id);
  ASSERT_TRUE(after.ok()) << after.status();
  // Attempt 1 was dispatched: it must still be taken, so it can never be handed out again.
  EXPECT_EQ(after->state(), v1::RUNNING);
  EXPECT_EQ(after->attempt(), 1);
  auto page = s.store.ReadEvents(Caller{}, id, 0, 100);
  ASSERT_TRUE(page.ok()) << page.status();
  std::string text;
  for (const auto& e : page->events) {
    if (e.has_output_delta()) text += e.output_delta().text();
  }
  EXPECT_EQ(text, "Good morning");
  // When attempt 1's lease runs out (its scheduler lost the worker), the next run is attempt 2.
  auto conn = pg::Connection::Open(server_->conninfo());
  ASSERT_TRUE(conn.ok()) << conn.status();
  ASSERT_TRUE((*conn)->Exec("UPDATE jobs SET lease_expires_at = now() - interval '1 second'").ok());
  auto requeued = s.store.RequeueExpiredLeases(10);
  ASSERT_TRUE(requeued.ok()) << requeued.status();
  auto again = s.store.ClaimJobs({"chat"}, 1, "session-2", kLease, kDefaultTimeout);
  ASSERT_TRUE(again.ok()) << again.status();
  ASSERT_EQ(again->size(), 1u);
  EXPECT_EQ((*again)[0].job.attempt(), 2);
}

// Issue 11, bug 6: after a fast restart the pool's idle sessions are closed; the first
// calls used to fail "server closed the connection unexpectedly" until each was used once.
TEST_F(DatabaseCrashTest, PooledSessionsFromBeforeARestartAreReplaced) {
  Store s(server_->conninfo());
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i) {
    NewJob job;
    job.id = NewUuid();
    job.type = "chat";
    *job.spec.mutable_input() = TextStruct("prompt", "hello");
    job.max_attempts = 3;
    ids.push_back(job.id);
    auto inserted = s.store.InsertJobs({std::move(job)});
    ASSERT_TRUE(inserted.ok()) << inserted.status();
  }
  // Both sessions of the durable pool are open and idle.
  {
    auto a = s.pool.Acquire();
    auto b = s.pool.Acquire();
    ASSERT_TRUE(a.ok() && b.ok());
    ASSERT_TRUE((*a)->Exec("SELECT 1").ok());
    ASSERT_TRUE((*b)->Exec("SELECT 1").ok());
  }
  ASSERT_TRUE(server_->Stop().ok());
  ASSERT_TRUE(server_->Start().ok());
  for (const std::string& id : ids) {
    auto job = s.store.GetJob(Caller{}, id);
    EXPECT_TRUE(job.ok()) << job.status();
  }
}

}  // namespace
}  // namespace aijobs::scheduler
