// aijobs-fault-client: the fault suite's client host. Submits --jobs chat jobs on the sim
// provider at --rate per second, each with an idempotency key (so the SDK may retry it
// safely), to a list of scheduler replicas; every --stream_every-th job streams for about a
// second and is watched from seq 0 to its end by a watcher that checks what it saw. Writes
// one line per fact to --out (tab-separated), for the suite's checker:
//   ack  <i> <job id> <streamed 0|1>         the submit was acknowledged
//   nack <i> <code> <message>                 it was not, after the SDK's retries
//   watch <job id> ok|<problem>               a watcher's verdict (streamed text != result,
//                                             seq going back, the job not SUCCEEDED)
//   done <acked> <nacked>                     the submitting phase ended
// Stops watching at --max_s after the start; exits 0 when everything it set out to do ran.
#include <google/protobuf/struct.pb.h>

#include <atomic>
#include <cstdio>
#include <deque>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "aijobs/client.h"

ABSL_FLAG(std::string, scheduler, "", "scheduler replicas, comma-separated IP:PORT");
ABSL_FLAG(int, jobs, 1000, "jobs to submit");
ABSL_FLAG(double, rate, 200, "submits per second");
ABSL_FLAG(int, stream_every, 10, "every Nth job streams and is watched (0: none)");
ABSL_FLAG(std::string, run_id, "run", "prefix of the idempotency keys");
ABSL_FLAG(std::string, out, "", "record file (required)");
ABSL_FLAG(int, max_s, 120, "stop watching after this many seconds");
ABSL_FLAG(int, submitters, 16, "submitting threads");
ABSL_FLAG(int, watchers, 32, "watching threads");

namespace {

class Recorder {
 public:
  explicit Recorder(const std::string& path) : out_(path) {}
  bool ok() {
    absl::MutexLock lock(&mu_);
    return out_.good();
  }
  void Line(const std::string& line) {
    absl::MutexLock lock(&mu_);
    out_ << line << "\n";
    out_.flush();
  }

 private:
  absl::Mutex mu_;
  std::ofstream out_ ABSL_GUARDED_BY(mu_);
};

std::string OneLine(std::string text) {
  return absl::StrReplaceAll(text, {{"\t", " "}, {"\n", " "}});
}

aijobs::v1::SubmitJobRequest Request(int i, bool stream, const std::string& run_id) {
  aijobs::v1::SubmitJobRequest r = aijobs::ChatRequest(absl::StrCat("fault job ", i));
  r.set_idempotency_key(absl::StrCat(run_id, "-", i));
  r.set_max_attempts(10);
  auto& sim = *(*r.mutable_input()->mutable_fields())["sim"].mutable_struct_value();
  (*sim.mutable_fields())["ttft_ms"].set_number_value(stream ? 50 : 0);
  (*sim.mutable_fields())["tokens"].set_number_value(stream ? 40 : 2);
  (*sim.mutable_fields())["tokens_per_s"].set_number_value(stream ? 40 : 0);
  return r;
}

// Watches one job from seq 0 to its end; returns "ok" or what was wrong.
std::string WatchOne(const aijobs::Client& client, const std::string& id, absl::Time until) {
  int64_t last = 0;
  std::string problem;
  std::string text;
  aijobs::WatchOptions options;
  options.deadline = until - absl::Now();
  if (options.deadline <= absl::ZeroDuration()) return "watch deadline passed before it started";
  absl::StatusOr<aijobs::v1::Job> job = client.Watch(
      id, 0,
      [&](const aijobs::v1::JobEvent& e) {
        // Seqs only grow (the SDK drops replayed ones), but they need not be dense: a live
        // watcher gets deltas queued behind a slow write merged into one event. A lost or
        // repeated token shows in the text check below.
        if (e.seq() <= last && problem.empty()) {
          problem = absl::StrCat("seq ", e.seq(), " after ", last);
        }
        last = e.seq();
        if (e.has_state_change() && e.state_change().discard_output()) text.clear();
        if (e.has_output_delta()) text += e.output_delta().text();
        return true;
      },
      options);
  if (!job.ok()) return OneLine(absl::StrCat("watch failed: ", job.status().ToString()));
  if (!problem.empty()) return problem;
  if (job->state() != aijobs::v1::SUCCEEDED) {
    return absl::StrCat("ended ", aijobs::v1::JobState_Name(job->state()));
  }
  auto it = job->result().fields().find("text");
  std::string result = it == job->result().fields().end() ? "" : it->second.string_value();
  if (text != result) {
    return OneLine(absl::StrCat("streamed text '", text, "' != result '", result, "'"));
  }
  return "ok";
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::string out_path = absl::GetFlag(FLAGS_out);
  if (absl::GetFlag(FLAGS_scheduler).empty() || out_path.empty()) {
    std::cerr << "aijobs-fault-client: --scheduler and --out are required\n";
    return 2;
  }
  Recorder record(out_path);
  if (!record.ok()) {
    std::cerr << "aijobs-fault-client: cannot write " << out_path << "\n";
    return 2;
  }
  aijobs::ClientOptions options;
  options.watch_initial_backoff = absl::Milliseconds(50);
  options.watch_max_backoff = absl::Milliseconds(500);
  options.keepalive_time = absl::Seconds(5);  // notice a partitioned replica quickly
  options.keepalive_timeout = absl::Seconds(3);
  aijobs::Client client(absl::GetFlag(FLAGS_scheduler), options);

  const int jobs = absl::GetFlag(FLAGS_jobs);
  const double rate = absl::GetFlag(FLAGS_rate);
  const int stream_every = absl::GetFlag(FLAGS_stream_every);
  const std::string run_id = absl::GetFlag(FLAGS_run_id);
  const absl::Time start = absl::Now();
  const absl::Time until = start + absl::Seconds(absl::GetFlag(FLAGS_max_s));

  absl::Mutex mu;
  std::deque<std::string> to_watch;  // guarded by mu
  bool submitting_done = false;      // guarded by mu
  std::atomic<int> next{0}, acked{0}, nacked{0};

  std::vector<std::thread> watchers;
  for (int w = 0; w < absl::GetFlag(FLAGS_watchers); ++w) {
    watchers.emplace_back([&] {
      for (;;) {
        std::string id;
        {
          absl::MutexLock lock(&mu);
          auto ready = [&] { return !to_watch.empty() || submitting_done; };
          mu.Await(absl::Condition(&ready));
          if (to_watch.empty()) return;
          id = std::move(to_watch.front());
          to_watch.pop_front();
        }
        record.Line(absl::StrCat("watch\t", id, "\t", WatchOne(client, id, until)));
      }
    });
  }
  std::vector<std::thread> submitters;
  for (int t = 0; t < absl::GetFlag(FLAGS_submitters); ++t) {
    submitters.emplace_back([&] {
      for (int i = next++; i < jobs; i = next++) {
        // Paced: job i goes out at start + i / rate, whatever happened to earlier ones.
        absl::Time at = start + absl::Seconds(i / rate);
        if (at > absl::Now()) absl::SleepFor(at - absl::Now());
        const bool stream = stream_every > 0 && i % stream_every == 0;
        absl::StatusOr<aijobs::v1::Job> job = client.Submit(Request(i, stream, run_id));
        if (!job.ok()) {
          ++nacked;
          record.Line(absl::StrCat("nack\t", i, "\t",
                                   absl::StatusCodeToString(job.status().code()), "\t",
                                   OneLine(std::string(job.status().message()))));
          continue;
        }
        ++acked;
        record.Line(absl::StrCat("ack\t", i, "\t", job->id(), "\t", stream ? 1 : 0));
        if (stream) {
          absl::MutexLock lock(&mu);
          to_watch.push_back(job->id());
        }
      }
    });
  }
  for (auto& t : submitters) t.join();
  record.Line(absl::StrCat("done\t", acked.load(), "\t", nacked.load()));
  {
    absl::MutexLock lock(&mu);
    submitting_done = true;
  }
  for (auto& t : watchers) t.join();
  std::fprintf(stderr, "aijobs-fault-client: %d acknowledged, %d refused in %.1f s\n",
               acked.load(), nacked.load(), absl::ToDoubleSeconds(absl::Now() - start));
  return 0;
}
