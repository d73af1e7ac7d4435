// Test helper (not part of the library): an in-process WorkerService on 127.0.0.1 that
// records what a worker sends, answers hello with a welcome and lets a test push messages.
//
//   FakeServer server(0);                    // 0: a free port
//   server.service.WaitFor([](const auto& msgs) { return !msgs.empty(); });
//   server.service.Send(assignment);
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <functional>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "aijobs/v1/worker_service.grpc.pb.h"
#include "common/time_util.h"

namespace aijobs::worker::testing {

using aijobs::v1::SchedulerMessage;
using aijobs::v1::WorkerMessage;

inline constexpr absl::Duration kWait = absl::Seconds(15);

// An in-process WorkerService: records every message a worker sends, answers hello with a
// welcome, and lets the test push SchedulerMessages down the open stream.
// Answers hello with a welcome whose heartbeat_interval is 50 ms.
class FakeScheduler : public aijobs::v1::WorkerService::Service {
 public:
  grpc::Status Connect(grpc::ServerContext* context,
                       grpc::ServerReaderWriter<SchedulerMessage, WorkerMessage>* stream) override {
    {
      absl::MutexLock lock(&write_mu_);
      stream_ = stream;
    }
    {
      absl::MutexLock lock(&mu_);
      ++streams_opened_;
    }
    WorkerMessage m;
    while (stream->Read(&m)) {
      bool hello = m.has_hello();
      {
        absl::MutexLock lock(&mu_);
        received_.push_back(m);
      }
      if (hello) {
        SchedulerMessage welcome;
        welcome.mutable_welcome()->set_scheduler_id("fake");
        welcome.mutable_welcome()->set_session_id("s1");
        *welcome.mutable_welcome()->mutable_heartbeat_interval() =
            ToProtoDuration(absl::Milliseconds(50));
        Send(welcome);
      }
    }
    {
      absl::MutexLock lock(&write_mu_);
      stream_ = nullptr;
    }
    absl::MutexLock lock(&mu_);
    ++streams_closed_;
    closed_after_ = received_.size();
    return grpc::Status::OK;
  }

  bool Send(const SchedulerMessage& message) {
    absl::MutexLock lock(&write_mu_);
    return stream_ != nullptr && stream_->Write(message);
  }

  // Waits until `pred` holds over the messages received so far.
  bool WaitFor(const std::function<bool(const std::vector<WorkerMessage>&)>& pred,
               absl::Duration timeout = kWait) {
    absl::Time until = absl::Now() + timeout;
    absl::MutexLock lock(&mu_);
    while (!pred(received_)) {
      // Every change comes with a push under mu_; an Await on a trivially re-evaluated
      // condition re-checks pred after each.
      if (absl::Now() >= until) return false;
      size_t seen = received_.size();
      int closed = streams_closed_;
      auto changed = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
        return received_.size() != seen || streams_closed_ != closed;
      };
      mu_.AwaitWithDeadline(absl::Condition(&changed), until);
    }
    return true;
  }

  std::vector<WorkerMessage> received() {
    absl::MutexLock lock(&mu_);
    return received_;
  }
  int streams_opened() {
    absl::MutexLock lock(&mu_);
    return streams_opened_;
  }
  bool WaitClosed(int n) {
    absl::MutexLock lock(&mu_);
    auto closed = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return streams_closed_ >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&closed), kWait);
  }
  size_t closed_after() {
    absl::MutexLock lock(&mu_);
    return closed_after_;
  }

 private:
  absl::Mutex write_mu_;
  grpc::ServerReaderWriter<SchedulerMessage, WorkerMessage>* stream_ ABSL_GUARDED_BY(write_mu_) =
      nullptr;
  absl::Mutex mu_;
  std::vector<WorkerMessage> received_ ABSL_GUARDED_BY(mu_);
  int streams_opened_ ABSL_GUARDED_BY(mu_) = 0;
  int streams_closed_ ABSL_GUARDED_BY(mu_) = 0;
  size_t closed_after_ ABSL_GUARDED_BY(mu_) = 0;
};

struct FakeServer {
  // Starts on 127.0.0.1:port (0 picks a free port).
  explicit FakeServer(int port) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort(absl::StrCat("127.0.0.1:", port), grpc::InsecureServerCredentials(),
                             &this->port);
    builder.RegisterService(&service);
    server = builder.BuildAndStart();
  }
  ~FakeServer() { Stop(); }
  void Stop() {
    if (server == nullptr) return;
    server->Shutdown(std::chrono::system_clock::now());  // cancels open streams at once
    server->Wait();
    server.reset();
  }

  FakeScheduler service;
  int port = 0;
  std::unique_ptr<grpc::Server> server;
};

}  // namespace aijobs::worker::testing
