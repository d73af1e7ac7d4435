#include "workers/routing/openai_factory.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "workers/openai/curl_loop.h"
#include "workers/openai/openai_provider.h"

namespace aijobs::worker {

absl::StatusOr<std::unique_ptr<LlmProvider>> MakeOpenAiDeployment(
    const aijobs::v1::Deployment& deployment, RateLimitObserver* observer) {
  // One event thread drives every HTTP call of the process. Leaked on purpose: providers may
  // be torn down late at exit, and the loop must outlive them all.
  static openai::CurlLoop* const loop = new openai::CurlLoop();
  absl::StatusOr<std::unique_ptr<openai::OpenAiProvider>> provider =
      openai::OpenAiProvider::Create(deployment, loop, observer);
  if (!provider.ok()) return provider.status();
  return std::unique_ptr<LlmProvider>(std::move(*provider));
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
