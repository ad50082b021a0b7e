// Writes a checkpoint quantized to INT8 in the layout other tools write (compressed-tensors
// `int-quantized`, what llm-compressor makes and vLLM serves; models/quantization_config.h): every
// Linear weight but lm_head as I8 [N, K] with an F32 `weight_scale` [N, 1] (symmetric, one scale
// per output row: kernels/linear_int8.h's QuantizeInt8PerRow, so serving it gives the same bits
// as `--weights int8` on the source), everything else F32, config.json with its
// quantization_config, and the tokenizer copied. `gla-eval quantize` runs it.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace gla {

// `out_dir` is created (its parent must exist); INVALID_ARGUMENT when it exists already, when the
// source is itself quantized, or when a weight is not finite (naming it).
absl::Status WriteInt8Checkpoint(const std::string& model_dir, const std::string& out_dir);

}  // namespace gla
