#include "common/executor.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace aijobs {

Executor::Executor(std::string name, int threads, size_t max_queue)
    : name_(std::move(name)), max_queue_(std::max<size_t>(max_queue, 1)) {
  for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Loop(); });
}

Executor::~Executor() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (auto& t : threads_) t.join();
}

void Executor::Run(std::function<void()> fn) {
  absl::MutexLock lock(&mu_);
  queue_.push_back(std::move(fn));
}

absl::Status Executor::TryRun(std::function<void()> fn) {
  absl::MutexLock lock(&mu_);
  if (queue_.size() >= max_queue_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("executor \"", name_, "\" is full: ", queue_.size(), " tasks already wait"));
  }
  queue_.push_back(std::move(fn));
  return absl::OkStatus();
}

size_t Executor::QueueLength() {
  absl::MutexLock lock(&mu_);
  return queue_.size();
}

void Executor::Loop() {
  while (true) {
    std::function<void()> fn;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]()
                       ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stopping_ || !queue_.empty(); };
      mu_.Await(absl::Condition(&ready));
      if (queue_.empty()) return;  // stopping and drained
      fn = std::move(queue_.front());
      queue_.pop_front();
    }
    fn();
  }
}

}  // namespace aijobs
