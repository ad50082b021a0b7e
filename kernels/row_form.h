// Which form a row kernel (an RMSNorm, the gated head norm, an FP8 row quantizer; kernels/norm.h,
// kernels/linear_fp8.h) runs in. Both forms give the same bits: the warp form sums a row's squares
// in the block form's order (kernels/cuda/warp_rows.cuh says how), and everything else they do is
// per value or a maximum. Which steps take which form is the engine's choice
// (ProjectionPaths::warp_rows_from). Framework-free, no CUDA header.
#pragma once

namespace gla::cuda {

enum class RowForm {
  kBlockPerRow,  // a block of 128 or 256 threads a row: few rows (decode) spread over the SMs
  kWarpPerRow,   // a warp a row, no block-wide barriers: many rows (prefill) keep more rows in flight
};

}  // namespace gla::cuda
