// Block-wide sum in a fixed order (warp shuffles, then the first warp over the warp sums), so a
// kernel that uses it gives the same bits on every run. Every thread gets the total.
#pragma once

#include <cuda_runtime.h>

namespace gla::cuda {

// acc + x * x as one fused multiply-add, written out: the row kernels that must give each other's
// bits (a block a row, a warp a row: kernels/cuda/warp_rows.cuh) then do not depend on the
// compiler contracting `acc += x * x` the same way in each.
__device__ __forceinline__ float SquareAdd(float x, float acc) { return __fmaf_rn(x, x, acc); }

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

// Block-wide maximum, same shape as BlockSum (a row's softmax needs its max first).
template <int THREADS>
__device__ inline float BlockMax(float v) {
  static_assert(THREADS % 32 == 0 && THREADS <= 1024, "whole warps");
  constexpr int kWarps = THREADS / 32;
  __shared__ float warp_max[kWarps];
  __shared__ float total;
  for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_max[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float s = lane < kWarps ? warp_max[lane] : -INFINITY;
    for (int off = 16; off > 0; off >>= 1) s = fmaxf(s, __shfl_xor_sync(0xffffffffu, s, off));
    if (lane == 0) total = s;
  }
  __syncthreads();
  return total;
}

// The same in double, for any blockDim.x that is a whole number of warps (at most 1024), with the
// caller's `scratch` (32 doubles of shared memory): the training kernels' row sums, which their
// CPU references take in double. Every thread gets the total.
__device__ inline double BlockSumDouble(double v, double* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  __syncthreads();  // a previous call's readers are done with scratch
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  double t = 0.0;
  for (int i = 0; i < warps; ++i) t += scratch[i];
  return t;
}

}  // namespace gla::cuda
