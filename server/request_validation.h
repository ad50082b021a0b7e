// GenerateCall -> GenerationSpec, for every protocol. Every refusal is INVALID_ARGUMENT naming the
// field as the client's protocol calls it (GenerateCall::names).
#pragma once

#include <cstdint>
#include <span>

#include "absl/status/statusor.h"
#include "engine/backend.h"
#include "engine/scheduler.h"
#include "server/generate_call.h"

namespace gla {

struct ServerLimits {
  int max_prompt_tokens = 8192;
  int max_new_tokens = 1024;
  int max_logprobs = 20;
  int max_stop_strings = 16;
  int max_n = 16;  // generations of one prompt (n)
  int max_logit_bias = 1024;  // logit_bias entries
};

absl::StatusOr<GenerationSpec> ValidateGenerateCall(const GenerateCall& call, const Backend& backend,
                                                    const ServerLimits& limits);

// Ids in [0, vocab): INVALID_ARGUMENT naming `field` otherwise.
absl::Status ValidateTokenIds(std::span<const int32_t> ids, int vocab, const char* field);

}  // namespace gla
