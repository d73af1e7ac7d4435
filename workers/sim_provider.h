// The built-in `sim` LLM provider: deterministic text from the prompt, configurable latency,
// token rate and faults. One shared timer thread drives every call (no thread per call), so
// it stands in for a real provider in tests and benchmarks at thousands of calls per second.
//
//   SimProvider sim(SimOptions{.ttft = absl::Milliseconds(150), .tokens_per_s = 60});
//   auto call = sim.StartChat(request, sink);  // sink gets "word", " word", ... then OnDone
//   // per-job overrides: request.provider_options = input.sim (see ApplySimOverrides)
#pragma once

#include <google/protobuf/struct.pb.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/random/random.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "workers/llm_provider.h"
#include "workers/timer_queue.h"

namespace aijobs::worker {

struct SimOptions {
  absl::Duration ttft = absl::Milliseconds(150);  // Time to first token (embed: to result).
  double tokens_per_s = 60;                       // 0: every token at once, right after ttft.
  int tokens = 40;            // Output length in tokens (capped by ChatRequest::max_tokens).
  double error_rate = 0;      // Probability in [0, 1] that an attempt fails.
  bool retryable = true;      // Whether injected failures are retryable.
  int fail_attempts = 0;      // N > 0: attempts 1..N fail, later ones succeed (overrides rate).
  int fail_after_tokens = 0;  // A failing attempt emits this many tokens first.
  absl::Duration retry_after = absl::ZeroDuration();  // Retry-after hint sent with failures.
  int dims = 8;                                       // Embedding vector size.
};

// Returns `defaults` with the options present in `overrides` (a job's input.sim, keys
// ttft_ms, tokens_per_s, tokens, error_rate, retryable, fail_attempts, fail_after_tokens,
// retry_after_ms, dims) replaced. INVALID_ARGUMENT names the bad key and what it expects.
absl::StatusOr<SimOptions> ApplySimOverrides(const SimOptions& defaults,
                                             const google::protobuf::Struct& overrides);

// Returns the seed of the word generator for a prompt: a hash of every role and content.
uint64_t SimPromptSeed(const std::vector<ChatMessage>& messages);

// Returns the first `count` tokens the sim emits for `seed`: "word", " word", " word"...
std::vector<std::string> SimTokens(uint64_t seed, int count);

// Returns the sim's embedding of `text`: `dims` floats of unit Euclidean length.
std::vector<float> SimEmbedding(const std::string& text, int dims);

class SimProvider : public LlmProvider {
 public:
  explicit SimProvider(SimOptions defaults);
  // Every LlmCall it returned must be destroyed first.
  ~SimProvider() override;

  std::string name() const override { return "sim"; }
  std::unique_ptr<LlmCall> StartChat(const ChatRequest& request,
                                     std::shared_ptr<ChatSink> sink) override;
  std::unique_ptr<LlmCall> StartEmbed(const EmbedRequest& request,
                                      std::shared_ptr<EmbedSink> sink) override;

  const SimOptions& defaults() const { return defaults_; }

 private:
  // Decides whether this attempt fails: fail_attempts first, else a draw against error_rate.
  bool ShouldFail(const SimOptions& options, int attempt);

  const SimOptions defaults_;
  absl::Mutex rng_mu_;
  absl::BitGen rng_ ABSL_GUARDED_BY(rng_mu_);
  // Last member: its thread stops (and drops pending steps) before the rest is destroyed.
  TimerQueue timers_;
};

}  // namespace aijobs::worker
