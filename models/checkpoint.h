// A GLA checkpoint directory in the fla-hub layout: config.json, model.safetensors (or shards
// + index), and optionally tokenizer.model.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "models/config.h"
#include "models/tokenizer.h"
#include "models/weights.h"

namespace gla {

struct Checkpoint {
  GlaConfig config;
  ModelWeights weights;
  std::unique_ptr<Tokenizer> tokenizer;  // null when the directory has no tokenizer.model
};

absl::StatusOr<Checkpoint> LoadCheckpoint(const std::string& dir);

}  // namespace gla
