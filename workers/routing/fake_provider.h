// Test helper (not part of the library): a scripted LlmProvider that records every call it
// gets (start time, request) and answers as told, from its own timer thread, keeping the
// Cancel() contract of llm_provider.h. Plus a DeploymentFactory that builds one per
// deployment, so tests reach the fake behind each deployment by name.
//
//   FakeDeployments fakes;
//   auto routed = RoutedProvider::Create(config, fakes.Factory());
//   fakes.at("local")->SetBehavior({.error = RetryableError("503")});
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "workers/call_gate.h"
#include "workers/llm_provider.h"
#include "workers/routing/routed_provider.h"
#include "workers/timer_queue.h"

namespace aijobs::worker::testing {

struct FakeBehavior {
  std::vector<std::string> deltas = {"fake", " answer"};
  // Sent after the deltas instead of OnDone.
  std::optional<ProviderError> error = std::nullopt;
  absl::Duration delay = absl::ZeroDuration();  // before the first event
  bool hang = false;                            // never answers (until cancelled)
  Usage usage{3, 2};
  std::vector<float> vector = {1, 0};  // embed: each text's vector
};

inline ProviderError RetryableError(const std::string& message,
                                    absl::Duration retry_after = absl::ZeroDuration()) {
  return ProviderError{"PROVIDER_ERROR", message, true, retry_after};
}

class FakeProvider : public LlmProvider {
 public:
  explicit FakeProvider(std::string deployment) : deployment_(std::move(deployment)) {}
  ~FakeProvider() override = default;

  std::string name() const override { return "fake"; }

  void SetBehavior(FakeBehavior b) {
    absl::MutexLock lock(&mu_);
    behavior_ = std::move(b);
  }

  std::unique_ptr<LlmCall> StartChat(const ChatRequest& request,
                                     std::shared_ptr<ChatSink> sink) override {
    FakeBehavior b = Record(request.model, request.provider_options);
    auto state = std::make_shared<State>();
    SetSinks(state.get(), std::move(sink), nullptr);
    state->behavior = b;
    state->parent = this;
    Arm(state);
    return std::make_unique<Call>(state);
  }

  std::unique_ptr<LlmCall> StartEmbed(const EmbedRequest& request,
                                      std::shared_ptr<EmbedSink> sink) override {
    FakeBehavior b = Record(request.model, request.provider_options);
    auto state = std::make_shared<State>();
    SetSinks(state.get(), nullptr, std::move(sink));
    state->texts = request.texts.size();
    state->behavior = b;
    state->parent = this;
    Arm(state);
    return std::make_unique<Call>(state);
  }

  int calls() const {
    absl::MutexLock lock(&mu_);
    return static_cast<int>(starts_.size());
  }
  std::vector<absl::Time> start_times() const {
    absl::MutexLock lock(&mu_);
    return starts_;
  }
  std::string last_model() const {
    absl::MutexLock lock(&mu_);
    return last_model_;
  }
  google::protobuf::Struct last_options() const {
    absl::MutexLock lock(&mu_);
    return last_options_;
  }
  int cancels() const {
    absl::MutexLock lock(&mu_);
    return cancels_;
  }
  const std::string& deployment() const { return deployment_; }

  RateLimitObserver* observer = nullptr;

 private:
  // One fake call; keeps the LlmCall contract with a CallGate like the real providers.
  struct State {
    CallGate gate;
    bool done ABSL_GUARDED_BY(gate.mu) = false;
    FakeBehavior behavior;  // set before the call is armed, then read-only
    size_t texts = 0;       // likewise
    std::shared_ptr<ChatSink> chat ABSL_GUARDED_BY(gate.mu);
    std::shared_ptr<EmbedSink> embed ABSL_GUARDED_BY(gate.mu);
    TimerQueue::TimerId timer ABSL_GUARDED_BY(gate.mu) = 0;
    FakeProvider* parent = nullptr;

    void Run() {
      std::shared_ptr<ChatSink> c;  // released after the lock
      std::shared_ptr<EmbedSink> e;
      absl::MutexLock lock(&gate.mu);
      if (done) return;
      c = chat;
      e = embed;
      if (c) {
        for (const std::string& d : behavior.deltas) {
          if (!gate.Run([&] { c->OnDelta(d); })) return;  // cancelled meanwhile
        }
      }
      done = true;
      chat.reset();
      embed.reset();
      const std::string model = parent->deployment_ + "-model";
      if (behavior.error) {
        gate.RunLast([&] {
          if (c) c->OnError(*behavior.error);
          if (e) e->OnError(*behavior.error);
        });
        return;
      }
      gate.RunLast([&] {
        if (c) c->OnDone(behavior.usage, model);
        if (e)
          e->OnDone(std::vector<std::vector<float>>(texts, behavior.vector), behavior.usage, model);
      });
    }
    void Cancel() {
      std::shared_ptr<ChatSink> c;
      std::shared_ptr<EmbedSink> e;
      absl::MutexLock lock(&gate.mu);
      if (!done) {
        done = true;
        if (timer != 0) parent->timers_.Cancel(timer);
        c = std::move(chat);
        e = std::move(embed);
        absl::MutexLock l(&parent->mu_);
        ++parent->cancels_;
      }
      gate.Close();
    }
  };

  class Call : public LlmCall {
   public:
    explicit Call(std::shared_ptr<State> s) : s_(std::move(s)) {}
    ~Call() override { s_->Cancel(); }
    void Cancel() override { s_->Cancel(); }

   private:
    std::shared_ptr<State> s_;
  };

  static void SetSinks(State* state, std::shared_ptr<ChatSink> chat,
                       std::shared_ptr<EmbedSink> embed) {
    absl::MutexLock lock(&state->gate.mu);
    state->chat = std::move(chat);
    state->embed = std::move(embed);
  }

  FakeBehavior Record(const std::string& model, const google::protobuf::Struct& options) {
    absl::MutexLock lock(&mu_);
    starts_.push_back(absl::Now());
    last_model_ = model;
    last_options_ = options;
    return behavior_;
  }

  void Arm(const std::shared_ptr<State>& state) {
    if (state->behavior.hang) return;
    absl::MutexLock lock(&state->gate.mu);
    state->timer = timers_.Schedule(absl::Now() + state->behavior.delay, [state] { state->Run(); });
  }

  const std::string deployment_;
  mutable absl::Mutex mu_;
  FakeBehavior behavior_ ABSL_GUARDED_BY(mu_);
  std::vector<absl::Time> starts_ ABSL_GUARDED_BY(mu_);
  std::string last_model_ ABSL_GUARDED_BY(mu_);
  google::protobuf::Struct last_options_ ABSL_GUARDED_BY(mu_);
  int cancels_ ABSL_GUARDED_BY(mu_) = 0;
  TimerQueue timers_;  // last: stops before the rest goes
};

// Builds a FakeProvider per deployment and keeps a pointer to each (owned by the
// RoutedProvider).
class FakeDeployments {
 public:
  DeploymentFactory Factory() {
    return [this](const aijobs::v1::Deployment& d,
                  RateLimitObserver* observer) -> absl::StatusOr<std::unique_ptr<LlmProvider>> {
      auto p = std::make_unique<FakeProvider>(d.name());
      p->observer = observer;
      fakes_[d.name()] = p.get();
      return std::unique_ptr<LlmProvider>(std::move(p));
    };
  }
  FakeProvider* at(const std::string& name) { return fakes_.at(name); }

 private:
  std::map<std::string, FakeProvider*> fakes_;
};

}  // namespace aijobs::worker::testing
