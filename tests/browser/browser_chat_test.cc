// The web chat page in real headless Chromium: starts PostgreSQL, aijobs-scheduler, one
// sim worker and aijobs-gateway, then runs tests/browser/chat_page.mjs (playwright-core
// driving Debian's /usr/bin/chromium) against the gateway's URL. The script asserts the
// user-visible behaviour (streaming, resume without duplicates, history, cancel, narrow
// screen); this wrapper owns the processes and checks the screenshot it leaves.
//
// Needs `./dev deps` (Debian's chromium, and `npm ci` in tests/browser): when either is
// missing the test fails and says so; it is never skipped.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/e2e_cluster.h"
#include "tests/fixtures/process.h"

namespace aijobs::testing {
namespace {

namespace fs = std::filesystem;

constexpr char kDepsHint[] =
    "run ./dev deps (installs Debian's chromium and npm ci in tests/browser)";

std::string ChromiumPath() {
  const char* env = std::getenv("AIJOBS_CHROMIUM");
  return env != nullptr && *env != '\0' ? env : "/usr/bin/chromium";
}

// The first executable `name` on $PATH, or "" when there is none.
std::string FindOnPath(const std::string& name) {
  const char* path = std::getenv("PATH");
  for (absl::string_view dir : absl::StrSplit(path != nullptr ? path : "/usr/bin:/bin", ':')) {
    if (dir.empty()) continue;
    std::string candidate = absl::StrCat(dir, "/", name);
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

// The HTTP status of GET `path` on 127.0.0.1:`port`, or -1 when there is no answer.
// A raw socket on purpose: the test needs one request, not an HTTP client library.
int HttpGetStatus(int port, const std::string& path) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  timeval tv{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  int status = -1;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string req = absl::StrCat("GET ", path, " HTTP/1.1\r\nHost: 127.0.0.1:", port,
                                         "\r\nConnection: close\r\n\r\n");
    if (send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) {
      std::string head;
      char buf[512];
      ssize_t n;
      while (head.find("\r\n") == std::string::npos && (n = recv(fd, buf, sizeof(buf), 0)) > 0) {
        head.append(buf, static_cast<size_t>(n));
      }
      // "HTTP/1.1 200 OK"
      std::vector<std::string> parts = absl::StrSplit(head.substr(0, head.find("\r\n")), ' ');
      if (parts.size() >= 2 && absl::StartsWith(parts[0], "HTTP/")) {
        status = std::atoi(parts[1].c_str());
      }
    }
  }
  close(fd);
  return status;
}

class BrowserChatTest : public E2eTest {
 protected:
  void TearDown() override {
    if (HasFailure() && gateway_ != nullptr) {
      fprintf(stderr, "%s\n", gateway_->LogTail(6000).c_str());
    }
    if (gateway_ != nullptr) gateway_->Kill();
    gateway_.reset();
    E2eTest::TearDown();
  }

  // Starts aijobs-gateway in front of the current scheduler and waits for /healthz 200.
  // Sets gateway_port_. Fatal failure when it does not come up.
  void StartGateway() {
    std::string last_error;
    // A probed free port can be taken before the gateway binds it: retry with another.
    for (int attempt = 0; attempt < 3; ++attempt) {
      const int port = FreePort();
      ProcessOptions opts;
      opts.path = BinPath("aijobs-gateway");
      opts.args = {"--listen", absl::StrCat("127.0.0.1:", port), "--scheduler", scheduler_address(),
                   "--anonymous_requests_per_minute=0"};
      auto proc = Process::Start(opts);
      ASSERT_TRUE(proc.ok()) << proc.status();
      Process* p = proc->get();
      int status = -1;
      bool ready = WaitFor(
          [&] {
            status = HttpGetStatus(port, "/healthz");
            return status == 200 || !p->IsRunning();
          },
          absl::Seconds(30), absl::Milliseconds(50));
      if (ready && status == 200) {
        gateway_ = std::move(*proc);
        gateway_port_ = port;
        return;
      }
      last_error = absl::StrCat("GET /healthz on port ", port, " answered ", status,
                                p->IsRunning() ? "" : " (process exited)", "\n", p->LogTail());
      p->Kill();
    }
    FAIL() << "aijobs-gateway did not start: " << last_error;
  }

  std::unique_ptr<Process> gateway_;
  int gateway_port_ = 0;
};

TEST_F(BrowserChatTest, ChatPageStreamsResumesAndKeepsHistory) {
  const std::string browser_dir = SourceDir() + "/tests/browser";
  const std::string script = browser_dir + "/chat_page.mjs";
  ASSERT_TRUE(fs::exists(script)) << "missing " << script;
  const std::string node = FindOnPath("node");
  ASSERT_FALSE(node.empty()) << "node is not on PATH; " << kDepsHint;
  ASSERT_TRUE(fs::exists(browser_dir + "/node_modules/playwright-core/package.json"))
      << "playwright-core is not installed in " << browser_dir << "; " << kDepsHint;
  ASSERT_EQ(access(ChromiumPath().c_str(), X_OK), 0)
      << ChromiumPath() << " is missing; " << kDepsHint;

  ASSERT_NO_FATAL_FAILURE(StartScheduler());
  ASSERT_NE(StartWorker("browser-w1"), nullptr);
  ASSERT_NO_FATAL_FAILURE(StartGateway());

  const std::string url = absl::StrCat("http://127.0.0.1:", gateway_port_);
  const std::string png = LogDir() + "/chat_page.png";
  std::error_code ec;
  fs::remove(png, ec);
  auto result = RunCommand(node, {script, url, png}, absl::Seconds(200));
  ASSERT_TRUE(result.ok()) << "chat_page.mjs did not finish: " << result.status();
  EXPECT_EQ(result->exit_code, 0) << "chat_page.mjs failed against " << url << "\nstdout:\n"
                                  << result->out << "\nstderr:\n"
                                  << result->err;
  ASSERT_TRUE(fs::exists(png)) << "no screenshot at " << png;
  EXPECT_GT(fs::file_size(png), 1024u) << png << " is too small to be a page screenshot";
  std::ifstream in(png, std::ios::binary);
  char magic[8] = {};
  in.read(magic, sizeof(magic));
  EXPECT_EQ(std::string(magic, sizeof(magic)), std::string("\x89PNG\r\n\x1a\n", 8))
      << png << " is not a PNG";
  fprintf(stderr, "screenshot: %s\n%s", png.c_str(), result->out.c_str());
}

}  // namespace
}  // namespace aijobs::testing
