// One call of the RoutedProvider: tries the members of the model group in the order it was
// given, one inner call at a time, falls back on a retryable failure before any output,
// waits (on the routing timer) for rate-limited members, and forwards the serving member's
// events to the caller's sink.
//
//   auto call = std::make_shared<RoutedCall>(&timers, "sim", 256, std::move(order));
//   call->StartChat(request, sink);  // inner calls start here or on the timer thread
//   auto handle = std::make_unique<RoutedCallHandle>(call);  // what the caller holds
//
// Threading: the caller's sink is called from inner providers' threads (deltas, the final
// result) and from the routing timer thread (fallback exhausted, routing errors), never two
// at once. All state is guarded by one CallGate (workers/call_gate.h): a sink callback runs
// with the lock released, so it may cancel its own call or start another; Cancel() from
// another thread waits for a running one. Lock order: RoutedCall::gate_.mu, then the leaf
// locks of CircuitBreaker, TokenBucket and TimerQueue. Never under it: starting, cancelling
// or destroying an inner call (the inner gate may be waiting for a callback that waits for
// ours), or releasing a sink.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/time/time.h"
#include "workers/call_gate.h"
#include "workers/llm_provider.h"
#include "workers/routing/circuit_breaker.h"
#include "workers/routing/routed_deployment.h"
#include "workers/timer_queue.h"

namespace aijobs::worker {

class RoutedCall : public std::enable_shared_from_this<RoutedCall> {
 public:
  // `timers` runs fallbacks, waits and routing errors; it and the deployments in `order`
  // outlive the call. Per-job provider options go only to deployments whose provider is
  // `options_provider`; `default_max_tokens` sizes the token estimate of a chat without
  // max_tokens.
  RoutedCall(TimerQueue* timers, std::string options_provider, int default_max_tokens,
             std::vector<RoutedDeployment*> order);

  // Start routing; one of these three, once.
  void StartChat(const ChatRequest& request, std::shared_ptr<ChatSink> sink);
  void StartEmbed(const EmbedRequest& request, std::shared_ptr<EmbedSink> sink);
  // Reports `error` from the timer thread (never from inside the caller's Start*).
  void FailSoon(ProviderError error, std::shared_ptr<ChatSink> chat,
                std::shared_ptr<EmbedSink> embed);

  // LlmCall::Cancel(): no callback runs once it returns; the inner call is cancelled, a
  // rate-limit reservation given back and the breaker permit released without a verdict.
  void Cancel();

  // Hands over every inner call handle, for the caller to destroy outside our lock.
  std::vector<std::unique_ptr<LlmCall>> TakeHandles();

  // Events of inner call `serial` (any provider thread); stale serials are ignored.
  void OnInnerDelta(uint64_t serial, const std::string& text);
  void OnInnerChatDone(uint64_t serial, const Usage& usage);
  void OnInnerEmbedDone(uint64_t serial, std::vector<std::vector<float>> vectors,
                        const Usage& usage);
  void OnInnerError(uint64_t serial, const ProviderError& error);

 private:
  // An inner call decided under the lock and started after it is released.
  struct Launch {
    RoutedDeployment* deployment;
    uint64_t serial;
  };
  // What a step decided to do once its state is updated; declared before the lock is taken,
  // so the sinks it holds are released after the lock.
  struct Outbox {
    std::optional<Launch> launch;
    std::optional<ProviderError> error;  // the call's final callback
    std::shared_ptr<ChatSink> chat;
    std::shared_ptr<EmbedSink> embed;
  };
  using Step = void (RoutedCall::*)(Outbox*);

  bool IsCurrent(uint64_t serial) const ABSL_SHARED_LOCKS_REQUIRED(gate_.mu) {
    return !done_ && running_ && serial == serial_;
  }
  RoutedDeployment* Succeeded(const Usage& usage) ABSL_EXCLUSIVE_LOCKS_REQUIRED(gate_.mu);
  void NoteError(const ProviderError& error) ABSL_EXCLUSIVE_LOCKS_REQUIRED(gate_.mu);
  void ScheduleLocked(absl::Time when, Step step) ABSL_EXCLUSIVE_LOCKS_REQUIRED(gate_.mu);
  void RunStep(Step step);
  // Picks the next member and starts it, or waits for one, or fails the call.
  void Route(bool inside_start, Outbox* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(gate_.mu);
  void Continue(Outbox* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(gate_.mu);
  void ReservationDue(Outbox* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(gate_.mu);
  void DeliverPending(Outbox* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(gate_.mu);
  void StartInner(int index, CircuitBreaker::Permit permit, Outbox* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(gate_.mu);
  void Fail(ProviderError error, bool inside_start, Outbox* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(gate_.mu);
  // Starts out->launch with the lock released, then delivers out->error through the gate.
  void Flush(Outbox* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(gate_.mu);
  void LaunchUnlocked(const Launch& launch) ABSL_EXCLUSIVE_LOCKS_REQUIRED(gate_.mu);

  TimerQueue* const timers_;
  const std::string options_provider_;
  const int default_max_tokens_;
  const std::vector<RoutedDeployment*> order_;

  CallGate gate_;
  std::vector<bool> tried_ ABSL_GUARDED_BY(gate_.mu);
  bool is_embed_ ABSL_GUARDED_BY(gate_.mu) = false;
  ChatRequest chat_ ABSL_GUARDED_BY(gate_.mu);
  EmbedRequest embed_ ABSL_GUARDED_BY(gate_.mu);
  absl::Time deadline_ ABSL_GUARDED_BY(gate_.mu) = absl::InfiniteFuture();
  double estimate_ ABSL_GUARDED_BY(gate_.mu) = 0;
  std::shared_ptr<ChatSink> chat_sink_ ABSL_GUARDED_BY(gate_.mu);
  std::shared_ptr<EmbedSink> embed_sink_ ABSL_GUARDED_BY(gate_.mu);
  bool cancelled_ ABSL_GUARDED_BY(gate_.mu) = false;
  bool done_ ABSL_GUARDED_BY(gate_.mu) = false;           // finished or cancelled
  bool running_ ABSL_GUARDED_BY(gate_.mu) = false;        // an inner call is out
  bool delivered_any_ ABSL_GUARDED_BY(gate_.mu) = false;  // output reached the caller
  uint64_t serial_ ABSL_GUARDED_BY(gate_.mu) = 0;         // of the current inner call
  int current_ ABSL_GUARDED_BY(gate_.mu) = -1;            // its index in order_
  int reserved_ ABSL_GUARDED_BY(gate_.mu) = -1;           // index holding our reservation
  CircuitBreaker::Permit permit_ ABSL_GUARDED_BY(gate_.mu) = CircuitBreaker::Permit::kRejected;
  // The newest inner call handle stored (may be a finished one while the next is starting).
  std::unique_ptr<LlmCall> inner_ ABSL_GUARDED_BY(gate_.mu);
  uint64_t inner_serial_ ABSL_GUARDED_BY(gate_.mu) = 0;
  std::vector<std::unique_ptr<LlmCall>> spent_ ABSL_GUARDED_BY(gate_.mu);
  TimerQueue::TimerId timer_ ABSL_GUARDED_BY(gate_.mu) = 0;
  ProviderError last_error_ ABSL_GUARDED_BY(gate_.mu);
  bool have_error_ ABSL_GUARDED_BY(gate_.mu) = false;
  absl::Duration min_hint_ ABSL_GUARDED_BY(gate_.mu) = absl::InfiniteDuration();
  ProviderError pending_error_ ABSL_GUARDED_BY(gate_.mu);
};

// The handle the caller holds: destroying it cancels the call and then destroys the inner
// call handles, outside the call's lock.
class RoutedCallHandle : public LlmCall {
 public:
  explicit RoutedCallHandle(std::shared_ptr<RoutedCall> call) : call_(std::move(call)) {}
  ~RoutedCallHandle() override;
  void Cancel() override { call_->Cancel(); }

 private:
  std::shared_ptr<RoutedCall> call_;
};

}  // namespace aijobs::worker
