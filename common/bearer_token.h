// The bearer credential (a JWT or an API key) a client process presents to the scheduler,
// from its flag or, when the flag is empty, from an environment variable (so it stays out of
// `ps` and shell history).
//
//   options.bearer_token = aijobs::BearerTokenFrom(absl::GetFlag(FLAGS_token), "AIJOBS_TOKEN");
#pragma once

#include <string>

namespace aijobs {

// `flag_value`, or else the value of environment variable `env` ("" if neither), trimmed.
std::string BearerTokenFrom(const std::string& flag_value, const char* env);

}  // namespace aijobs
