#include "workers/worker_connection.h"

#include <grpcpp/grpcpp.h>

#include <cstdio>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/time_util.h"
#include "gtest/gtest.h"
#include "workers/builtin_handlers.h"
#include "workers/fake_scheduler.h"
#include "workers/sim_provider.h"
#include "workers/test_util.h"

namespace aijobs::worker {
namespace {

using aijobs::v1::SchedulerMessage;
using aijobs::v1::WorkerMessage;
using testing::FakeServer;
using testing::JsonStruct;
using testing::kWait;

// Predicates over received messages.
const aijobs::v1::JobComplete* FindCompletion(const std::vector<WorkerMessage>& msgs,
                                              const std::string& job_id, size_t* index = nullptr) {
  for (size_t i = 0; i < msgs.size(); ++i) {
    for (const auto& c : msgs[i].completions()) {
      if (c.job_id() == job_id) {
        if (index != nullptr) *index = i;
        return &c;
      }
    }
  }
  return nullptr;
}

const aijobs::v1::JobFailure* FindFailure(const std::vector<WorkerMessage>& msgs,
                                          const std::string& job_id, size_t* index = nullptr) {
  for (size_t i = 0; i < msgs.size(); ++i) {
    for (const auto& f : msgs[i].failures()) {
      if (f.job_id() == job_id) {
        if (index != nullptr) *index = i;
        return &f;
      }
    }
  }
  return nullptr;
}

std::string OutputsOf(const std::vector<WorkerMessage>& msgs, const std::string& job_id,
                      size_t from = 0) {
  std::string text;
  for (size_t i = from; i < msgs.size(); ++i) {
    for (const auto& o : msgs[i].outputs()) {
      if (o.job_id() == job_id) text += o.text();
    }
  }
  return text;
}

int CountHellos(const std::vector<WorkerMessage>& msgs) {
  int n = 0;
  for (const auto& m : msgs) n += m.has_hello() ? 1 : 0;
  return n;
}

SchedulerMessage Assign(const std::string& job_id, const std::string& input_json,
                        absl::Time deadline = absl::InfiniteFuture(), int attempt = 1) {
  SchedulerMessage m;
  auto* a = m.add_assignments();
  a->set_job_id(job_id);
  a->set_attempt(attempt);
  a->set_max_attempts(3);
  a->set_type("chat");
  *a->mutable_input() = JsonStruct(input_json);
  if (deadline != absl::InfiniteFuture()) *a->mutable_deadline() = ToProtoTimestamp(deadline);
  return m;
}

// One worker (sim provider + registry + connection) running Run() on its own thread.
class WorkerUnderTest {
 public:
  explicit WorkerUnderTest(int port) : WorkerUnderTest(std::vector<int>{port}) {}
  explicit WorkerUnderTest(const std::vector<int>& ports) : sim_(SimDefaults()) {
    RegisterBuiltinHandlers(&registry_, &sim_);
    WorkerConnectionOptions o;
    for (int port : ports) o.schedulers.push_back(absl::StrCat("127.0.0.1:", port));
    o.worker_id = "worker-under-test";
    o.job_types = {"chat", "embed"};
    o.slots = 8;
    o.drain_timeout = absl::Seconds(10);
    o.reconnect_initial = absl::Milliseconds(20);
    o.reconnect_max = absl::Milliseconds(200);
    o.close_grace = absl::Seconds(5);
    connection_ = std::make_unique<WorkerConnection>(o, &registry_);
    run_ = std::async(std::launch::async, [this] { return connection_->Run(); }).share();
  }
  ~WorkerUnderTest() {
    connection_->Shutdown();
    run_.wait();
  }

  // Waits for Run() to return; true if it did within the timeout and returned OK.
  bool WaitStopped(absl::Duration timeout = kWait) {
    if (run_.wait_for(absl::ToChronoSeconds(timeout)) != std::future_status::ready) return false;
    return run_.get().ok();
  }

  WorkerConnection& connection() { return *connection_; }

 private:
  static SimOptions SimDefaults() {
    SimOptions o;
    o.ttft = absl::Milliseconds(5);
    o.tokens_per_s = 0;
    o.tokens = 5;
    return o;
  }

  SimProvider sim_;
  HandlerRegistry registry_;
  std::unique_ptr<WorkerConnection> connection_;
  std::shared_future<absl::Status> run_;
};

TEST(WorkerConnectionTest, HelloThenChatStreamsOutputsAndCompletes) {
  FakeServer server(0);
  WorkerUnderTest worker(server.port);

  ASSERT_TRUE(server.service.WaitFor([](const auto& m) { return !m.empty(); }));
  const WorkerMessage first = server.service.received()[0];
  ASSERT_TRUE(first.has_hello());
  EXPECT_EQ(first.hello().worker_id(), "worker-under-test");
  ASSERT_EQ(first.hello().job_types_size(), 2);
  EXPECT_EQ(first.hello().job_types(0), "chat");
  EXPECT_EQ(first.hello().job_types(1), "embed");
  EXPECT_EQ(first.hello().slots(), 8);
  EXPECT_FALSE(first.hello().version().empty());

  ASSERT_TRUE(server.service.Send(Assign("job-1", R"({"messages": [{"content": "hi there"}],
                  "sim": {"tokens": 6, "tokens_per_s": 200}})")));
  ASSERT_TRUE(
      server.service.WaitFor([](const auto& m) { return FindCompletion(m, "job-1") != nullptr; }));
  auto msgs = server.service.received();
  const auto* done = FindCompletion(msgs, "job-1");
  EXPECT_EQ(done->attempt(), 1);
  const std::string text = done->result().fields().at("text").string_value();
  EXPECT_FALSE(text.empty());
  EXPECT_EQ(OutputsOf(msgs, "job-1"), text);
  EXPECT_EQ(done->result()
                .fields()
                .at("usage")
                .struct_value()
                .fields()
                .at("completion_tokens")
                .number_value(),
            6);

  // Heartbeats flow at the welcome's interval.
  ASSERT_TRUE(server.service.WaitFor([](const auto& m) {
    for (const auto& x : m) {
      if (x.has_heartbeat()) return true;
    }
    return false;
  }));
}

TEST(WorkerConnectionTest, CancelReportsCancelledAndStopsOutputs) {
  FakeServer server(0);
  WorkerUnderTest worker(server.port);
  ASSERT_TRUE(server.service.WaitFor([](const auto& m) { return !m.empty(); }));
  ASSERT_TRUE(server.service.Send(Assign("long", R"({"messages": [{"content": "x"}],
                 "sim": {"tokens": 100000, "tokens_per_s": 100}})")));
  // Running and listed in a heartbeat, with output flowing.
  ASSERT_TRUE(server.service.WaitFor([](const auto& m) {
    bool listed = false;
    for (const auto& x : m) {
      for (const auto& r : x.heartbeat().running()) listed |= r.job_id() == "long";
    }
    return listed && !OutputsOf(m, "long").empty();
  }));

  SchedulerMessage cancel;
  cancel.add_cancels()->set_job_id("long");
  cancel.mutable_cancels(0)->set_attempt(1);
  ASSERT_TRUE(server.service.Send(cancel));
  ASSERT_TRUE(
      server.service.WaitFor([](const auto& m) { return FindFailure(m, "long") != nullptr; }));
  size_t failure_index = 0;
  auto msgs = server.service.received();
  const auto* failure = FindFailure(msgs, "long", &failure_index);
  EXPECT_EQ(failure->code(), "CANCELLED");
  EXPECT_FALSE(failure->retryable());
  EXPECT_EQ(failure->attempt(), 1);

  // Barrier: a job that takes many of the cancelled job's token intervals.
  ASSERT_TRUE(server.service.Send(
      Assign("barrier", R"({"messages": [{"content": "y"}], "sim": {"ttft_ms": 200}})")));
  ASSERT_TRUE(server.service.WaitFor(
      [](const auto& m) { return FindCompletion(m, "barrier") != nullptr; }));
  msgs = server.service.received();
  EXPECT_EQ(OutputsOf(msgs, "long", failure_index + 1), "");
  EXPECT_EQ(FindCompletion(msgs, "long"), nullptr);
  EXPECT_EQ(worker.connection().running_jobs(), 0);
}

TEST(WorkerConnectionTest, ExpiredDeadlineFailsAsRetryableTimeout) {
  FakeServer server(0);
  WorkerUnderTest worker(server.port);
  ASSERT_TRUE(server.service.WaitFor([](const auto& m) { return !m.empty(); }));
  ASSERT_TRUE(server.service.Send(Assign("slow", R"({"messages": [{"content": "x"}],
                                                    "sim": {"ttft_ms": 60000}})",
                                         absl::Now() + absl::Milliseconds(150))));
  ASSERT_TRUE(server.service.Send(
      Assign("late", R"({"messages": [{"content": "x"}]})", absl::Now() - absl::Seconds(1))));
  ASSERT_TRUE(server.service.WaitFor([](const auto& m) {
    return FindFailure(m, "slow") != nullptr && FindFailure(m, "late") != nullptr;
  }));
  auto msgs = server.service.received();
  for (const char* id : {"slow", "late"}) {
    const auto* f = FindFailure(msgs, id);
    EXPECT_EQ(f->code(), "TIMEOUT") << id;
    EXPECT_TRUE(f->retryable()) << id;
    EXPECT_EQ(FindCompletion(msgs, id), nullptr) << id;
  }
  EXPECT_EQ(worker.connection().running_jobs(), 0);
}

// A scheduler's drain means "this replica is going away": the worker finishes what runs on
// that stream, closes it, and connects again (it must not exit: nothing would restart it).
TEST(WorkerConnectionTest, SchedulerDrainFinishesRunningJobsThenReconnects) {
  FakeServer server(0);
  WorkerUnderTest worker(server.port);
  ASSERT_TRUE(server.service.WaitFor([](const auto& m) { return !m.empty(); }));
  ASSERT_TRUE(server.service.Send(Assign(
      "finishing", R"({"messages": [{"content": "x"}], "sim": {"ttft_ms": 300, "tokens": 3}})")));
  SchedulerMessage drain;
  drain.set_drain(true);
  ASSERT_TRUE(server.service.Send(drain));

  ASSERT_TRUE(server.service.WaitClosed(1));
  const size_t closed_after = server.service.closed_after();
  auto msgs = server.service.received();
  size_t draining_index = msgs.size();
  for (size_t i = 0; i < closed_after; ++i) {
    if (msgs[i].draining()) {
      draining_index = i;
      break;
    }
  }
  ASSERT_LT(draining_index, closed_after) << "no draining message on the drained stream";
  size_t completion_index = 0;
  ASSERT_NE(FindCompletion(msgs, "finishing", &completion_index), nullptr)
      << "the stream closed before the running job finished";
  EXPECT_LE(draining_index, completion_index);
  EXPECT_LT(completion_index, closed_after);

  // Then a new stream and a new hello, and the worker keeps serving.
  ASSERT_TRUE(server.service.WaitFor([](const auto& m) { return CountHellos(m) >= 2; }));
  EXPECT_EQ(server.service.streams_opened(), 2);
  EXPECT_FALSE(worker.WaitStopped(absl::Milliseconds(100))) << "the worker exited on a drain";
  ASSERT_TRUE(server.service.Send(Assign("after-drain", R"({"messages": [{"content": "y"}]})")));
  EXPECT_TRUE(server.service.WaitFor(
      [](const auto& m) { return FindCompletion(m, "after-drain") != nullptr; }));
}

// With several addresses, the worker moves to the next replica when one drains.
TEST(WorkerConnectionTest, SchedulerDrainMovesToTheNextAddress) {
  FakeServer a(0), b(0);
  WorkerUnderTest worker({a.port, b.port});
  ASSERT_TRUE(a.service.WaitFor([](const auto& m) { return CountHellos(m) == 1; }));
  EXPECT_EQ(b.service.streams_opened(), 0);
  SchedulerMessage drain;
  drain.set_drain(true);
  ASSERT_TRUE(a.service.Send(drain));
  ASSERT_TRUE(b.service.WaitFor([](const auto& m) { return CountHellos(m) == 1; }));
  EXPECT_EQ(a.service.streams_opened(), 1);
  ASSERT_TRUE(b.service.Send(Assign("on-b", R"({"messages": [{"content": "y"}]})")));
  EXPECT_TRUE(
      b.service.WaitFor([](const auto& m) { return FindCompletion(m, "on-b") != nullptr; }));
}

TEST(WorkerConnectionTest, RequestDrainLikeSigtermAnnouncesAndStops) {
  FakeServer server(0);
  WorkerUnderTest worker(server.port);
  ASSERT_TRUE(server.service.WaitFor([](const auto& m) { return !m.empty(); }));
  worker.connection().RequestDrain();
  ASSERT_TRUE(server.service.WaitClosed(1));
  bool draining = false;
  for (const auto& m : server.service.received()) draining |= m.draining();
  EXPECT_TRUE(draining);
  EXPECT_TRUE(worker.WaitStopped());
}

TEST(WorkerConnectionTest, CoalescesManyJobsIntoFewMessages) {
  FakeServer server(0);
  WorkerUnderTest worker(server.port);
  ASSERT_TRUE(server.service.WaitFor([](const auto& m) { return !m.empty(); }));
  constexpr int kJobs = 1000;
  SchedulerMessage batch;
  for (int i = 0; i < kJobs; ++i) {
    SchedulerMessage one = Assign(absl::StrCat("bulk-", i),
                                  absl::StrCat(R"({"messages": [{"content": "job )", i, R"("}],
                                               "sim": {"ttft_ms": 0, "tokens": 5}})"));
    batch.add_assignments()->Swap(one.mutable_assignments(0));
  }
  absl::Time start = absl::Now();
  const size_t before = server.service.received().size();
  ASSERT_TRUE(server.service.Send(batch));
  ASSERT_TRUE(server.service.WaitFor([&](const auto& m) {
    int done = 0;
    for (size_t i = before; i < m.size(); ++i) done += m[i].completions_size();
    return done == kJobs;
  }));
  absl::Duration took = absl::Now() - start;
  auto msgs = server.service.received();
  const size_t messages = msgs.size() - before;
  // Outputs and completions of one job may share a message with hundreds of others; one
  // message per item would be 2 * kJobs messages.
  EXPECT_LT(messages, static_cast<size_t>(kJobs / 2));
  for (int i = 0; i < kJobs; i += 97) {
    std::string id = absl::StrCat("bulk-", i);
    const auto* c = FindCompletion(msgs, id);
    ASSERT_NE(c, nullptr);
    EXPECT_EQ(OutputsOf(msgs, id), c->result().fields().at("text").string_value());
  }
  std::printf("%d jobs in %lld ms over %zu messages\n", kJobs,
              static_cast<long long>(absl::ToInt64Milliseconds(took)), messages);
}

TEST(WorkerConnectionTest, ReconnectsAfterSchedulerRestartOnSamePort) {
  auto first = std::make_unique<FakeServer>(0);
  const int port = first->port;
  WorkerUnderTest worker(port);
  ASSERT_TRUE(first->service.WaitFor([](const auto& m) { return !m.empty(); }));
  ASSERT_TRUE(first->service.Send(Assign("interrupted", R"({"messages": [{"content": "x"}],
                        "sim": {"tokens": 100000, "tokens_per_s": 100}})")));
  ASSERT_TRUE(
      first->service.WaitFor([](const auto& m) { return !OutputsOf(m, "interrupted").empty(); }));

  first->Stop();  // the scheduler goes away mid-job
  // The running call is cancelled (the scheduler requeues it), not left running.
  absl::Time until = absl::Now() + kWait;
  while (worker.connection().running_jobs() != 0 && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(worker.connection().running_jobs(), 0);

  FakeServer second(port);
  ASSERT_EQ(second.port, port);
  ASSERT_TRUE(second.service.WaitFor([](const auto& m) { return CountHellos(m) >= 1; }));
  EXPECT_EQ(second.service.received()[0].hello().worker_id(), "worker-under-test");
  // The new session works end to end.
  ASSERT_TRUE(second.service.Send(Assign("after", R"({"messages": [{"content": "z"}]})")));
  ASSERT_TRUE(
      second.service.WaitFor([](const auto& m) { return FindCompletion(m, "after") != nullptr; }));
  // Nothing of the interrupted attempt leaks into the new session, but the new session is
  // told the attempt was abandoned, so it is requeued at once rather than at lease expiry.
  EXPECT_EQ(OutputsOf(second.service.received(), "interrupted"), "");
  int abandoned = 0;
  for (const auto& m : second.service.received()) {
    for (const auto& a : m.abandoned()) {
      EXPECT_EQ(a.job_id(), "interrupted");
      EXPECT_EQ(a.attempt(), 1);
      ++abandoned;
    }
  }
  EXPECT_EQ(abandoned, 1);
}

}  // namespace
}  // namespace aijobs::worker
