#include "workers/embed_handler.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/builtin_inputs.h"

namespace aijobs::worker {
namespace {

using google::protobuf::Struct;
using google::protobuf::Value;

class EmbedResultSink : public EmbedSink {
 public:
  explicit EmbedResultSink(std::shared_ptr<JobContext> context) : context_(std::move(context)) {}

  void OnDone(std::vector<std::vector<float>> vectors, const Usage& usage,
              const std::string& model) override {
    Struct result;
    auto& f = *result.mutable_fields();
    auto* list = f["vectors"].mutable_list_value();
    for (const std::vector<float>& v : vectors) {
      auto* row = list->add_values()->mutable_list_value();
      for (float x : v) row->add_values()->set_number_value(x);
    }
    f["model"].set_string_value(model);
    auto& u = *f["usage"].mutable_struct_value()->mutable_fields();
    u["prompt_tokens"].set_number_value(usage.prompt_tokens);
    context_->Succeed(std::move(result));
  }

  void OnError(const ProviderError& error) override {
    context_->Fail(error.code, error.message, error.retryable, error.retry_after);
  }

 private:
  const std::shared_ptr<JobContext> context_;
};

}  // namespace

absl::StatusOr<EmbedRequest> ParseEmbedInput(const Struct& input,
                                             const std::string& provider_name) {
  // The schema the scheduler checked the submit with (common/builtin_inputs.h).
  absl::StatusOr<BuiltinEmbedInput> parsed = ParseBuiltinEmbedInput(input);
  if (!parsed.ok()) return parsed.status();
  EmbedRequest request;
  request.texts = std::move(parsed->texts);
  request.model = std::move(parsed->model);
  if (absl::Status s = ParseProviderOptions(input, provider_name, &request.provider_options);
      !s.ok()) {
    return s;
  }
  return request;
}

void EmbedHandler::Start() {
  absl::StatusOr<EmbedRequest> request = ParseEmbedInput(context()->input(), provider()->name());
  if (!PrepareRequest(&request)) return;
  Begin(provider()->StartEmbed(*request, std::make_shared<EmbedResultSink>(context())));
}

}  // namespace aijobs::worker
