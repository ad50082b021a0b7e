// Block-wide sum in a fixed order (warp shuffles, then the first warp over the warp sums), so a
// kernel that uses it gives the same bits on every run. Every thread gets the total.
#pragma once

#include <cuda_runtime.h>

namespace gla::cuda {

template <int THREADS>
__device__ inline float BlockSum(float v) {
  static_assert(THREADS % 32 == 0 && THREADS <= 1024, "whole warps");
  constexpr int kWarps = THREADS / 32;
  __shared__ float warp_sums[kWarps];
  __shared__ float total;
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float s = lane < kWarps ? warp_sums[lane] : 0.f;
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    if (lane == 0) total = s;
  }
  __syncthreads();
  return total;
}

}  // namespace gla::cuda
