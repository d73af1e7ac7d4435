// RecordingSink: an EventSink for tests that keeps every event it is given.
//
//   auto sink = std::make_shared<RecordingSink>();
//   hub.Subscribe(job_id, sink);
//   EXPECT_EQ(sink->events().size(), 2u);
#pragma once

#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "scheduler/event_hub.h"

namespace aijobs::scheduler {

class RecordingSink : public EventSink {
 public:
  void OnEvent(const v1::JobEvent& event) override {
    absl::MutexLock lock(&mu_);
    events_.push_back(event);
  }
  std::vector<v1::JobEvent> events() {
    absl::MutexLock lock(&mu_);
    return events_;
  }

 private:
  absl::Mutex mu_;
  std::vector<v1::JobEvent> events_ ABSL_GUARDED_BY(mu_);
};

}  // namespace aijobs::scheduler
