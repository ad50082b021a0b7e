// Writes random-initialised GLA checkpoints in the fla-hub layout (config.json + safetensors):
// for tests of options the reference checkpoint does not use (short conv, GQA, tied embeddings,
// clamp_min, bf16, shards) and for benchmarks of real model shapes.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "models/dtype.h"

namespace gla::testing {

struct RandomModelSpec {
  std::string config_json;  // written verbatim as config.json
  DType dtype = DType::kF32;
  unsigned seed = 1;
  int shards = 1;           // > 1 writes model-0000k-of-0000n.safetensors + index
};

absl::Status WriteRandomModel(const std::string& dir, const RandomModelSpec& spec);

// config.json text of the published shapes: "340M" (gla-340M), "1.3B" (gla-1.3B).
std::string PresetConfigJson(const std::string& preset);

}  // namespace gla::testing
