// Which form a row kernel (an RMSNorm, the gated head norm, an FP8 row quantizer; kernels/norm.h,
// kernels/linear_fp8.h) runs in. Both forms give the same bits: the warp form sums a row's squares
// in the block form's order (kernels/cuda/warp_rows.cuh says how), and everything else they do is
// per value or a maximum. Framework-free, no CUDA header.
#pragma once

#include <cstdint>

namespace gla::cuda {

enum class RowForm {
  kAuto,         // by row count: the warp form from kRowsPerWarpFrom rows
  kBlockPerRow,  // a block of 128 or 256 threads a row: few rows (decode) spread over the SMs
  kWarpPerRow,   // a warp a row, no block-wide barriers: many rows (prefill) keep more rows in flight
};

// Where the warp form starts to pay: with fewer rows it leaves SMs idle (a block holds 4 rows) and
// each row's values pass through one warp's 32 lanes instead of 256 threads.
constexpr int64_t kRowsPerWarpFrom = 1024;

constexpr bool UseWarpPerRow(RowForm form, int64_t rows) {
  return form == RowForm::kWarpPerRow || (form == RowForm::kAuto && rows >= kRowsPerWarpFrom);
}

}  // namespace gla::cuda
