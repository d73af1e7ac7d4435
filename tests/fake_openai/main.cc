// fake-openai-server: the fake OpenAI-compatible server as a process, for multi-process
// tests and benchmarks. Prints "listening on 127.0.0.1:PORT" as its first stdout line and
// serves until SIGINT/SIGTERM. Per-request control: see tests/fake_openai/fake_openai_server.h.
//
//   fake-openai-server --port 0 --default "tokens=40 rate=50"
#include <signal.h>

#include <cstdio>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "tests/fake_openai/fake_openai_server.h"

ABSL_FLAG(int, port, 0, "Port to listen on (0: pick a free one).");
ABSL_FLAG(std::string, host, "127.0.0.1", "Address to listen on.");
ABSL_FLAG(std::string, default, "", "Default behaviour directive, e.g. \"tokens=40 rate=50\".");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  // Block the stop signals in every thread; the main thread waits for them with sigwait.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  absl::StatusOr<aijobs::fake_openai::Behavior> behavior =
      aijobs::fake_openai::ParseBehavior(absl::GetFlag(FLAGS_default));
  if (!behavior.ok()) {
    std::cerr << "fake-openai-server: --default: " << behavior.status().message() << "\n";
    return 2;
  }
  aijobs::fake_openai::FakeOpenAiServer server(*behavior);
  if (absl::Status s = server.Start(absl::GetFlag(FLAGS_port), absl::GetFlag(FLAGS_host));
      !s.ok()) {
    std::cerr << "fake-openai-server: " << s.message() << "\n";
    return 1;
  }
  std::cout << "listening on " << absl::GetFlag(FLAGS_host) << ":" << server.port() << std::endl;
  int sig = 0;
  sigwait(&set, &sig);
  server.Stop();
  return 0;
}
