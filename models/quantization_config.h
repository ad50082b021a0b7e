// A checkpoint quantized elsewhere (issue 23): config.json's `quantization_config` as
// compressed-tensors writes it (llm-compressor, vLLM's INT8 checkpoints):
//   "quantization_config": {"quant_method": "compressed-tensors", "format": "int-quantized",
//     "config_groups": {"group_0": {"targets": ["Linear"], "weights": {"num_bits": 8, "type": "int",
//       "symmetric": true, "strategy": "channel", ...}, "input_activations": null}},
//     "ignore": ["lm_head"], ...}
// (or "float-quantized" with weights of "type": "float": FP8 E4M3) and each quantized Linear
// layer's tensors `<name>.weight` (I8 or F8_E4M3 [N, K]), `<name>.weight_scale`
// ([N, 1] for the channel strategy, one value for tensor) and, optionally, an all-zero
// `<name>.weight_zero_point`. Which layers are quantized is read from the tensors themselves (an
// I8 or F8_E4M3 weight with its scale), so `targets` and `ignore` need no interpreting. What we
// cannot run as it was meant (other methods, other bit widths, groups, asymmetric, static
// activation scales) is refused by name. Internal to models/ (config.cc parses it into
// GlaConfig::quantization; the struct lives in config.h, free of nlohmann).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "models/config.h"
#include "nlohmann/json.hpp"

namespace gla {

// `q` is the quantization_config value; errors name `source` and the field's path.
absl::StatusOr<CheckpointQuantization> ParseQuantizationConfig(const nlohmann::json& q, const std::string& source);

}  // namespace gla
