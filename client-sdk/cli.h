// aijobsctl: the command-line tool over aijobs::Client. All logic lives here so tests can
// run it in-process; main.cc only forwards argv and the standard streams.
//
//   std::ostringstream out, err;
//   std::istringstream in;
//   int rc = aijobs::ctl::RunCli(argc, argv, out, err, in);
#pragma once

#include <istream>
#include <ostream>

namespace aijobs::ctl {

// Exit codes of RunCli.
inline constexpr int kExitOk = 0;
// An RPC failed, or a waited-for job ended other than SUCCEEDED.
inline constexpr int kExitFailure = 1;
// The command line or the input (e.g. invalid JSON) was wrong; no RPC was sent.
inline constexpr int kExitUsage = 2;

// Runs `aijobsctl [--server HOST:PORT] [--timeout DURATION] <subcommand> ...` with argv[0]
// being the program name. Writes results to out, errors and progress markers to err, and
// reads `--input -` from in. Returns the process exit code.
int RunCli(int argc, const char* const* argv, std::ostream& out, std::ostream& err,
           std::istream& in);

}  // namespace aijobs::ctl
