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
  kInt8,    // weight-only INT8, one scale per output row (kernels/linear_int8.h); CPU backend
};

inline const char* WeightFormatName(WeightFormat f) { return f == WeightFormat::kInt8 ? "int8" : "native"; }

inline absl::StatusOr<WeightFormat> ParseWeightFormat(std::string_view s) {
  if (s == "native") return WeightFormat::kNative;
  if (s == "int8") return WeightFormat::kInt8;
  return absl::InvalidArgumentError(absl::StrCat("--weights must be native or int8, not '", std::string(s), "'"));
}

}  // namespace gla
