#include "common/flags_help.h"

#include <utility>

#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"

namespace aijobs {

void ShowOwnFlagsInHelp(std::string main_file) {
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [main_file = std::move(main_file)](absl::string_view path) {
    return absl::EndsWith(path, main_file);
  };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  absl::SetFlagsUsageConfig(usage);
}

}  // namespace aijobs
