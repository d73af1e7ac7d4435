// Registers the job types this worker binary ships with. Adding a job type = one handler
// class + one line in RegisterBuiltinHandlers.
//
//   HandlerRegistry registry;
//   SimProvider sim(options);
//   RegisterBuiltinHandlers(&registry, &sim);  // "chat", "embed"
#pragma once

#include "workers/job_handler.h"
#include "workers/llm_provider.h"

namespace aijobs::worker {

// Registers "chat" and "embed" on `registry`, both calling `provider` (which must outlive
// every handler the registry creates).
void RegisterBuiltinHandlers(HandlerRegistry* registry, LlmProvider* provider);

}  // namespace aijobs::worker
