#include "workers/job_handler.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace aijobs::worker {

absl::Status HandlerRegistry::Register(const std::string& type, HandlerFactory factory) {
  if (type.empty()) return absl::InvalidArgumentError("job type must not be empty");
  if (!factories_.emplace(type, std::move(factory)).second) {
    return absl::AlreadyExistsError(
        absl::StrCat("a handler for job type '", type, "' is already registered"));
  }
  return absl::OkStatus();
}

std::shared_ptr<JobHandler> HandlerRegistry::Create(const std::string& type,
                                                    std::shared_ptr<JobContext> context) const {
  auto it = factories_.find(type);
  if (it == factories_.end()) return nullptr;
  return it->second(std::move(context));
}

std::vector<std::string> HandlerRegistry::Types() const {
  std::vector<std::string> types;
  for (const auto& [type, factory] : factories_) types.push_back(type);
  return types;
}

}  // namespace aijobs::worker
