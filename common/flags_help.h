// --help for the aijobs binaries: lists the flags defined in the binary's own main.cc.
// Abseil's default filter matches flags by the file name of the program, which misses them
// when the build records other paths (ccache's base directory), so --help said "No flags
// matched".
//
//   aijobs::ShowOwnFlagsInHelp("scheduler/main.cc");
//   absl::SetProgramUsageMessage("...");
//   absl::ParseCommandLine(argc, argv);
#pragma once

#include <string>

namespace aijobs {

// --help and --helpshort list the flags of source files whose path ends with `main_file`.
// Call before absl::ParseCommandLine.
void ShowOwnFlagsInHelp(std::string main_file);

}  // namespace aijobs
