#include "workers/builtin_handlers.h"

#include <memory>
#include <utility>

#include "workers/chat_handler.h"
#include "workers/embed_handler.h"

namespace aijobs::worker {

void RegisterBuiltinHandlers(HandlerRegistry* registry, LlmProvider* provider) {
  // Registration only fails for a duplicate type, impossible on a fresh registry.
  (void)registry->Register("chat", [provider](std::shared_ptr<JobContext> ctx) {
    return std::make_shared<ChatHandler>(std::move(ctx), provider);
  });
  (void)registry->Register("embed", [provider](std::shared_ptr<JobContext> ctx) {
    return std::make_shared<EmbedHandler>(std::move(ctx), provider);
  });
}

}  // namespace aijobs::worker
