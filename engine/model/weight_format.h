// How a backend keeps the projections' weights (issue 23, `--weights`): as the checkpoint gives
// them (fp32 compute on the CPU, bf16 on the GPU), or quantized at load.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace gla {

enum class WeightFormat {
  kNative,  // the checkpoint's values: fp32 on the CPU backend, bf16 on the CUDA backend
  kInt8,    // weight-only INT8, one scale per output row (kernels/linear_int8.h); both backends
  // FP8 E4M3, one scale per output row (models/dtype.h's QuantizeFp8E4M3PerRow, what an FP8
  // checkpoint holds). The CPU backend computes in fp32 on those values (it has no FP8 arithmetic:
  // the accuracy, not the speed, of FP8 weights); the CUDA backend keeps FP8 rows on the GPU
  // (CudaModelOptions::weights).
  kFp8,
};

inline const char* WeightFormatName(WeightFormat f) {
  return f == WeightFormat::kInt8 ? "int8" : f == WeightFormat::kFp8 ? "fp8" : "native";
}

inline absl::StatusOr<WeightFormat> ParseWeightFormat(std::string_view s) {
  if (s == "native") return WeightFormat::kNative;
  if (s == "int8") return WeightFormat::kInt8;
  if (s == "fp8") return WeightFormat::kFp8;
  return absl::InvalidArgumentError(
      absl::StrCat("--weights must be native, int8 or fp8, not '", std::string(s), "'"));
}

}  // namespace gla
