// One event thread that drives every HTTP transfer of a worker through a single libcurl
// multi handle: hundreds of concurrent (streaming) requests, no thread per request, one
// shared connection cache (keep-alive, HTTP/2 multiplexing over TLS where offered).
//
//   CurlLoop loop;
//   CurlLoop::TransferId id = loop.Start(std::move(request), handler);  // handler: shared_ptr
//   loop.Cancel(id);  // optional; handler callbacks run on the loop thread
//
// Why multi_socket + epoll rather than curl_multi_poll(): curl_multi_perform() visits every
// easy handle on every wake-up (and polls each socket), which is O(transfers) per received
// chunk; with 500 streams at 50 chunks/s that is millions of handle visits per second. The
// socket API (CURLMOPT_SOCKETFUNCTION / CURLMOPT_TIMERFUNCTION + curl_multi_socket_action)
// touches only the transfer whose socket became ready, which is what libcurl recommends for
// many transfers. An eventfd wakes the loop for Start/Cancel/RunAt from other threads.
//
// Timeouts: connect via CURLOPT_CONNECTTIMEOUT_MS; first byte, idle between chunks and
// total deadline are the loop's own timers (CURLOPT_LOW_SPEED_* only works in whole
// seconds of average speed), checked lazily: a transfer's arrival of bytes only stores a
// timestamp, and the deadline heap re-arms an entry when it finds the transfer was active.
#pragma once

#include <curl/curl.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <queue>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace aijobs::openai {

struct HttpRequest {
  std::string url;
  std::string method = "POST";       // "GET" or "POST".
  std::vector<std::string> headers;  // "Name: value" lines.
  std::string body;                  // Sent for POST.
  absl::Duration connect_timeout = absl::Seconds(5);
  // Until the response headers are complete and the first body byte arrives.
  absl::Duration first_byte_timeout = absl::InfiniteDuration();
  // Longest silence once the response headers started arriving.
  absl::Duration idle_timeout = absl::InfiniteDuration();
  absl::Time deadline = absl::InfiniteFuture();  // Whole transfer.
};

// Which of the loop's own timers ended a transfer.
enum class TransferTimeout { kNone, kFirstByte, kIdle, kTotal };

struct TransferResult {
  CURLcode code = CURLE_OK;  // CURLE_OPERATION_TIMEDOUT for the loop's timers too.
  long http_status = 0;      // 0: no response status line was received.
  TransferTimeout timeout = TransferTimeout::kNone;
  std::string error;  // Human-readable reason when code != CURLE_OK.
};

// Receives one transfer's events, all on the loop thread, in order: OnStatus / OnHeader for
// each response header block (a 1xx block is followed by the final one), OnData as body
// bytes arrive, then exactly one OnComplete — unless the transfer was cancelled first.
class TransferHandler {
 public:
  virtual ~TransferHandler() = default;
  // The status line of a response header block ("HTTP/1.1 429 Too Many Requests").
  virtual void OnStatus(long status) {}
  // One response header, name as sent (compare case-insensitively), value trimmed.
  virtual void OnHeader(absl::string_view name, absl::string_view value) {}
  // End of a final (non-1xx) header block.
  virtual void OnHeadersComplete(long status) {}
  // Body bytes. Return false to abort the transfer (it then completes with
  // CURLE_WRITE_ERROR).
  virtual bool OnData(absl::string_view bytes) = 0;
  virtual void OnComplete(const TransferResult& result) = 0;
};

class CurlLoop {
 public:
  using TransferId = uint64_t;
  using TimerId = uint64_t;

  // Starts the loop thread. Calls curl_global_init once per process.
  CurlLoop();
  // Stops the thread; transfers still running are aborted and timers dropped, without any
  // callback. Destroy the loop only after every user (provider, call) is gone.
  ~CurlLoop();
  CurlLoop(const CurlLoop&) = delete;
  CurlLoop& operator=(const CurlLoop&) = delete;

  // Queues a transfer; the loop starts it at once. Thread-safe, also from a loop callback.
  // The loop keeps `handler` until the transfer completes or is cancelled.
  TransferId Start(HttpRequest request, std::shared_ptr<TransferHandler> handler);

  // Aborts a transfer (no OnComplete). From the loop thread (inside a callback) it takes
  // effect at once: no further callback of that transfer runs. From another thread it is
  // queued: a callback already running or about to run may still happen — owners that need
  // "no callback after Cancel returns" guard their handler themselves (OpenAiProvider does).
  // Unknown or finished ids are ignored.
  void Cancel(TransferId id);

  // Runs `fn` on the loop thread at or after `when`. Thread-safe.
  TimerId RunAt(absl::Time when, std::function<void()> fn);
  // Drops a timer that has not run yet. Returns whether it was dropped.
  bool CancelTimer(TimerId id);

  bool InLoopThread() const { return std::this_thread::get_id() == thread_id_; }

  // Number of transfers in progress (loop-thread view; for tests and metrics).
  size_t active_transfers() const { return active_.load(std::memory_order_relaxed); }

 private:
  struct Transfer;
  struct Op {
    enum Kind { kStart, kCancel } kind;
    TransferId id;
    std::unique_ptr<Transfer> transfer;  // kStart
  };

  void Run();
  void Wake();
  void DrainOps();
  void StartOnLoop(std::unique_ptr<Transfer> t);
  void CancelOnLoop(TransferId id);
  // Gives the transfer an entry in deadlines_ when it has none and a finite deadline.
  void Arm(Transfer* t);
  // Removes the easy handle and frees the transfer; calls OnComplete when `result` is set.
  void Finish(Transfer* t, const TransferResult* result);
  void ReadCompleted();
  void CheckDeadlines();
  void RunDueTimers();
  // Milliseconds until the earliest of curl's timer, our transfer deadlines and RunAt timers.
  int NextWaitMs();

  static int SocketCallback(CURL* easy, curl_socket_t s, int what, void* userp, void* socketp);
  static int TimerCallback(CURLM* multi, long timeout_ms, void* userp);
  static size_t WriteCallback(char* ptr, size_t size, size_t nmemb, void* userdata);
  static size_t HeaderCallback(char* ptr, size_t size, size_t nmemb, void* userdata);

  CURLM* multi_ = nullptr;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;

  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool wake_pending_ ABSL_GUARDED_BY(mu_) = false;
  TransferId next_id_ ABSL_GUARDED_BY(mu_) = 1;
  std::vector<Op> ops_ ABSL_GUARDED_BY(mu_);
  std::map<std::pair<absl::Time, TimerId>, std::function<void()>> timers_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<TimerId, absl::Time> timer_when_ ABSL_GUARDED_BY(mu_);

  // Loop-thread state.
  absl::flat_hash_map<TransferId, std::unique_ptr<Transfer>> transfers_;
  // (check time, id) min-heap of transfer deadlines; entries are re-armed lazily.
  std::priority_queue<std::pair<absl::Time, TransferId>,
                      std::vector<std::pair<absl::Time, TransferId>>, std::greater<>>
      deadlines_;
  absl::Time curl_deadline_ = absl::InfiniteFuture();
  absl::Time now_;
  std::atomic<size_t> active_{0};

  std::thread::id thread_id_;
  std::thread thread_;
};

}  // namespace aijobs::openai
