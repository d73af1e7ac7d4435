// The LlmProvider the job handlers call when the worker has a providers file: it maps the
// job's model (input.model, or the default model group) to the group's deployments and picks
// one per call — by priority, and by weighted random choice among equal priorities — while
// skipping deployments whose circuit breaker is open and keeping each deployment under its
// requests/min and tokens/min limits. A retryable failure or an open breaker falls back to the
// next member, but only before any output was delivered: two deployments' text never mix.
//
//   absl::StatusOr<std::unique_ptr<RoutedProvider>> routed =
//       RoutedProvider::Create(config, StandardDeploymentFactory(sim_options));
//   RegisterBuiltinHandlers(&registry, routed->get());
//
// Rate limits: a call goes to the first member (in the order above) whose breaker admits it
// and whose buckets have room now; a member that is merely rate-limited is passed over for one
// that can go at once (spill-over: a configured deployment sitting idle while a job waits
// helps nobody). Only when no member can go now does the call wait, without a thread, on a
// timer: it reserves its tokens on the member that frees up first (so waiting calls are served
// in arrival order and the rate holds exactly), bounded by the request deadline; a wait past
// the deadline fails at once, retryable, code "RATE_LIMITED", with the wait as retry_after.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "aijobs/v1/providers.pb.h"
#include "workers/llm_provider.h"
#include "workers/routing/circuit_breaker.h"
#include "workers/routing/member_order.h"
#include "workers/routing/token_bucket.h"
#include "workers/timer_queue.h"

namespace aijobs::worker {

class RoutedDeployment;

// Creates the provider behind one deployment. `observer` (owned by the RoutedProvider, valid
// for the provider's lifetime) is to be told every response's x-ratelimit-* headers.
using DeploymentFactory = std::function<absl::StatusOr<std::unique_ptr<LlmProvider>>(
    const aijobs::v1::Deployment&, RateLimitObserver*)>;

struct RoutedProviderOptions {
  // name(): the key of the per-job provider options in the job input (input.<name>). They
  // are passed on only to deployments whose provider is `name` (input.sim reaches sim
  // deployments; an OpenAI deployment never sees sim fault-injection knobs).
  std::string name = "sim";
  // Seed of the weighted member choice; 0 = random.
  uint64_t seed = 0;
  // Clock of the breakers and token buckets (tests inject one).
  Clock clock = RealClock();
  // Bucket capacity = rate x rate_burst: how many requests (tokens) may go at once after an
  // idle spell. Default: one minute's worth, the provider's own per-minute window. A
  // deployment's rate_limit.burst, when set, replaces it for that deployment.
  absl::Duration rate_burst = absl::Minutes(1);
  // The completion length assumed for the tokens/min estimate when a request sets no
  // max_tokens; the estimate is corrected with the reported usage when the call ends.
  int default_max_tokens = 256;
};

class RoutedProvider : public LlmProvider {
 public:
  // Builds one provider per deployment through `factory`. `config` is validated and completed
  // with the defaults here (ValidateProvidersConfig / ApplyProviderDefaults).
  // INVALID_ARGUMENT for a bad config; a factory error is returned prefixed with the
  // deployment's path, e.g. `deployments[1] ("cloud"): ...`.
  static absl::StatusOr<std::unique_ptr<RoutedProvider>> Create(aijobs::v1::ProvidersConfig config,
                                                                const DeploymentFactory& factory,
                                                                RoutedProviderOptions options = {});

  // Every LlmCall it returned must be destroyed first.
  ~RoutedProvider() override;
  RoutedProvider(const RoutedProvider&) = delete;
  RoutedProvider& operator=(const RoutedProvider&) = delete;

  std::string name() const override { return options_.name; }

  // Routes request.model (empty: the default group). An unknown model fails with
  // INVALID_INPUT (not retryable), listing the known models. On success the reported model is
  // the name of the deployment that served the call. When every member failed: the last
  // error, retryable, with the smallest retry_after hint; when every member's breaker is open:
  // PROVIDER_UNAVAILABLE, retryable, retry_after = time until the first one half-opens.
  std::unique_ptr<LlmCall> StartChat(const ChatRequest& request,
                                     std::shared_ptr<ChatSink> sink) override;
  std::unique_ptr<LlmCall> StartEmbed(const EmbedRequest& request,
                                      std::shared_ptr<EmbedSink> sink) override;

  // The model names jobs may ask for (the model group names), in config order.
  std::vector<std::string> models() const;
  // The breaker / buckets of a deployment (nullptr: unknown deployment or no limit).
  CircuitBreaker* breaker(const std::string& deployment) const;
  TokenBucket* request_bucket(const std::string& deployment) const;
  TokenBucket* token_bucket(const std::string& deployment) const;

 private:
  struct Group {
    std::vector<RoutedDeployment*> deployments;
    std::vector<MemberWeight> weights;  // same order
  };

  RoutedProvider(aijobs::v1::ProvidersConfig config, RoutedProviderOptions options);
  // The group's members in the order to try them for one call (false: unknown model).
  bool OrderFor(const std::string& model, std::vector<RoutedDeployment*>* order);

  const aijobs::v1::ProvidersConfig config_;
  const RoutedProviderOptions options_;
  std::vector<std::unique_ptr<RoutedDeployment>> deployments_;
  absl::flat_hash_map<std::string, RoutedDeployment*> deployment_by_name_;
  absl::flat_hash_map<std::string, Group> groups_;
  absl::Mutex rng_mu_;
  std::mt19937_64 rng_ ABSL_GUARDED_BY(rng_mu_);  // draws each call's OrderMembers seed
  // Last member: its thread (waits, fallbacks, routing errors) stops first.
  TimerQueue timers_;
};

}  // namespace aijobs::worker
