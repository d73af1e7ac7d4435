#include "bench/load/load.h"

#include <arpa/inet.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <deque>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "aijobs/client.h"
#include "bench/http_client.h"
#include "common/scheduler_target.h"
#include "common/sse_parser.h"
#include "common/tls_credentials.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace aijobs::load {
namespace {

using google::protobuf::Struct;
using google::protobuf::Value;

std::string GrpcCodeName(absl::StatusCode code) { return absl::StatusCodeToString(code); }

// Sleeps until `until` or until `stop` returns true, checking every 50 ms.
template <typename F>
void SleepUntil(absl::Time until, F stop) {
  while (!stop()) {
    absl::Duration left = until - absl::Now();
    if (left <= absl::ZeroDuration()) return;
    absl::SleepFor(std::min(left, absl::Milliseconds(50)));
  }
}

// How users submit and follow jobs, and how the probes reach the deployment: the client SDK
// over gRPC, or REST/JSON + Server-Sent Events through the HTTP gateway.
class Transport {
 public:
  virtual ~Transport() = default;
  virtual absl::StatusOr<v1::Job> Submit(const v1::SubmitJobRequest& req) = 0;
  // Follows the job's events after *after_seq (advanced as events arrive) for at most
  // `slice`. Returns the final job when the stream delivered it; a job in a non-terminal
  // state when the stream ended without one; DEADLINE_EXCEEDED when the slice ran out.
  virtual absl::StatusOr<v1::Job> Watch(const std::string& job_id, int64_t* after_seq,
                                        absl::Duration slice) = 0;
  virtual absl::StatusOr<v1::ListJobsResponse> List(const v1::ListJobsRequest& req) = 0;
  // One health check (grpc.health.v1, or GET /healthz): OK when serving.
  virtual absl::Status Health() = 0;
};

class GrpcTransport final : public Transport {
 public:
  // `target`: HOST:PORT or a comma-separated list of replicas (checked by ParseTarget).
  GrpcTransport(const std::string& target, const std::string& token,
                std::shared_ptr<grpc::ChannelCredentials> creds)
      : client_(target, Options(token, creds)) {
    grpc::ChannelArguments args;
    SetFailoverChannelArgs(&args);
    health_ = grpc::health::v1::Health::NewStub(grpc::CreateCustomChannel(
        SchedulerChannelTargetFromList(target).value_or(target), creds, args));
  }
  absl::StatusOr<v1::Job> Submit(const v1::SubmitJobRequest& req) override {
    return client_.Submit(req);
  }
  absl::StatusOr<v1::Job> Watch(const std::string& job_id, int64_t* after_seq,
                                absl::Duration slice) override {
    WatchOptions opts;
    opts.deadline = slice;
    return client_.Watch(
        job_id, *after_seq,
        [after_seq](const v1::JobEvent& e) {
          *after_seq = e.seq();
          return true;
        },
        opts);
  }
  absl::StatusOr<v1::ListJobsResponse> List(const v1::ListJobsRequest& req) override {
    return client_.List(req);
  }
  absl::Status Health() override {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
    grpc::health::v1::HealthCheckRequest req;
    grpc::health::v1::HealthCheckResponse resp;
    grpc::Status s = health_->Check(&ctx, req, &resp);
    if (!s.ok()) return absl::UnavailableError(s.error_message());
    if (resp.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
      return absl::UnavailableError("not serving");
    }
    return absl::OkStatus();
  }

 private:
  static ClientOptions Options(const std::string& token,
                               std::shared_ptr<grpc::ChannelCredentials> creds) {
    ClientOptions opts;
    opts.credentials = std::move(creds);
    opts.default_deadline = absl::Seconds(5);
    opts.bearer_token = token;
    return opts;
  }
  aijobs::Client client_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

// Percent-encodes a query parameter value.
std::string QueryEscape(absl::string_view v) {
  std::string out;
  for (unsigned char ch : v) {
    if (absl::ascii_isalnum(ch) || ch == '-' || ch == '_' || ch == '.' || ch == '~') {
      out.push_back(static_cast<char>(ch));
    } else {
      absl::StrAppendFormat(&out, "%%%02X", ch);
    }
  }
  return out;
}

// The gRPC status an HTTP error response carries: the gateway's body is a google.rpc.Status
// as JSON ({"code": N, "message": ...}); anything else maps to UNKNOWN with the HTTP status.
absl::Status HttpError(int http_status, const std::string& body) {
  Struct err;
  google::protobuf::util::JsonParseOptions po;
  po.ignore_unknown_fields = true;
  if (google::protobuf::util::JsonStringToMessage(body, &err, po).ok()) {
    auto code = err.fields().find("code");
    auto msg = err.fields().find("message");
    if (code != err.fields().end() && code->second.has_number_value() &&
        code->second.number_value() > 0 && code->second.number_value() <= 16) {
      return absl::Status(static_cast<absl::StatusCode>(code->second.number_value()),
                          msg != err.fields().end() ? msg->second.string_value() : "");
    }
  }
  return absl::UnknownError(absl::StrCat("HTTP ", http_status, ": ", body.substr(0, 200)));
}

template <typename M>
absl::Status ParseJson(const std::string& json, M* message) {
  google::protobuf::util::JsonParseOptions po;
  po.ignore_unknown_fields = true;
  auto s = google::protobuf::util::JsonStringToMessage(json, message, po);
  return s.ok() ? absl::OkStatus()
                : absl::InternalError(absl::StrCat("bad JSON from the gateway: ", s.ToString()));
}

// Through the gateway: POST /v1/jobs, GET /v1/jobs/{id}/events as SSE (resumed with
// Last-Event-ID), GET /v1/jobs?state=..., GET /healthz. Unary calls reuse keep-alive
// connections from a pool; each event stream has its own connection (SSE ends with it).
class HttpTransport final : public Transport {
 public:
  HttpTransport(const std::string& host_port, const std::string& token)
      : authorization_(token.empty() ? "" : "Bearer " + token) {
    size_t colon = host_port.rfind(':');
    host_ = host_port.substr(0, colon);
    port_ = std::stoi(host_port.substr(colon + 1));
    host_header_ = host_port;
  }

  absl::StatusOr<v1::Job> Submit(const v1::SubmitJobRequest& req) override {
    std::string body;
    auto js = google::protobuf::util::MessageToJsonString(req, &body);
    if (!js.ok()) return absl::InternalError(js.ToString());
    absl::StatusOr<bench::HttpResponse> r = Call(bench::HttpRequestText(
        "POST", "/v1/jobs", host_header_, Headers({{"Content-Type", "application/json"}}), body));
    if (!r.ok()) return r.status();
    if (r->status / 100 != 2) return HttpError(r->status, r->body);
    v1::Job job;
    if (absl::Status s = ParseJson(r->body, &job); !s.ok()) return s;
    return job;
  }

  absl::StatusOr<v1::Job> Watch(const std::string& job_id, int64_t* after_seq,
                                absl::Duration slice) override {
    absl::Time deadline = absl::Now() + slice;
    auto conn = bench::HttpConnection::Connect(host_, port_, slice);
    if (!conn.ok()) return conn.status();
    std::vector<std::pair<std::string, std::string>> headers =
        Headers({{"Accept", "text/event-stream"}});
    if (*after_seq > 0) headers.emplace_back("Last-Event-ID", absl::StrCat(*after_seq));
    const std::string request = bench::HttpRequestText(
        "GET", absl::StrCat("/v1/jobs/", QueryEscape(job_id), "/events"), host_header_, headers);
    int status = 0;
    std::string error_body;
    SseParser sse;
    absl::Status event_error;
    v1::Job final_job;
    bool got_final = false;
    absl::Status s = (*conn)->Stream(
        request,
        [&](int st) {
          status = st;
          return true;
        },
        [&](absl::string_view piece) {
          if (status != 200) {
            error_body.append(piece.data(), piece.size());
            return true;
          }
          return sse.Feed(piece, [&](const SseEvent& ev) {
            if (ev.event == "error") {
              event_error = HttpError(500, ev.data);
              return false;
            }
            v1::JobEvent e;
            if (absl::Status ps = ParseJson(ev.data, &e); !ps.ok()) {
              event_error = ps;
              return false;
            }
            *after_seq = std::max(*after_seq, e.seq());
            if (e.has_final_job()) {
              final_job = e.final_job();
              got_final = true;
              return false;  // the stream ends right after; no need to wait for it
            }
            return true;
          });
        },
        deadline);
    if (got_final) return final_job;
    if (!event_error.ok()) return event_error;
    if (status != 0 && status != 200) return HttpError(status, error_body);
    if (!s.ok()) return s;
    v1::Job unfinished;
    unfinished.set_id(job_id);
    return unfinished;
  }

  absl::StatusOr<v1::ListJobsResponse> List(const v1::ListJobsRequest& req) override {
    std::string target = absl::StrCat("/v1/jobs?page_size=", req.page_size());
    if (req.state() != v1::JOB_STATE_UNSPECIFIED) {
      absl::StrAppend(&target, "&state=", v1::JobState_Name(req.state()));
    }
    if (!req.page_token().empty()) {
      absl::StrAppend(&target, "&page_token=", QueryEscape(req.page_token()));
    }
    absl::StatusOr<bench::HttpResponse> r =
        Call(bench::HttpRequestText("GET", target, host_header_, Headers({})));
    if (!r.ok()) return r.status();
    if (r->status != 200) return HttpError(r->status, r->body);
    v1::ListJobsResponse resp;
    if (absl::Status s = ParseJson(r->body, &resp); !s.ok()) return s;
    return resp;
  }

  absl::Status Health() override {
    absl::StatusOr<bench::HttpResponse> r =
        Call(bench::HttpRequestText("GET", "/healthz", host_header_, Headers({})));
    if (!r.ok()) return r.status();
    return r->status == 200 ? absl::OkStatus() : HttpError(r->status, r->body);
  }

 private:
  // One request on a pooled keep-alive connection; a broken pooled connection (closed by the
  // gateway's idle timeout) is retried once on a fresh one.
  absl::StatusOr<bench::HttpResponse> Call(const std::string& request) {
    for (int attempt = 0;; ++attempt) {
      std::unique_ptr<bench::HttpConnection> conn;
      bool pooled = false;
      {
        absl::MutexLock l(&mu_);
        if (!idle_.empty()) {
          conn = std::move(idle_.back());
          idle_.pop_back();
          pooled = true;
        }
      }
      if (conn == nullptr) {
        auto c = bench::HttpConnection::Connect(host_, port_, absl::Seconds(5));
        if (!c.ok()) return c.status();
        conn = std::move(*c);
      }
      absl::StatusOr<bench::HttpResponse> r = conn->RoundTrip(request, absl::Seconds(5));
      if (!r.ok() && pooled && attempt == 0 && absl::IsUnavailable(r.status())) continue;
      if (conn->open()) {
        absl::MutexLock l(&mu_);
        idle_.push_back(std::move(conn));
      }
      return r;
    }
  }

  std::string host_;
  int port_ = 0;
  // `base` plus the Authorization header when a token is configured.
  std::vector<std::pair<std::string, std::string>> Headers(
      std::vector<std::pair<std::string, std::string>> base) const {
    if (!authorization_.empty()) base.emplace_back("Authorization", authorization_);
    return base;
  }

  const std::string authorization_;
  std::string host_header_;
  absl::Mutex mu_;
  std::vector<std::unique_ptr<bench::HttpConnection>> idle_ ABSL_GUARDED_BY(mu_);
};

// Everything the user threads, the probes and the monitor share during a run.
class Run {
 public:
  Run(const LoadConfig& config, Transport* transport) : cfg_(config), transport_(transport) {
    if (!cfg_.sim_json.empty()) {
      // Validated by ValidateConfig.
      (void)google::protobuf::util::JsonStringToMessage(cfg_.sim_json, &sim_);
      has_sim_ = true;
    }
    if (cfg_.prompts.empty()) cfg_.prompts = DefaultPrompts();
  }

  void Start() {
    start_ = absl::Now();
    submit_end_ = start_ + cfg_.ramp + cfg_.duration;
    absl::MutexLock l(&mu_);
    next_slot_ = start_;
  }

  // Stops submitting; in-flight jobs are watched until now + drain.
  void StopSubmitting() {
    absl::MutexLock l(&mu_);
    if (stop_submit_.load()) return;
    stop_time_ = absl::Now();
    drain_deadline_ = stop_time_ + cfg_.drain;
    stop_submit_.store(true);
  }

  void UserLoop(int index) {
    // Users start spread evenly over the ramp (spike); all at once without a ramp.
    absl::Time begin = start_ + cfg_.ramp * index / std::max(1, cfg_.users);
    SleepUntil(begin, [&] { return stop_submit_.load(); });
    while (!stop_submit_.load()) {
      if (cfg_.rate > 0 && !WaitForRateSlot()) break;
      OneJob();
    }
    active_users_.fetch_sub(1);
  }

  void AddUser() { active_users_.fetch_add(1); }
  int active_users() const { return active_users_.load(); }
  bool stopped() const { return stop_submit_.load(); }
  absl::Time start() const { return start_; }
  absl::Time submit_end() const { return submit_end_; }
  absl::Time drain_deadline() {
    absl::MutexLock l(&mu_);
    return drain_deadline_;
  }

  std::string ProgressLine() {
    std::vector<double> window;
    {
      absl::MutexLock l(&rmu_);
      PruneWindow(absl::Now());
      for (const auto& [t, ms] : window_) window.push_back(ms);
    }
    std::sort(window.begin(), window.end());
    return absl::StrFormat(
        "[aijobs-load] %6.1fs users=%d sent=%d completed=%d failed=%d e2e(10s) p50=%.1fms "
        "p99=%.1fms%s",
        absl::ToDoubleSeconds(absl::Now() - start_), active_users_.load(), sent_.load(),
        succeeded_.load(), failed_.load(), Percentile(window, 50), Percentile(window, 99),
        stop_submit_.load() ? " (draining)" : "");
  }

  void Finish(LoadResult* r) {
    absl::Time end = absl::Now();
    r->config = cfg_;
    r->elapsed_s = absl::ToDoubleSeconds(end - start_);
    {
      absl::MutexLock l(&mu_);
      r->submit_phase_s =
          absl::ToDoubleSeconds((stop_time_ == absl::InfiniteFuture() ? end : stop_time_) - start_);
    }
    r->sent = sent_.load();
    r->submit_errors = submit_errors_.load();
    r->succeeded = succeeded_.load();
    r->failed = failed_.load();
    absl::MutexLock l(&rmu_);
    r->errors = errors_;
    r->submit_ms = submit_ms_;
    r->e2e_ms = e2e_ms_;
  }

 private:
  // Reserves the next submit slot of the global rate; false when stopped while waiting.
  bool WaitForRateSlot() {
    absl::Time slot;
    {
      absl::MutexLock l(&mu_);
      slot = std::max(next_slot_, absl::Now());
      next_slot_ = slot + absl::Seconds(1) / cfg_.rate;
    }
    SleepUntil(slot, [&] { return stop_submit_.load(); });
    return !stop_submit_.load();
  }

  v1::SubmitJobRequest NextRequest() {
    uint64_t i = prompt_index_.fetch_add(1);
    v1::SubmitJobRequest req = aijobs::ChatRequest(cfg_.prompts[i % cfg_.prompts.size()]);
    if (has_sim_) {
      *(*req.mutable_input()->mutable_fields())["sim"].mutable_struct_value() = sim_;
    }
    return req;
  }

  void RecordFailure(const std::string& code) {
    failed_.fetch_add(1);
    absl::MutexLock l(&rmu_);
    ++errors_[code];
  }

  void OneJob() {
    v1::SubmitJobRequest req = NextRequest();
    absl::Time t0 = absl::Now();
    absl::StatusOr<v1::Job> job = transport_->Submit(req);
    double submit_ms = absl::ToDoubleMilliseconds(absl::Now() - t0);
    if (!job.ok()) {
      submit_errors_.fetch_add(1);
      RecordFailure("SUBMIT_" + GrpcCodeName(job.status().code()));
      // A down target must not turn every user into a busy loop.
      SleepUntil(absl::Now() + absl::Milliseconds(100), [&] { return stop_submit_.load(); });
      return;
    }
    sent_.fetch_add(1);
    {
      absl::MutexLock l(&rmu_);
      submit_ms_.push_back(submit_ms);
    }
    // Watch in slices of at most 1 s, resuming after the last seen seq, so a stop request
    // (whose drain deadline is not known in advance) bounds the wait for quiet jobs too.
    int64_t after_seq = 0;
    for (;;) {
      absl::Time slice_end = std::min(absl::Now() + absl::Seconds(1), drain_deadline());
      absl::Duration slice = slice_end - absl::Now();
      if (slice <= absl::ZeroDuration()) {
        RecordFailure("DRAIN_TIMEOUT");
        return;
      }
      absl::StatusOr<v1::Job> end = transport_->Watch(job->id(), &after_seq, slice);
      if (!end.ok()) {
        if (end.status().code() == absl::StatusCode::kDeadlineExceeded) continue;
        RecordFailure("WATCH_" + GrpcCodeName(end.status().code()));
        return;
      }
      if (!aijobs::IsTerminal(end->state())) continue;
      double e2e_ms = absl::ToDoubleMilliseconds(absl::Now() - t0);
      {
        absl::MutexLock l(&rmu_);
        e2e_ms_.push_back(e2e_ms);
        window_.emplace_back(absl::Now(), e2e_ms);
        PruneWindow(absl::Now());
      }
      if (end->state() == v1::SUCCEEDED) {
        succeeded_.fetch_add(1);
      } else if (end->state() == v1::CANCELLED) {
        RecordFailure("CANCELLED");
      } else {
        RecordFailure(end->error().code().empty() ? "FAILED" : end->error().code());
      }
      return;
    }
  }

  void PruneWindow(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(rmu_) {
    while (!window_.empty() && window_.front().first < now - absl::Seconds(10)) {
      window_.pop_front();
    }
  }

  LoadConfig cfg_;
  Transport* transport_;
  Struct sim_;
  bool has_sim_ = false;
  absl::Time start_;
  absl::Time submit_end_;
  std::atomic<bool> stop_submit_{false};
  std::atomic<int> active_users_{0};
  std::atomic<int64_t> sent_{0}, succeeded_{0}, failed_{0}, submit_errors_{0};
  std::atomic<uint64_t> prompt_index_{0};

  absl::Mutex mu_;
  absl::Time stop_time_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  absl::Time drain_deadline_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  absl::Time next_slot_ ABSL_GUARDED_BY(mu_);

  absl::Mutex rmu_;
  std::map<std::string, int64_t> errors_ ABSL_GUARDED_BY(rmu_);
  std::vector<double> submit_ms_ ABSL_GUARDED_BY(rmu_);
  std::vector<double> e2e_ms_ ABSL_GUARDED_BY(rmu_);
  std::deque<std::pair<absl::Time, double>> window_ ABSL_GUARDED_BY(rmu_);
};

// One health check every `interval` (on the probe's own channel or connection) until stopped.
void HealthLoop(Transport* transport, absl::Duration interval, absl::Notification* stop,
                LoadResult* r) {
  do {
    absl::Time t0 = absl::Now();
    absl::Status s = transport->Health();
    double ms = absl::ToDoubleMilliseconds(absl::Now() - t0);
    if (s.ok()) {
      r->health_ms.push_back(ms);
    } else {
      ++r->health_failures;
    }
  } while (!stop->WaitForNotificationWithTimeout(interval));
}

// Counts QUEUED jobs (pages of 1000, up to kQueueDepthCap) every `interval` until stopped.
void QueueLoop(Transport* client, absl::Time start, absl::Duration interval,
               absl::Notification* stop, LoadResult* r) {
  do {
    QueueSample sample;
    sample.t_s = absl::ToDoubleSeconds(absl::Now() - start);
    v1::ListJobsRequest req;
    req.set_state(v1::QUEUED);
    req.set_page_size(1000);
    for (;;) {
      absl::StatusOr<v1::ListJobsResponse> page = client->List(req);
      if (!page.ok()) {
        sample.error = true;
        break;
      }
      sample.queued += page->jobs_size();
      if (sample.queued >= kQueueDepthCap) {
        sample.queued = kQueueDepthCap;
        sample.capped = true;
        break;
      }
      if (page->next_page_token().empty()) break;
      req.set_page_token(page->next_page_token());
    }
    r->queue.push_back(sample);
  } while (!stop->WaitForNotificationWithTimeout(interval));
}

Value Num(double v) {
  Value x;
  x.set_number_value(v);
  return x;
}
Value Str(const std::string& v) {
  Value x;
  x.set_string_value(v);
  return x;
}
Value Bool(bool v) {
  Value x;
  x.set_bool_value(v);
  return x;
}

Value LatencyValue(const LatencySummary& s) {
  Value v;
  auto& f = *v.mutable_struct_value()->mutable_fields();
  f["count"] = Num(static_cast<double>(s.count));
  f["p50_ms"] = Num(s.p50_ms);
  f["p90_ms"] = Num(s.p90_ms);
  f["p99_ms"] = Num(s.p99_ms);
  f["max_ms"] = Num(s.max_ms);
  return v;
}

std::string DurationText(absl::Duration d) { return absl::FormatDuration(d); }

}  // namespace

std::vector<std::string> DefaultPrompts() {
  return {
      "Summarize the plot of Hamlet in two sentences.",
      "Write a haiku about a queue of jobs waiting for a worker.",
      "Explain the difference between TCP and UDP to a new engineer.",
      "List three ways to make a PostgreSQL insert faster.",
      "Translate 'the scheduler is healthy' into French.",
      "What is a good name for a cat that likes to sleep on servers?",
  };
}

absl::StatusOr<LoadConfig> ScenarioConfig(const std::string& name) {
  LoadConfig c;
  c.scenario = name;
  if (name == "quick") {
    c.users = 10;
    c.duration = absl::Seconds(30);
  } else if (name == "medium") {
    c.users = 50;
    c.duration = absl::Seconds(120);
  } else if (name == "spike") {
    c.users = 500;
    c.ramp = absl::Seconds(5);
    c.duration = absl::Seconds(30);
  } else if (name == "soak") {
    c.users = 10;
    c.duration = absl::ZeroDuration();  // must be given with --duration
  } else if (name == "custom") {
    c.users = 10;
    c.duration = absl::Seconds(30);
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown scenario '", name, "' (expected quick, medium, spike, soak or custom)"));
  }
  return c;
}

absl::StatusOr<std::string> ParseTarget(const std::string& target) {
  std::string t = target;
  std::string lower = absl::AsciiStrToLower(t);
  if (t.find(',') != std::string::npos) {
    // Several scheduler replicas: each entry is checked alone; they must make one target.
    if (absl::StartsWith(lower, "http://")) {
      return absl::InvalidArgumentError(absl::StrCat(
          "target '", target, "': a list of addresses is for gRPC targets only (one gateway)"));
    }
    if (absl::StartsWith(lower, "grpc://")) t = t.substr(7);
    absl::StatusOr<std::vector<std::string>> list = ParseSchedulerList(t);
    if (!list.ok()) return list.status();
    for (std::string& entry : *list) {
      absl::StatusOr<std::string> one = ParseTarget(entry);
      if (!one.ok()) return one.status();
      entry = *one;
    }
    if (absl::Status s = SchedulerChannelTarget(*list).status(); !s.ok()) return s;
    return absl::StrJoin(*list, ",");
  }
  if (absl::StartsWith(lower, "https://")) {
    return absl::InvalidArgumentError(
        absl::StrCat("target '", target,
                     "': https is not supported (aijobs-load speaks plain HTTP to a gateway; use "
                     "http://HOST:PORT)"));
  }
  if (absl::StartsWith(lower, "http://")) {
    t = t.substr(7);
  } else if (absl::StartsWith(lower, "grpc://")) {
    t = t.substr(7);
  } else if (t.find("://") != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "target '", target, "': unsupported scheme (use grpc://HOST:PORT or http://HOST:PORT)"));
  }
  if (!t.empty() && t.back() == '/') t.pop_back();
  size_t colon = t.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == t.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "target '", target, "': expected HOST:PORT, grpc://HOST:PORT or http://HOST:PORT"));
  }
  std::string host = t.substr(0, colon);
  if (host.find(':') != std::string::npos && host.front() != '[') {
    return absl::InvalidArgumentError(
        absl::StrCat("target '", target, "': write IPv6 addresses as [ADDR]:PORT"));
  }
  int port = 0;
  if (!absl::SimpleAtoi(t.substr(colon + 1), &port) || port <= 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("target '", target, "': bad port"));
  }
  return t;
}

bool IsHttpTarget(const std::string& target) {
  return absl::StartsWith(absl::AsciiStrToLower(target), "http://");
}

bool IsLoopbackTarget(const std::string& host_port) {
  if (host_port.find(',') != std::string::npos) {
    for (absl::string_view one : absl::StrSplit(host_port, ',')) {
      if (!IsLoopbackTarget(std::string(one))) return false;
    }
    return true;
  }
  size_t colon = host_port.rfind(':');
  std::string host = colon == std::string::npos ? host_port : host_port.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  host = absl::AsciiStrToLower(host);
  if (host == "localhost" || host == "ip6-localhost") return true;
  in_addr v4;
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) {
    return (ntohl(v4.s_addr) >> 24) == 127;
  }
  in6_addr v6;
  if (inet_pton(AF_INET6, host.c_str(), &v6) == 1) return IN6_IS_ADDR_LOOPBACK(&v6);
  // Other names are not resolved: a name could point anywhere.
  return false;
}

absl::Status ValidateConfig(const LoadConfig& c) {
  if (c.users < 1) return absl::InvalidArgumentError("--users must be at least 1");
  if (c.users > kMaxUsers) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--users ", c.users, " is above the limit of ", kMaxUsers,
        " (each simulated user is a thread; run several aijobs-load processes for more)"));
  }
  if (c.duration <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(c.scenario == "soak"
                                          ? "scenario soak needs --duration (e.g. --duration 2h)"
                                          : "--duration must be positive");
  }
  if (c.duration == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError("--duration must be finite");
  }
  if (c.rate < 0 || std::isnan(c.rate)) {
    return absl::InvalidArgumentError("--rate must be >= 0 (0 = closed loop)");
  }
  if (c.drain < absl::ZeroDuration()) return absl::InvalidArgumentError("--drain must be >= 0");
  if (!c.sim_json.empty()) {
    Struct s;
    auto st = google::protobuf::util::JsonStringToMessage(c.sim_json, &s);
    if (!st.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--sim must be a JSON object: ", std::string(st.message())));
    }
  }
  absl::StatusOr<std::string> host_port = ParseTarget(c.target);
  if (!host_port.ok()) return host_port.status();
  if (!c.allow_remote && !IsLoopbackTarget(*host_port)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "target '", c.target,
        "' is not a loopback address; aijobs-load only drives local deployments by default so "
        "a typo cannot load-test someone else's service. Pass --allow-remote to run anyway."));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> ReadPromptFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read prompt file ", path));
  std::vector<std::string> prompts;
  std::string line;
  while (std::getline(in, line)) {
    std::string p(absl::StripAsciiWhitespace(line));
    if (!p.empty()) prompts.push_back(p);
  }
  if (prompts.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("prompt file ", path, " has no prompts"));
  }
  return prompts;
}

double Throughput(const LoadResult& r) {
  return r.elapsed_s > 0 ? static_cast<double>(r.succeeded) / r.elapsed_s : 0;
}

double SuccessRate(const LoadResult& r) {
  int64_t total = r.succeeded + r.failed;
  return total > 0 ? static_cast<double>(r.succeeded) / static_cast<double>(total) : 0;
}

absl::StatusOr<LoadResult> RunLoad(const LoadConfig& config, const std::atomic<bool>* interrupt) {
  if (absl::Status s = ValidateConfig(config); !s.ok()) return s;
  absl::StatusOr<std::string> target = ParseTarget(config.target);
  if (!target.ok()) return target.status();

  const bool http = IsHttpTarget(config.target);
  auto grpc_creds = ClientTlsCredentials({config.tls_ca, "", ""});
  if (!grpc_creds.ok()) return grpc_creds.status();
  // Users, the queue probe and the health probe each get their own transport (connections).
  auto make = [&]() -> std::unique_ptr<Transport> {
    if (http) return std::make_unique<HttpTransport>(*target, config.token);
    return std::make_unique<GrpcTransport>(*target, config.token, *grpc_creds);
  };
  std::unique_ptr<Transport> client = make(), health_transport = make(), queue_transport = make();
  {
    // Reachability check before any thread starts: an unreachable target is an error, not
    // a run with 100% failures.
    v1::ListJobsRequest probe;
    probe.set_page_size(1);
    absl::StatusOr<v1::ListJobsResponse> r = client->List(probe);
    if (!r.ok()) {
      return absl::Status(r.status().code(),
                          absl::StrCat("target ", *target, " unreachable: ", r.status().message()));
    }
  }

  LoadResult result;
  Run run(config, client.get());
  run.Start();

  LoadResult health, queue;
  absl::Notification stop_probes;
  std::thread health_thread(HealthLoop, health_transport.get(), config.health_interval,
                            &stop_probes, &health);
  std::thread queue_thread(QueueLoop, queue_transport.get(), run.start(), config.queue_interval,
                           &stop_probes, &queue);

  std::vector<std::thread> users;
  users.reserve(config.users);
  for (int i = 0; i < config.users; ++i) {
    run.AddUser();
    users.emplace_back([&run, i] { run.UserLoop(i); });
  }

  absl::Time next_progress = run.start() + absl::Seconds(1);
  for (;;) {
    absl::SleepFor(absl::Milliseconds(50));
    absl::Time now = absl::Now();
    if (!run.stopped()) {
      if (interrupt != nullptr && interrupt->load()) {
        result.interrupted = true;
        if (config.progress) fprintf(stderr, "\n[aijobs-load] interrupted: draining\n");
        run.StopSubmitting();
      } else if (now >= run.submit_end()) {
        run.StopSubmitting();
      }
    }
    if (run.stopped() && run.active_users() == 0) break;
    if (config.progress && now >= next_progress) {
      fprintf(stderr, "%s\n", run.ProgressLine().c_str());
      next_progress += absl::Seconds(1);
      if (next_progress < now) next_progress = now + absl::Seconds(1);
    }
  }
  for (auto& t : users) t.join();
  run.Finish(&result);
  stop_probes.Notify();
  health_thread.join();
  queue_thread.join();
  result.health_ms = std::move(health.health_ms);
  result.health_failures = health.health_failures;
  result.queue = std::move(queue.queue);
  if (config.progress) fprintf(stderr, "%s\n", run.ProgressLine().c_str());
  return result;
}

std::string ReportJson(const LoadResult& r) {
  Struct root;
  auto& f = *root.mutable_fields();
  const LoadConfig& c = r.config;
  f["scenario"] = Str(c.scenario);
  f["target"] = Str(c.target);
  f["transport"] = Str(IsHttpTarget(c.target) ? "http" : "grpc");
  {
    Value p;
    auto& pf = *p.mutable_struct_value()->mutable_fields();
    pf["users"] = Num(c.users);
    pf["rate_jobs_per_s"] = Num(c.rate);
    pf["ramp_s"] = Num(absl::ToDoubleSeconds(c.ramp));
    pf["duration_s"] = Num(absl::ToDoubleSeconds(c.duration));
    pf["drain_s"] = Num(absl::ToDoubleSeconds(c.drain));
    pf["sim"] = Str(c.sim_json);
    pf["prompts"] =
        Num(static_cast<double>(c.prompts.empty() ? DefaultPrompts().size() : c.prompts.size()));
    f["parameters"] = p;
  }
  f["interrupted"] = Bool(r.interrupted);
  f["elapsed_s"] = Num(r.elapsed_s);
  f["submit_phase_s"] = Num(r.submit_phase_s);
  f["sent"] = Num(static_cast<double>(r.sent));
  f["submit_errors"] = Num(static_cast<double>(r.submit_errors));
  f["completed"] = Num(static_cast<double>(r.succeeded));
  f["failed"] = Num(static_cast<double>(r.failed));
  f["throughput_jobs_per_s"] = Num(Throughput(r));
  f["success_rate"] = Num(SuccessRate(r));
  f["submit_latency"] = LatencyValue(Summarize(r.submit_ms));
  f["e2e_latency"] = LatencyValue(Summarize(r.e2e_ms));
  {
    Value e;
    auto& ef = *e.mutable_struct_value()->mutable_fields();
    for (const auto& [code, n] : r.errors) ef[code] = Num(static_cast<double>(n));
    f["errors"] = e;
  }
  {
    Value h;
    auto& hf = *h.mutable_struct_value()->mutable_fields();
    hf["checks"] = Num(static_cast<double>(r.health_ms.size() + r.health_failures));
    hf["failures"] = Num(static_cast<double>(r.health_failures));
    hf["latency"] = LatencyValue(Summarize(r.health_ms));
    f["health"] = h;
  }
  {
    Value q;
    auto* list = q.mutable_list_value();
    for (const QueueSample& s : r.queue) {
      Value v;
      auto& vf = *v.mutable_struct_value()->mutable_fields();
      vf["t_s"] = Num(s.t_s);
      vf["queued"] = Num(static_cast<double>(s.queued));
      vf["capped"] = Bool(s.capped);
      vf["error"] = Bool(s.error);
      *list->add_values() = v;
    }
    f["queue_depth"] = q;
    f["queue_depth_cap"] = Num(kQueueDepthCap);
  }
  std::string out;
  google::protobuf::util::JsonPrintOptions po;
  po.add_whitespace = true;
  po.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(root, &out, po);
  return out;
}

std::string ReportMarkdown(const LoadResult& r) {
  const LoadConfig& c = r.config;
  std::string md;
  absl::StrAppend(&md, "# aijobs-load report\n\n");
  absl::StrAppend(&md, "## Scenario\n\n| parameter | value |\n|---|---|\n");
  absl::StrAppend(&md, "| scenario | ", c.scenario, " |\n| target | `", c.target, "` |\n");
  absl::StrAppend(&md, "| transport | ",
                  IsHttpTarget(c.target) ? "HTTP/JSON + SSE through the gateway" : "gRPC", " |\n");
  absl::StrAppend(&md, "| users | ", c.users, " |\n");
  absl::StrAppend(&md, "| rate | ",
                  c.rate > 0 ? absl::StrCat(c.rate, " jobs/s") : std::string("closed loop"),
                  " |\n");
  absl::StrAppend(&md, "| ramp | ", DurationText(c.ramp), " |\n| duration | ",
                  DurationText(c.duration), " |\n| drain | ", DurationText(c.drain), " |\n");
  absl::StrAppend(&md, "| sim | `", c.sim_json.empty() ? "(worker defaults)" : c.sim_json, "` |\n");
  absl::StrAppend(&md, "| interrupted | ", r.interrupted ? "yes (Ctrl-C/SIGTERM)" : "no", " |\n\n");

  absl::StrAppend(&md, "## Summary\n\n| metric | value |\n|---|---|\n");
  absl::StrAppend(&md, absl::StrFormat("| elapsed | %.2f s (submitting %.2f s) |\n", r.elapsed_s,
                                       r.submit_phase_s));
  absl::StrAppend(&md, "| jobs sent | ", r.sent, " |\n| submit errors | ", r.submit_errors,
                  " |\n| completed (SUCCEEDED) | ", r.succeeded, " |\n| failed | ", r.failed,
                  " |\n");
  absl::StrAppend(&md, absl::StrFormat("| throughput | %.2f completed jobs/s |\n", Throughput(r)));
  absl::StrAppend(&md, absl::StrFormat("| success rate | %.4f |\n\n", SuccessRate(r)));

  absl::StrAppend(&md,
                  "## Latency (ms)\n\n| | count | p50 | p90 | p99 | max |\n"
                  "|---|---|---|---|---|---|\n");
  auto row = [&md](const char* name, const LatencySummary& s) {
    absl::StrAppend(&md, absl::StrFormat("| %s | %d | %.2f | %.2f | %.2f | %.2f |\n", name, s.count,
                                         s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms));
  };
  row("submit", Summarize(r.submit_ms));
  row("end-to-end", Summarize(r.e2e_ms));
  row("health check", Summarize(r.health_ms));
  absl::StrAppend(&md, "\nHealth checks (",
                  IsHttpTarget(c.target) ? "GET /healthz" : "grpc.health.v1", " every ",
                  DurationText(c.health_interval), "): ", r.health_ms.size(), " ok, ",
                  r.health_failures, " failed.\n\n");

  absl::StrAppend(&md, "## Errors by code\n\n");
  if (r.errors.empty()) {
    absl::StrAppend(&md, "None.\n\n");
  } else {
    absl::StrAppend(&md, "| code | count |\n|---|---|\n");
    for (const auto& [code, n] : r.errors) absl::StrAppend(&md, "| ", code, " | ", n, " |\n");
    absl::StrAppend(&md, "\n");
  }

  absl::StrAppend(&md, "## Queue depth (QUEUED jobs, every ", DurationText(c.queue_interval),
                  ")\n\n| t (s) | queued |\n|---|---|\n");
  for (const QueueSample& s : r.queue) {
    std::string v = s.error    ? std::string("(ListJobs failed)")
                    : s.capped ? absl::StrCat(">= ", kQueueDepthCap)
                               : absl::StrCat(s.queued);
    absl::StrAppend(&md, absl::StrFormat("| %.1f | %s |\n", s.t_s, v));
  }
  return md;
}

absl::Status WriteFile(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write ", path));
  out << contents;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("error writing ", path));
  return absl::OkStatus();
}

}  // namespace aijobs::load
