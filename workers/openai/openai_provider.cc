#include "workers/openai/openai_provider.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "aijobs/v1/openai.pb.h"
#include "workers/openai/openai_call.h"
#include "workers/openai/openai_json.h"

namespace aijobs::openai {
namespace {

using worker::ChatSink;
using worker::EmbedSink;

HttpRequest BaseRequest(const OpenAiSettings& s, absl::string_view path, absl::Time deadline,
                        bool stream) {
  HttpRequest r;
  r.url = absl::StrCat(s.base_url, path);
  r.method = "POST";
  r.headers.push_back("Content-Type: application/json");
  r.headers.push_back(stream ? "Accept: text/event-stream" : "Accept: application/json");
  r.headers.push_back("User-Agent: aijobs-worker");
  if (!s.api_key.empty()) r.headers.push_back(absl::StrCat("Authorization: Bearer ", s.api_key));
  for (const std::string& h : s.headers) r.headers.push_back(h);
  r.connect_timeout = s.connect_timeout;
  r.first_byte_timeout = s.first_byte_timeout;
  r.idle_timeout = s.idle_timeout;
  r.deadline = std::min(deadline, absl::Now() + s.total_timeout);
  return r;
}

}  // namespace

absl::StatusOr<std::unique_ptr<OpenAiProvider>> OpenAiProvider::Create(
    const aijobs::v1::Deployment& config, CurlLoop* loop, worker::RateLimitObserver* observer) {
  absl::StatusOr<OpenAiSettings> settings = ResolveSettings(config);
  if (!settings.ok()) return settings.status();
  return std::make_unique<OpenAiProvider>(*std::move(settings), loop, observer);
}

OpenAiProvider::OpenAiProvider(OpenAiSettings settings, CurlLoop* loop,
                               worker::RateLimitObserver* observer)
    : settings_(std::make_shared<const OpenAiSettings>(std::move(settings))),
      loop_(loop),
      observer_(observer) {}

std::unique_ptr<worker::LlmCall> OpenAiProvider::StartChat(const worker::ChatRequest& request,
                                                           std::shared_ptr<ChatSink> sink) {
  ChatCompletionRequest body;
  body.set_model(settings_->model.empty() ? request.model : settings_->model);
  for (const worker::ChatMessage& m : request.messages) {
    ChatMessage* out = body.add_messages();
    out->set_role(m.role);
    out->set_content(m.content);
  }
  body.set_stream(true);
  body.mutable_stream_options()->set_include_usage(true);
  if (request.max_tokens > 0) body.set_max_tokens(request.max_tokens);
  if (request.temperature.has_value()) body.set_temperature(*request.temperature);
  HttpRequest http = BaseRequest(*settings_, "/chat/completions", request.deadline, true);
  (void)google::protobuf::util::MessageToJsonString(body, &http.body, OpenAiJsonPrintOptions());
  return StartOpenAiChat(settings_, loop_, observer_, std::move(http), std::move(sink));
}

std::unique_ptr<worker::LlmCall> OpenAiProvider::StartEmbed(const worker::EmbedRequest& request,
                                                            std::shared_ptr<EmbedSink> sink) {
  EmbeddingRequest body;
  body.set_model(settings_->model.empty() ? request.model : settings_->model);
  for (const std::string& t : request.texts) body.add_input(t);
  HttpRequest http = BaseRequest(*settings_, "/embeddings", request.deadline, false);
  (void)google::protobuf::util::MessageToJsonString(body, &http.body, OpenAiJsonPrintOptions());
  return StartOpenAiEmbed(settings_, loop_, observer_, std::move(http), request.texts.size(),
                          std::move(sink));
}

}  // namespace aijobs::openai
