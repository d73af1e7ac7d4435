// The seam between model-group routing and the OpenAI-compatible HTTP provider
// (workers/openai/): how a RoutedProvider gets the provider of an "openai" deployment, and the
// standard factory the worker binary uses for every deployment ("sim" -> SimProvider).
//
//   absl::StatusOr<std::unique_ptr<RoutedProvider>> routed =
//       RoutedProvider::Create(config, StandardDeploymentFactory(sim_options));
//   // "openai" deployments are built by MakeOpenAiDeployment(deployment, observer).
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "aijobs/v1/providers.pb.h"
#include "workers/llm_provider.h"
#include "workers/routing/routed_provider.h"
#include "workers/sim_provider.h"

namespace aijobs::worker {

// Creates the OpenAI-compatible provider of one "openai" deployment, reporting response
// rate-limit headers to `observer`. Every such provider shares the process's one CurlLoop.
// INVALID_ARGUMENT naming the field for a bad deployment (e.g. an unset api_key_env).
absl::StatusOr<std::unique_ptr<LlmProvider>> MakeOpenAiDeployment(
    const aijobs::v1::Deployment& deployment, RateLimitObserver* observer);

// "sim" deployments get their own SimProvider with `sim_defaults` (jobs still override them
// through input.sim); "openai" deployments go to MakeOpenAiDeployment.
DeploymentFactory StandardDeploymentFactory(SimOptions sim_defaults);

}  // namespace aijobs::worker
