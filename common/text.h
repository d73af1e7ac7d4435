// Checks for text that ends up in PostgreSQL text columns, protobuf string fields and
// messages for people: well-formed UTF-8, no NUL, cut at character boundaries.
//
//   if (absl::Status s = aijobs::ValidateText(value, "query parameter \"type\""); !s.ok()) ...
//   std::string shown = aijobs::Utf8Prefix(untrusted, 64);
#pragma once

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace aijobs {

// True when `s` is well-formed UTF-8 (no overlong forms, surrogates or code points past
// U+10FFFF), as a PostgreSQL text column in a UTF8 database and a protobuf string require.
bool IsValidUtf8(absl::string_view s);

// OK for valid UTF-8 without NUL; otherwise INVALID_ARGUMENT "<field> must not contain NUL"
// or "<field> must be valid UTF-8".
absl::Status ValidateText(absl::string_view value, absl::string_view field);

// At most `max_bytes` of `s`, never ending inside a multi-byte character.
std::string Utf8Prefix(absl::string_view s, size_t max_bytes);

}  // namespace aijobs
