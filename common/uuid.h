// Random (version 4) UUIDs in their canonical text form.
//
//   std::string id = aijobs::NewUuid();          // "0b6c5c3e-1f0a-4c1e-9d5e-6a4f3b2c1d0e"
//   if (!aijobs::IsUuid(id)) { ... }
#pragma once

#include <string>
#include <string_view>

namespace aijobs {

// Returns a new random version-4 UUID, lower-case, 36 characters.
std::string NewUuid();

// Returns true when `text` is a UUID in canonical 8-4-4-4-12 hex form (any case).
bool IsUuid(std::string_view text);

}  // namespace aijobs
