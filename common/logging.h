// Process-wide structured logging on spdlog.
//
//   aijobs::InitLogging("aijobs-scheduler");
//   spdlog::info("listening on {}", address);
#pragma once

#include <string>

namespace aijobs {

// Sets the default spdlog logger: stderr, "[time] [process] [level] message", level from
// $AIJOBS_LOG_LEVEL (trace|debug|info|warn|error; default info).
void InitLogging(const std::string& process_name);

}  // namespace aijobs
