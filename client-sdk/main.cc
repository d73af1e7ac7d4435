// aijobsctl entry point: wiring only; the logic is in cli.cc.
#include <iostream>

#include "absl/synchronization/mutex.h"
#include "client-sdk/cli.h"

int main(int argc, char** argv) {
  // Debian builds Abseil with Mutex deadlock detection on (a global graph consulted on every
  // lock); lock order is checked at compile time by the clang thread-safety build instead.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  return aijobs::ctl::RunCli(argc, argv, std::cout, std::cerr, std::cin);
}
