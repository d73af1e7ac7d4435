// What the job handlers that run one LlmCall share: the start/cancel race around the call
// (Cancel() may come before, during or after Start() hands the call over) and the input
// fields every provider request has (model, input.<provider> options).
//
//   void EmbedHandler::Start() {  // EmbedHandler : public ProviderCallHandler
//     absl::StatusOr<EmbedRequest> r = ParseEmbedInput(context()->input(), provider()->name());
//     if (PrepareRequest(&r)) Begin(provider()->StartEmbed(*r, sink)); }
#pragma once

#include <google/protobuf/struct.pb.h>

#include <memory>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "workers/job_handler.h"
#include "workers/llm_provider.h"

namespace aijobs::worker {

// Reads the optional input.model: absent or null leaves *model unchanged. INVALID_ARGUMENT
// when it is not a string.
absl::Status ParseModelField(const google::protobuf::Struct& input, std::string* model);

// Reads the optional input.<provider_name> object into *options: absent leaves it unchanged.
// INVALID_ARGUMENT when it is not an object.
absl::Status ParseProviderOptions(const google::protobuf::Struct& input,
                                  const std::string& provider_name,
                                  google::protobuf::Struct* options);

// A JobHandler whose work is one LlmCall. A subclass's Start() builds the request, passes it
// through PrepareRequest() and hands the started call to Begin(); Cancel() is done here.
class ProviderCallHandler : public JobHandler {
 public:
  // Cancels the call handed to Begin(), or, when Begin() has not run yet, makes Begin()
  // cancel its call at once.
  void Cancel() override;

 protected:
  // `provider` must outlive the handler.
  ProviderCallHandler(std::shared_ptr<JobContext> context, LlmProvider* provider)
      : context_(std::move(context)), provider_(provider) {}

  const std::shared_ptr<JobContext>& context() const { return context_; }
  LlmProvider* provider() const { return provider_; }

  // Fails the attempt as INVALID_INPUT (not retryable) with the parse error when *request
  // holds one; otherwise stamps the request with the attempt number and deadline. Returns
  // whether the request can be sent.
  template <typename Request>
  bool PrepareRequest(absl::StatusOr<Request>* request) {
    if (!request->ok()) {
      context_->Fail("INVALID_INPUT", std::string(request->status().message()), false);
      return false;
    }
    (*request)->attempt = context_->attempt();
    (*request)->deadline = context_->deadline();
    return true;
  }

  // Keeps `call` so Cancel() can abort it; cancels it at once if Cancel() came first.
  void Begin(std::unique_ptr<LlmCall> call);

 private:
  const std::shared_ptr<JobContext> context_;
  LlmProvider* const provider_;
  absl::Mutex mu_;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  std::unique_ptr<LlmCall> call_ ABSL_GUARDED_BY(mu_);
};

}  // namespace aijobs::worker
