#include "workers/openai/curl_loop.h"

#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace aijobs::openai {
namespace {

std::once_flag global_init_once;

long ToMillis(absl::Duration d) {
  if (d == absl::InfiniteDuration()) return 0;  // curl: 0 = no timeout
  return static_cast<long>(std::max<int64_t>(1, absl::ToInt64Milliseconds(d)));
}

}  // namespace

struct CurlLoop::Transfer {
  TransferId id = 0;
  CurlLoop* loop = nullptr;
  HttpRequest request;
  std::shared_ptr<TransferHandler> handler;
  CURL* easy = nullptr;
  curl_slist* header_list = nullptr;
  char error[CURL_ERROR_SIZE] = {0};
  long status = 0;
  bool headers_started = false;
  bool body_started = false;
  bool cancelled = false;
  bool armed = false;  // has a live entry in the loop's deadline heap, at armed_at
  absl::Time armed_at;
  absl::Time started;
  absl::Time last_activity;

  ~Transfer() {
    if (easy != nullptr) curl_easy_cleanup(easy);
    if (header_list != nullptr) curl_slist_free_all(header_list);
  }

  // The earliest of this transfer's deadlines and which timer it belongs to.
  std::pair<absl::Time, TransferTimeout> NextDeadline() const {
    absl::Time when = request.deadline;
    TransferTimeout kind = TransferTimeout::kTotal;
    if (!body_started && request.first_byte_timeout != absl::InfiniteDuration() &&
        started + request.first_byte_timeout < when) {
      when = started + request.first_byte_timeout;
      kind = TransferTimeout::kFirstByte;
    }
    if (headers_started && request.idle_timeout != absl::InfiniteDuration() &&
        last_activity + request.idle_timeout < when) {
      when = last_activity + request.idle_timeout;
      kind = TransferTimeout::kIdle;
    }
    return {when, kind};
  }
};

CurlLoop::CurlLoop() {
  std::call_once(global_init_once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  multi_ = curl_multi_init();
  curl_multi_setopt(multi_, CURLMOPT_SOCKETFUNCTION, &CurlLoop::SocketCallback);
  curl_multi_setopt(multi_, CURLMOPT_SOCKETDATA, this);
  curl_multi_setopt(multi_, CURLMOPT_TIMERFUNCTION, &CurlLoop::TimerCallback);
  curl_multi_setopt(multi_, CURLMOPT_TIMERDATA, this);
  curl_multi_setopt(multi_, CURLMOPT_PIPELINING, static_cast<long>(CURLPIPE_MULTIPLEX));
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = wake_fd_;
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev);
  now_ = absl::Now();
  thread_ = std::thread([this] { Run(); });
  thread_id_ = thread_.get_id();
  // Named so the HTTP/SSE path's CPU can be read per thread from outside the process
  // (/proc/<pid>/task/*/comm), e.g. by bench_worker_llm's end-to-end benchmark.
  pthread_setname_np(thread_.native_handle(), "aijobs-curl");
}

CurlLoop::~CurlLoop() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  uint64_t one = 1;
  (void)!write(wake_fd_, &one, sizeof(one));
  thread_.join();
  for (auto& [id, t] : transfers_) curl_multi_remove_handle(multi_, t->easy);
  transfers_.clear();
  {
    absl::MutexLock lock(&mu_);
    ops_.clear();
    timers_.clear();
  }
  curl_multi_cleanup(multi_);
  close(wake_fd_);
  close(epoll_fd_);
}

CurlLoop::TransferId CurlLoop::Start(HttpRequest request,
                                     std::shared_ptr<TransferHandler> handler) {
  auto t = std::make_unique<Transfer>();
  t->loop = this;
  t->request = std::move(request);
  t->handler = std::move(handler);
  TransferId id;
  {
    absl::MutexLock lock(&mu_);
    id = next_id_++;
    t->id = id;
    ops_.push_back(Op{Op::kStart, id, std::move(t)});
  }
  Wake();
  return id;
}

void CurlLoop::Cancel(TransferId id) {
  if (InLoopThread()) {
    // Suppress every further callback now; the handle is removed once curl is not inside
    // one of our callbacks (DrainOps runs between curl calls).
    if (auto it = transfers_.find(id); it != transfers_.end()) it->second->cancelled = true;
  }
  {
    absl::MutexLock lock(&mu_);
    ops_.push_back(Op{Op::kCancel, id, nullptr});
  }
  Wake();
}

CurlLoop::TimerId CurlLoop::RunAt(absl::Time when, std::function<void()> fn) {
  TimerId id;
  {
    absl::MutexLock lock(&mu_);
    id = next_id_++;
    timers_.emplace(std::make_pair(when, id), std::move(fn));
    timer_when_[id] = when;
  }
  Wake();
  return id;
}

bool CurlLoop::CancelTimer(TimerId id) {
  absl::MutexLock lock(&mu_);
  auto it = timer_when_.find(id);
  if (it == timer_when_.end()) return false;
  timers_.erase(std::make_pair(it->second, id));
  timer_when_.erase(it);
  return true;
}

void CurlLoop::Wake() {
  if (InLoopThread()) return;  // the loop drains its queue before it waits again
  {
    absl::MutexLock lock(&mu_);
    if (wake_pending_) return;
    wake_pending_ = true;
  }
  uint64_t one = 1;
  (void)!write(wake_fd_, &one, sizeof(one));
}

void CurlLoop::Run() {
  epoll_event events[128];
  for (;;) {
    int wait_ms = NextWaitMs();
    int n = epoll_wait(epoll_fd_, events, 128, wait_ms);
    now_ = absl::Now();
    int running = 0;
    for (int i = 0; i < n; ++i) {
      int fd = events[i].data.fd;
      if (fd == wake_fd_) {
        uint64_t count;
        while (read(wake_fd_, &count, sizeof(count)) > 0) {
        }
        absl::MutexLock lock(&mu_);
        wake_pending_ = false;
        if (stop_) return;
        continue;
      }
      int flags = 0;
      if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLRDHUP)) flags |= CURL_CSELECT_IN;
      if (events[i].events & EPOLLOUT) flags |= CURL_CSELECT_OUT;
      if (events[i].events & EPOLLERR) flags |= CURL_CSELECT_ERR;
      curl_multi_socket_action(multi_, fd, flags, &running);
    }
    if (curl_deadline_ <= now_) {
      curl_deadline_ = absl::InfiniteFuture();
      curl_multi_socket_action(multi_, CURL_SOCKET_TIMEOUT, 0, &running);
    }
    ReadCompleted();
    RunDueTimers();
    CheckDeadlines();
    DrainOps();
    ReadCompleted();
  }
}

int CurlLoop::NextWaitMs() {
  absl::Time next = curl_deadline_;
  if (!deadlines_.empty()) next = std::min(next, deadlines_.top().first);
  {
    absl::MutexLock lock(&mu_);
    if (!ops_.empty()) return 0;
    if (!timers_.empty()) next = std::min(next, timers_.begin()->first.first);
  }
  if (next == absl::InfiniteFuture()) return -1;
  absl::Duration d = next - absl::Now();
  if (d <= absl::ZeroDuration()) return 0;
  // Round up so that the loop never wakes just before a deadline and spins.
  int64_t ms = absl::ToInt64Milliseconds(d + absl::Milliseconds(1) - absl::Nanoseconds(1));
  return static_cast<int>(std::min<int64_t>(ms, 60000));
}

void CurlLoop::DrainOps() {
  std::vector<Op> ops;
  {
    absl::MutexLock lock(&mu_);
    if (ops_.empty()) return;
    ops.swap(ops_);
  }
  for (Op& op : ops) {
    if (op.kind == Op::kStart) {
      StartOnLoop(std::move(op.transfer));
    } else {
      CancelOnLoop(op.id);
    }
  }
}

void CurlLoop::StartOnLoop(std::unique_ptr<Transfer> t) {
  CURL* e = curl_easy_init();
  t->easy = e;
  const HttpRequest& r = t->request;
  curl_easy_setopt(e, CURLOPT_URL, r.url.c_str());
  curl_easy_setopt(e, CURLOPT_PRIVATE, t.get());
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_2TLS));
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, ToMillis(r.connect_timeout));
  curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->error);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &CurlLoop::WriteCallback);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, t.get());
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, &CurlLoop::HeaderCallback);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, t.get());
  if (r.method == "POST") {
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, r.body.data());
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(r.body.size()));
  } else if (r.method != "GET") {
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r.method.c_str());
  }
  for (const std::string& h : r.headers)
    t->header_list = curl_slist_append(t->header_list, h.c_str());
  // A POST body over 1 MB would otherwise wait up to a second for "100 Continue".
  t->header_list = curl_slist_append(t->header_list, "Expect:");
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->header_list);
  t->started = now_;
  t->last_activity = now_;
  Transfer* raw = t.get();
  transfers_[t->id] = std::move(t);
  active_.store(transfers_.size(), std::memory_order_relaxed);
  Arm(raw);
  if (CURLMcode mc = curl_multi_add_handle(multi_, e); mc != CURLM_OK) {
    TransferResult result;
    result.code = CURLE_FAILED_INIT;
    result.error = absl::StrCat("curl_multi_add_handle: ", curl_multi_strerror(mc));
    Finish(raw, &result);
  }
}

void CurlLoop::Arm(Transfer* t) {
  absl::Time when = t->NextDeadline().first;
  if (when == absl::InfiniteFuture()) return;
  // A live entry at or before `when` re-evaluates the transfer then; an earlier deadline
  // needs a new entry (the old one becomes stale and is skipped).
  if (t->armed && t->armed_at <= when) return;
  deadlines_.emplace(when, t->id);
  t->armed = true;
  t->armed_at = when;
}

void CurlLoop::CancelOnLoop(TransferId id) {
  auto it = transfers_.find(id);
  if (it == transfers_.end()) return;
  Finish(it->second.get(), nullptr);
}

void CurlLoop::Finish(Transfer* t, const TransferResult* result) {
  curl_multi_remove_handle(multi_, t->easy);
  auto it = transfers_.find(t->id);
  std::unique_ptr<Transfer> owned = std::move(it->second);
  transfers_.erase(it);
  active_.store(transfers_.size(), std::memory_order_relaxed);
  if (result != nullptr && !owned->cancelled) owned->handler->OnComplete(*result);
}

void CurlLoop::ReadCompleted() {
  int pending = 0;
  while (CURLMsg* msg = curl_multi_info_read(multi_, &pending)) {
    if (msg->msg != CURLMSG_DONE) continue;
    Transfer* t = nullptr;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &t);
    TransferResult result;
    result.code = msg->data.result;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &result.http_status);
    if (result.code != CURLE_OK) {
      result.error = t->error[0] != '\0' ? std::string(t->error)
                                         : std::string(curl_easy_strerror(result.code));
    }
    Finish(t, &result);
  }
}

void CurlLoop::RunDueTimers() {
  std::vector<std::function<void()>> due;
  {
    absl::MutexLock lock(&mu_);
    while (!timers_.empty() && timers_.begin()->first.first <= now_) {
      auto node = timers_.extract(timers_.begin());
      timer_when_.erase(node.key().second);
      due.push_back(std::move(node.mapped()));
    }
  }
  for (auto& fn : due) fn();
}

void CurlLoop::CheckDeadlines() {
  while (!deadlines_.empty() && deadlines_.top().first <= now_) {
    TransferId id = deadlines_.top().second;
    absl::Time at = deadlines_.top().first;
    deadlines_.pop();
    auto it = transfers_.find(id);
    if (it == transfers_.end()) continue;
    Transfer* t = it->second.get();
    if (!t->armed || t->armed_at != at) continue;  // stale entry
    t->armed = false;
    auto [when, kind] = t->NextDeadline();
    if (when > now_) {
      Arm(t);
      continue;
    }
    TransferResult result;
    result.code = CURLE_OPERATION_TIMEDOUT;
    result.http_status = t->status;
    result.timeout = kind;
    switch (kind) {
      case TransferTimeout::kFirstByte:
        result.error = absl::StrCat("no response within the first-byte timeout (",
                                    absl::FormatDuration(t->request.first_byte_timeout), ")");
        break;
      case TransferTimeout::kIdle:
        result.error = absl::StrCat("stream stalled: nothing received for ",
                                    absl::FormatDuration(t->request.idle_timeout));
        break;
      default:
        result.error = "request deadline exceeded";
        break;
    }
    Finish(t, &result);
  }
}

int CurlLoop::SocketCallback(CURL* easy, curl_socket_t s, int what, void* userp, void* socketp) {
  auto* self = static_cast<CurlLoop*>(userp);
  if (what == CURL_POLL_REMOVE) {
    epoll_ctl(self->epoll_fd_, EPOLL_CTL_DEL, s, nullptr);
    return 0;
  }
  epoll_event ev{};
  ev.data.fd = s;
  if (what & CURL_POLL_IN) ev.events |= EPOLLIN;
  if (what & CURL_POLL_OUT) ev.events |= EPOLLOUT;
  if (epoll_ctl(self->epoll_fd_, EPOLL_CTL_MOD, s, &ev) != 0 && errno == ENOENT) {
    epoll_ctl(self->epoll_fd_, EPOLL_CTL_ADD, s, &ev);
  }
  return 0;
}

int CurlLoop::TimerCallback(CURLM* multi, long timeout_ms, void* userp) {
  auto* self = static_cast<CurlLoop*>(userp);
  self->curl_deadline_ =
      timeout_ms < 0 ? absl::InfiniteFuture() : absl::Now() + absl::Milliseconds(timeout_ms);
  return 0;
}

size_t CurlLoop::WriteCallback(char* ptr, size_t size, size_t nmemb, void* userdata) {
  auto* t = static_cast<Transfer*>(userdata);
  size_t n = size * nmemb;
  if (t->cancelled) return 0;
  t->body_started = true;
  t->last_activity = t->loop->now_;
  bool go_on = t->handler->OnData(absl::string_view(ptr, n));
  if (!go_on || t->cancelled) return 0;  // any other count than n aborts the transfer
  return n;
}

size_t CurlLoop::HeaderCallback(char* ptr, size_t size, size_t nmemb, void* userdata) {
  auto* t = static_cast<Transfer*>(userdata);
  size_t n = size * nmemb;
  if (t->cancelled) return 0;
  t->last_activity = t->loop->now_;
  if (!t->headers_started) {
    t->headers_started = true;
    t->loop->Arm(t);  // the idle timer starts with the response
  }
  absl::string_view line(ptr, n);
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
  if (absl::StartsWith(line, "HTTP/")) {
    long status = 0;
    size_t sp = line.find(' ');
    if (sp != absl::string_view::npos) {
      absl::string_view code = line.substr(sp + 1, 3);
      int v = 0;
      if (absl::SimpleAtoi(code, &v)) status = v;
    }
    t->status = status;
    t->handler->OnStatus(status);
  } else if (line.empty()) {
    if (t->status >= 200) t->handler->OnHeadersComplete(t->status);
  } else if (size_t colon = line.find(':'); colon != absl::string_view::npos) {
    t->handler->OnHeader(absl::StripAsciiWhitespace(line.substr(0, colon)),
                         absl::StripAsciiWhitespace(line.substr(colon + 1)));
  }
  return t->cancelled ? 0 : n;
}

}  // namespace aijobs::openai
