// A row a warp, with the bits of the block-a-row kernels (norm.cu's RmsNormKernel and
// RmsNormSwishGateKernel, made_row.cuh's makers, quantize_fp8.cu's QuantizeRow): the row kernels'
// RowForm::kWarpPerRow (kernels/row_form.h). A block a row spends most of its time in block-wide
// barriers and the second and third passes over a short row (a 2,048-value row is 8 values a
// thread), with only 8 rows an SM in flight; a warp a row needs no barrier and keeps 64 rows an SM
// in flight, which is what the many rows of a prefill want. The only sum, an RMSNorm's sum of
// squares, is taken in the block form's order; the rest is per value or a maximum.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/block_reduce.cuh"
#include "kernels/cuda/fp8_chunk.cuh"

namespace gla::cuda::warp_rows {

// One warp's copy of what BlockSum<THREADS> returns when thread t of a THREADS-thread block adds
// the squares of values t, t + THREADS, t + 2 THREADS, ... of `row` in turn (SquareAdd): lane l
// keeps the partial sums of the block's threads l, l + 32, ... (one per block warp, in the block's
// order), reduces each across the warp with BlockSum's shuffles, puts block warp w's sum in lane w
// and the rest 0 (BlockSum's first warp), then runs BlockSum's second tree. The same additions of
// the same values in the same order: the same bits. Every lane gets lane 0's total, as every
// thread of the block gets `total`.
template <int THREADS>
__device__ __forceinline__ float SumSquaresInBlockOrder(const float* __restrict__ row, int n) {
  constexpr int kBlockWarps = THREADS / 32;
  static_assert(THREADS % 32 == 0 && kBlockWarps <= 32, "BlockSum's shapes");
  const int lane = threadIdx.x & 31;
  float part[kBlockWarps];
#pragma unroll
  for (int w = 0; w < kBlockWarps; ++w) part[w] = 0.f;
  for (int base = 0; base < n; base += THREADS) {
#pragma unroll
    for (int w = 0; w < kBlockWarps; ++w) {
      const int i = base + 32 * w + lane;
      if (i < n) part[w] = SquareAdd(row[i], part[w]);
    }
  }
  float s = 0.f;
#pragma unroll
  for (int w = 0; w < kBlockWarps; ++w) {
    for (int off = 16; off > 0; off >>= 1) part[w] += __shfl_xor_sync(0xffffffffu, part[w], off);
    if (lane == w) s = part[w];
  }
  for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
  return __shfl_sync(0xffffffffu, s, 0);
}

__device__ __forceinline__ float WarpMax(float v) {
  for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}

// The largest magnitude of a row of K bf16 values (8 a chunk), every lane gets it: a maximum, so
// the same whatever the order.
__device__ __forceinline__ float MaxMagnitude(const uint4* xr, int64_t K) {
  float mx = 0.f;
  for (int64_t c = threadIdx.x & 31; c < K / 8; c += 32) mx = ChunkMaxMagnitude(xr[c], mx);
  return WarpMax(mx);
}

// A row's FP8 codes from its bf16 values and the row's largest magnitude `mx`: QuantizeRow's
// arithmetic (quantize_fp8.cu: scale = mx / 448, fp8_chunk.cuh's codes), a lane 8 values at a time.
__device__ __forceinline__ void QuantizeWithMax(const uint4* xr, int64_t K, float mx, uint2* qr, float* scale_out) {
  const float s = mx / 448.0f;
  if ((threadIdx.x & 31) == 0) *scale_out = s;
  for (int64_t c = threadIdx.x & 31; c < K / 8; c += 32) qr[c] = QuantizeChunkFp8(xr[c], s);
}

// An RMSNorm row as norm.cu's RmsNormKernel makes it (256 threads' order): out(i, value) is called
// for each i with the normed value x[i] * inv * w[i] in fp32. Returns nothing; the caller stores.
template <typename Out>
__device__ __forceinline__ void RmsNormRow(const float* __restrict__ xr, const float* __restrict__ w, int n, float eps,
                                           Out out) {
  const float inv = rsqrtf(SumSquaresInBlockOrder<256>(xr, n) / n + eps);
  for (int i = threadIdx.x & 31; i < n; i += 32) out(i, xr[i] * inv * w[i]);
}

// One head of the gated head norm as RmsNormSwishGateKernel makes it (128 threads' order): out(i,
// value) for each of its dv values; gate_h is the head's gate values or null.
template <typename Out>
__device__ __forceinline__ void GatedHeadNormHead(const float* __restrict__ oh, const float* __restrict__ gate_h,
                                                  const float* __restrict__ w, int dv, float eps, Out out) {
  const float inv = rsqrtf(SumSquaresInBlockOrder<128>(oh, dv) / dv + eps);
  for (int i = threadIdx.x & 31; i < dv; i += 32) {
    float val = oh[i] * inv * w[i];
    if (gate_h != nullptr) {
      const float z = gate_h[i];
      val *= z / (1.f + __expf(-z));
    }
    out(i, val);
  }
}

}  // namespace gla::cuda::warp_rows
