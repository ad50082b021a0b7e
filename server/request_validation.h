// GenerateRequest -> GenerationSpec. Every refusal is INVALID_ARGUMENT naming the field.
#pragma once

#include "absl/status/statusor.h"
#include "engine/backend.h"
#include "engine/scheduler.h"
#include "gla/v1/gla.pb.h"

namespace gla {

struct ServerLimits {
  int max_prompt_tokens = 8192;
  int max_new_tokens = 1024;
  int max_logprobs = 20;
  int max_stop_strings = 16;
};

absl::StatusOr<GenerationSpec> ValidateGenerateRequest(const v1::GenerateRequest& request, const Backend& backend,
                                                       const ServerLimits& limits);

// Ids in [0, vocab): INVALID_ARGUMENT naming `field` otherwise.
absl::Status ValidateTokenIds(const google::protobuf::RepeatedField<int32_t>& ids, int vocab, const char* field);

}  // namespace gla
