// The lock of one LLM call, and the rule that keeps the LlmCall contract (llm_provider.h)
// without holding any lock across a callback into other code: a callback runs with the lock
// released and is the only one in flight; Close() (the call's Cancel) waits for a callback
// running on another thread, but not for one running on its own thread, so a callback may
// cancel its own call. Every field of a call state is ABSL_GUARDED_BY(gate_.mu).
//
//   absl::MutexLock lock(&gate_.mu);
//   if (!gate_.Run([&] { sink->OnDelta(text); })) return;  // cancelled meanwhile
//   gate_.RunLast([&] { sink->OnDone(usage, model); });    // nothing runs after this
//
// Lock order: a call's mu is taken before the leaf locks of what it drives (CurlLoop,
// TimerQueue, CircuitBreaker, TokenBucket) and never while another call's mu is held. A
// callback (`fn`) must not touch state guarded by mu (-Wthread-safety checks the lambda),
// and whatever a callback may reach (sinks, inner LlmCall handles) is released or destroyed
// only after mu is unlocked: destroying a handle cancels it, which takes its own gate.
#pragma once

#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace aijobs::worker {

class CallGate {
 public:
  CallGate() = default;
  CallGate(const CallGate&) = delete;
  CallGate& operator=(const CallGate&) = delete;

  // Guards the gate and, by convention, the state of the call that owns it.
  absl::Mutex mu;

  // Whether Close() or RunLast() ran: no callback starts any more.
  bool closed() const ABSL_SHARED_LOCKS_REQUIRED(mu) { return closed_; }

  // Runs `fn` with mu released, as the call's one callback in flight, and returns with mu
  // held again. First waits for a callback running on another thread. Returns false without
  // running `fn` when the gate is closed, and false after `fn` when Close() ran meanwhile
  // (from another thread or from inside `fn`): the caller then stops delivering.
  template <typename Fn>
  bool Run(Fn&& fn) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (!Enter()) return false;
    mu.Unlock();
    std::forward<Fn>(fn)();
    mu.Lock();
    Exit();
    return !closed_;
  }

  // Like Run() for the call's final callback: closes the gate first, so no other callback
  // starts and a later Close() only waits for this one to return. Returns whether `fn` ran.
  template <typename Fn>
  bool RunLast(Fn&& fn) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (!Enter()) return false;
    closed_ = true;
    mu.Unlock();
    std::forward<Fn>(fn)();
    mu.Lock();
    Exit();
    return true;
  }

  // Closes the gate: once it returns no callback runs. A callback running on another thread
  // is waited for (mu is released while waiting, so the caller must re-check its state);
  // from inside a callback it returns at once. Returns whether the gate was open.
  bool Close() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    bool was_open = !closed_;
    closed_ = true;
    WaitForOtherThread();
    return was_open;
  }

  // Whether the calling thread is inside one of this gate's callbacks.
  bool InCallback() const ABSL_SHARED_LOCKS_REQUIRED(mu) {
    return in_callback_ && callback_thread_ == std::this_thread::get_id();
  }

 private:
  bool Enter() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    WaitForOtherThread();
    if (closed_ || in_callback_) return false;  // in_callback_: re-entered from inside fn
    in_callback_ = true;
    callback_thread_ = std::this_thread::get_id();
    return true;
  }

  void Exit() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    in_callback_ = false;
    callback_thread_ = std::thread::id();
    idle_.SignalAll();
  }

  void WaitForOtherThread() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    while (in_callback_ && callback_thread_ != std::this_thread::get_id()) idle_.Wait(&mu);
  }

  absl::CondVar idle_;  // signalled when a callback returns
  bool closed_ ABSL_GUARDED_BY(mu) = false;
  bool in_callback_ ABSL_GUARDED_BY(mu) = false;
  std::thread::id callback_thread_ ABSL_GUARDED_BY(mu);
};

}  // namespace aijobs::worker
