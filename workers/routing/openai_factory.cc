#include "workers/routing/openai_factory.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace aijobs::worker {

absl::StatusOr<std::unique_ptr<LlmProvider>> MakeOpenAiDeployment(
    const aijobs::v1::Deployment& deployment, RateLimitObserver* observer) {
  return absl::UnimplementedError(
      "the openai provider is not built into this worker yet; use provider \"sim\"");
}

DeploymentFactory StandardDeploymentFactory(SimOptions sim_defaults) {
  return
      [sim_defaults](const aijobs::v1::Deployment& deployment,
                     RateLimitObserver* observer) -> absl::StatusOr<std::unique_ptr<LlmProvider>> {
        if (deployment.provider() == "sim") return std::make_unique<SimProvider>(sim_defaults);
        if (deployment.provider() == "openai") return MakeOpenAiDeployment(deployment, observer);
        return absl::InvalidArgumentError(
            absl::StrCat("provider \"", deployment.provider(), "\" is not one of openai, sim"));
      };
}

}  // namespace aijobs::worker
