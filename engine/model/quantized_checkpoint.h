// Writes a checkpoint quantized in the layout other tools write (compressed-tensors, what
// llm-compressor makes and vLLM serves; models/quantization_config.h): every Linear weight but
// lm_head as I8 (`int-quantized`) or F8_E4M3 (`float-quantized`) [N, K] with an F32 `weight_scale`
// [N, 1], symmetric with one scale per output row (INT8: kernels/linear_int8.h's
// QuantizeInt8PerRow, so serving it gives the same bits as `--weights int8` on the source; FP8:
// max |row| / 448, rounded to nearest even), everything else as the source has it, config.json
// with its quantization_config, and the tokenizer copied. `gla-eval quantize` runs it.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "models/config.h"

namespace gla {

// `out_dir` is created (its parent must exist); INVALID_ARGUMENT when it exists already, when the
// source is itself quantized, or when a weight is not finite (naming it).
absl::Status WriteQuantizedCheckpoint(const std::string& model_dir, const std::string& out_dir,
                                      CheckpointQuantization::Kind kind = CheckpointQuantization::Kind::kInt8);

}  // namespace gla
