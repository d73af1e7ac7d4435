// The `embed` job type: input {model?, texts: [string, ...], <provider>?: {...}} -> result
// {vectors: [[float, ...], ...], model} with one vector per text, in order.
//
//   registry.Register("embed", [&provider](std::shared_ptr<JobContext> ctx) {
//     return std::make_shared<EmbedHandler>(std::move(ctx), &provider); });
//   absl::StatusOr<EmbedRequest> r = ParseEmbedInput(input, "sim");  // validation alone
#pragma once

#include <google/protobuf/struct.pb.h>

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "workers/job_handler.h"
#include "workers/llm_provider.h"

namespace aijobs::worker {

// Builds an EmbedRequest from an embed job's input. INVALID_ARGUMENT says what is wrong.
absl::StatusOr<EmbedRequest> ParseEmbedInput(const google::protobuf::Struct& input,
                                             const std::string& provider_name);

class EmbedHandler : public JobHandler {
 public:
  // `provider` must outlive the handler.
  EmbedHandler(std::shared_ptr<JobContext> context, LlmProvider* provider);

  void Start() override;
  void Cancel() override;

 private:
  const std::shared_ptr<JobContext> context_;
  LlmProvider* const provider_;
  absl::Mutex mu_;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  std::unique_ptr<LlmCall> call_ ABSL_GUARDED_BY(mu_);
};

}  // namespace aijobs::worker
