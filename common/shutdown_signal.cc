#include "common/shutdown_signal.h"

#include <dirent.h>

#include <cstdio>

namespace aijobs {
namespace {

// Threads of this process (Linux: entries of /proc/self/task), or -1 if unknown.
int ThreadCount() {
  DIR* dir = opendir("/proc/self/task");
  if (dir == nullptr) return -1;
  int n = 0;
  while (dirent* e = readdir(dir)) {
    if (e->d_name[0] != '.') ++n;
  }
  closedir(dir);
  return n;
}

sigset_t ShutdownSignals() {
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, SIGINT);
  sigaddset(&s, SIGTERM);
  return s;
}

}  // namespace

void ShutdownSignal::Block() {
  sigset_t s = ShutdownSignals();
  pthread_sigmask(SIG_BLOCK, &s, nullptr);
}

ShutdownSignal::ShutdownSignal(Handler on_signal)
    : signals_(ShutdownSignals()), on_signal_(std::move(on_signal)) {
  sigset_t current;
  pthread_sigmask(SIG_BLOCK, nullptr, &current);
  bool blocked_before = sigismember(&current, SIGINT) == 1 && sigismember(&current, SIGTERM) == 1;
  if (int threads = ThreadCount(); !blocked_before && threads > 1) {
    std::fprintf(stderr,
                 "aijobs: ShutdownSignal installed while %d threads run; SIGINT/SIGTERM "
                 "delivered to one of the others would end the process without cleanup\n",
                 threads);
  }
  Block();
  thread_ = std::thread([this] { Loop(); });
}

ShutdownSignal::~ShutdownSignal() {
  exiting_.store(true);
  // A thread-directed signal wakes sigwait; the flag tells the loop it is not a real one.
  pthread_kill(thread_.native_handle(), SIGTERM);
  thread_.join();
}

void ShutdownSignal::Loop() {
  int count = 0;
  for (;;) {
    int sig = 0;
    if (sigwait(&signals_, &sig) != 0 || exiting_.load()) return;
    ++count;
    if (on_signal_) on_signal_(sig, count);
    if (count == 1) {
      first_signal_.store(sig);
      first_.Notify();
    }
  }
}

void ShutdownSignal::Wait() const { first_.WaitForNotification(); }

bool ShutdownSignal::WaitFor(absl::Duration timeout) const {
  return first_.WaitForNotificationWithTimeout(timeout);
}

}  // namespace aijobs
