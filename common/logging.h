// Process-wide structured logging on spdlog.
//
//   aijobs::InitLogging("aijobs-scheduler");
//   spdlog::info("listening on {}", address);
#pragma once

#include <memory>
#include <string>

#include "spdlog/formatter.h"

namespace aijobs {

// Sets the default spdlog logger: stderr, "[time] [process] [level] message", level from
// $AIJOBS_LOG_LEVEL (trace|debug|info|warn|error; default info), formatted by
// NewLogFormatter().
void InitLogging(const std::string& process_name);

// The formatter of every aijobs log line: "2026-12-03T10:00:00.000Z name[pid] level message".
// Control characters in the message (newline, carriage return, escape, ...) are written
// escaped (\n, \r, \t, \xNN): values from clients and workers (worker ids, job types,
// request ids, provider errors) reach log lines, and one containing a newline must not be
// able to forge a line of its own or an escape sequence drive the operator's terminal.
std::unique_ptr<spdlog::formatter> NewLogFormatter();

}  // namespace aijobs
