// Device helpers shared by the recurrent GLA kernels (decode step, fused-recurrent prefill).
// Tile: a block owns 32 value columns of one head, as 8 lanes x float4 (16-byte, coalesced) by
// 32 row groups; each thread updates its rows of the state and keeps a partial output sum.
#pragma once

#include <cuda_runtime.h>

namespace gla::cuda::tile {

constexpr int kLanes = 8;
constexpr int kCols = kLanes * 4;
constexpr int kRowGroups = 32;
constexpr int kThreads = kLanes * kRowGroups;
static_assert(kThreads == 256, "kernels use __launch_bounds__(256)");

// q (scaled), k and exp(g) of one head into shared memory; the caller synchronises afterwards.
__device__ inline void StageHead(const float* q, const float* k, const float* g, int dk, float scale, float* q_s,
                                 float* k_s, float* decay_s) {
  for (int i = threadIdx.x; i < dk; i += kThreads) {
    q_s[i] = scale * q[i];
    k_s[i] = k[i];
    decay_s[i] = expf(g[i]);
  }
}

// One row of the recurrence on 4 columns: s = a s + k v, then acc += q s. The fused multiply-adds
// are written out: left to the compiler, which product it fuses depends on the code around the
// call, and every caller (decode with 4 or 8 columns a thread, fp32 or bf16 states; the recurrent
// prefill; the persistent kernel) must compute the same bits from the same state.
__device__ inline void UpdateRow(float4& s, float a, float k, float q, const float4& v, float4& acc) {
  s.x = fmaf(a, s.x, __fmul_rn(k, v.x));
  s.y = fmaf(a, s.y, __fmul_rn(k, v.y));
  s.z = fmaf(a, s.z, __fmul_rn(k, v.z));
  s.w = fmaf(a, s.w, __fmul_rn(k, v.w));
  acc.x = fmaf(q, s.x, acc.x);
  acc.y = fmaf(q, s.y, acc.y);
  acc.z = fmaf(q, s.z, acc.z);
  acc.w = fmaf(q, s.w, acc.w);
}

// The output of a lane's 4 columns: the 32 row groups' partial sums, added in a fixed order so
// the result is deterministic (no atomics).
__device__ inline float4 SumPartials(const float4 (&partial)[kRowGroups][kLanes], int lane) {
  float4 sum = partial[0][lane];
  for (int r = 1; r < kRowGroups; ++r) {
    const float4 x = partial[r][lane];
    sum.x += x.x;
    sum.y += x.y;
    sum.z += x.z;
    sum.w += x.w;
  }
  return sum;
}

}  // namespace gla::cuda::tile
