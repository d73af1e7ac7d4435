#include "workers/routing/routed_provider.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "workers/routing/providers_config.h"
#include "workers/routing/routed_call.h"
#include "workers/routing/routed_deployment.h"

namespace aijobs::worker {
namespace {

ProviderError UnknownModel(const std::string& model, const std::vector<std::string>& known) {
  ProviderError e;
  e.code = "INVALID_INPUT";
  e.message =
      absl::StrCat("unknown model \"", model, "\" (known: ", absl::StrJoin(known, ", "), ")");
  e.retryable = false;
  return e;
}

}  // namespace

RoutedProvider::RoutedProvider(aijobs::v1::ProvidersConfig config, RoutedProviderOptions options)
    : config_(std::move(config)),
      options_(std::move(options)),
      rng_(options_.seed != 0 ? options_.seed : std::random_device{}()) {}

RoutedProvider::~RoutedProvider() = default;

absl::StatusOr<std::unique_ptr<RoutedProvider>> RoutedProvider::Create(
    aijobs::v1::ProvidersConfig config, const DeploymentFactory& factory,
    RoutedProviderOptions options) {
  if (absl::Status s = ValidateProvidersConfig(config); !s.ok()) return s;
  ApplyProviderDefaults(&config);
  std::unique_ptr<RoutedProvider> p(new RoutedProvider(std::move(config), std::move(options)));
  for (int i = 0; i < p->config_.deployments_size(); ++i) {
    const aijobs::v1::Deployment& dc = p->config_.deployments(i);
    auto d = std::make_unique<RoutedDeployment>(dc, p->options_);
    absl::StatusOr<std::unique_ptr<LlmProvider>> provider = factory(dc, d.get());
    if (!provider.ok() || *provider == nullptr) {
      absl::Status s = provider.ok() ? absl::InternalError("the factory returned no provider")
                                     : provider.status();
      return absl::Status(s.code(),
                          absl::StrCat("deployments[", i, "] (\"", dc.name(), "\", provider ",
                                       dc.provider(), "): ", s.message()));
    }
    d->provider = std::move(*provider);
    p->deployment_by_name_[dc.name()] = d.get();
    p->deployments_.push_back(std::move(d));
  }
  for (const auto& g : p->config_.model_groups()) {
    Group& group = p->groups_[g.name()];
    for (const auto& m : g.members()) {
      group.deployments.push_back(p->deployment_by_name_.at(m.deployment()));
      group.weights.push_back(MemberWeight{std::max<uint32_t>(1, m.weight()), m.priority()});
    }
  }
  return p;
}

bool RoutedProvider::OrderFor(const std::string& model, std::vector<RoutedDeployment*>* order) {
  auto it = groups_.find(model.empty() ? config_.default_model_group() : model);
  if (it == groups_.end()) return false;
  const Group& group = it->second;
  uint64_t seed;
  {
    absl::MutexLock lock(&rng_mu_);
    seed = rng_();
  }
  for (size_t i : OrderMembers(group.weights, seed)) order->push_back(group.deployments[i]);
  return true;
}

std::unique_ptr<LlmCall> RoutedProvider::StartChat(const ChatRequest& request,
                                                   std::shared_ptr<ChatSink> sink) {
  std::vector<RoutedDeployment*> order;
  bool known = OrderFor(request.model, &order);
  auto call = std::make_shared<RoutedCall>(&timers_, options_.name, options_.default_max_tokens,
                                           std::move(order));
  if (!known) {
    call->FailSoon(UnknownModel(request.model, models()), std::move(sink), nullptr);
  } else {
    call->StartChat(request, std::move(sink));
  }
  return std::make_unique<RoutedCallHandle>(std::move(call));
}

std::unique_ptr<LlmCall> RoutedProvider::StartEmbed(const EmbedRequest& request,
                                                    std::shared_ptr<EmbedSink> sink) {
  std::vector<RoutedDeployment*> order;
  bool known = OrderFor(request.model, &order);
  auto call = std::make_shared<RoutedCall>(&timers_, options_.name, options_.default_max_tokens,
                                           std::move(order));
  if (!known) {
    call->FailSoon(UnknownModel(request.model, models()), nullptr, std::move(sink));
  } else {
    call->StartEmbed(request, std::move(sink));
  }
  return std::make_unique<RoutedCallHandle>(std::move(call));
}

std::vector<std::string> RoutedProvider::models() const {
  std::vector<std::string> names;
  for (const auto& g : config_.model_groups()) names.push_back(g.name());
  return names;
}

CircuitBreaker* RoutedProvider::breaker(const std::string& deployment) const {
  auto it = deployment_by_name_.find(deployment);
  return it == deployment_by_name_.end() ? nullptr : &it->second->breaker;
}

TokenBucket* RoutedProvider::request_bucket(const std::string& deployment) const {
  auto it = deployment_by_name_.find(deployment);
  return it == deployment_by_name_.end() ? nullptr : it->second->requests.get();
}

TokenBucket* RoutedProvider::token_bucket(const std::string& deployment) const {
  auto it = deployment_by_name_.find(deployment);
  return it == deployment_by_name_.end() ? nullptr : it->second->tokens.get();
}

}  // namespace aijobs::worker
