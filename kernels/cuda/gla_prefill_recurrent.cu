// GLA prefill in the fused-recurrent form, many variable-length sequences per launch.
//
// A block owns 32 value columns of one head of one sequence (8 lanes x float4, 32 row groups,
// as the decode step) and keeps that [dk, 32] slice of the state in registers for the whole
// sequence: ROWS = ceil(dk / 32) float4 per thread, a compile-time size chosen at the one
// dispatch site below. Per token: q, k, exp(g) go through shared memory, every thread updates its
// rows, and the per-column output is reduced over the 32 row groups in a fixed order.
// HBM traffic is the inputs and outputs once plus the state once in and once out (fp32, or bf16
// widened in registers and rounded back at the end: kernels/state_slots.h).
#include <cuda_runtime.h>

#include "kernels/cuda/gla_recurrent_tile.cuh"
#include "kernels/cuda/state_values.cuh"
#include "kernels/gla.h"

namespace gla::cuda {

namespace {

using tile::kCols;
using tile::kLanes;
using tile::kRowGroups;
using tile::kThreads;

template <int ROWS>  // rows of the state per thread: dk <= 32 * ROWS
__global__ void __launch_bounds__(kThreads) GlaPrefillRecurrentKernel(const GlaPrefillCudaParams p) {
  static_assert(ROWS >= 1 && ROWS <= 16, "state slice must stay in registers");
  const int n = blockIdx.z, h = blockIdx.y;
  const int hk = h / (p.H / p.Hkv);
  const int lane = threadIdx.x % kLanes, group = threadIdx.x / kLanes;
  const int col = blockIdx.x * kCols + lane * 4;
  const bool active = col < p.dv;
  const int begin = p.cu_seqlens[n], end = p.cu_seqlens[n + 1];

  __shared__ float q_s[kRowGroups * ROWS], k_s[kRowGroups * ROWS], decay_s[kRowGroups * ROWS];
  __shared__ float4 partial[kRowGroups][kLanes];

  const bool stored = p.slots != nullptr;  // else: from zero, and the final state is not kept
  const int64_t S = stored ? p.state.Index(p.slots[n], static_cast<int64_t>(h) * p.dk * p.dv) : 0;
  float4 state[ROWS];
#pragma unroll
  for (int r = 0; r < ROWS; ++r) {
    const int row = group + r * kRowGroups;
    state[r] = (stored && active && row < p.dk) ? LoadState4(p.state, S + static_cast<int64_t>(row) * p.dv + col)
                                                : make_float4(0.f, 0.f, 0.f, 0.f);
  }

  for (int t = begin; t < end; ++t) {
    tile::StageHead(p.q + t * p.q_stride + h * p.dk, p.k + t * p.k_stride + hk * p.dk,
                    p.g + t * p.g_stride + hk * p.dk, p.dk, p.scale, q_s, k_s, decay_s);
    const float4 v = active ? *reinterpret_cast<const float4*>(p.v + t * p.v_stride + hk * p.dv + col)
                            : make_float4(0.f, 0.f, 0.f, 0.f);
    __syncthreads();
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
      const int row = group + r * kRowGroups;
      if (row < p.dk) tile::UpdateRow(state[r], decay_s[row], k_s[row], q_s[row], v, acc);
    }
    partial[group][lane] = acc;
    __syncthreads();  // also: nobody rewrites q_s/k_s/decay_s before every thread has used them
    if (group == 0 && active)
      *reinterpret_cast<float4*>(p.o + t * p.o_stride + h * p.dv + col) = tile::SumPartials(partial, lane);
    // partial[] is rewritten only after the next token's first barrier, which group 0 reaches
    // after it has finished reading it.
  }

  if (stored && active) {
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
      const int row = group + r * kRowGroups;
      if (row < p.dk) StoreState4(p.state, S + static_cast<int64_t>(row) * p.dv + col, state[r]);
    }
  }
}

}  // namespace

cudaError_t GlaPrefillRecurrent(const GlaPrefillCudaParams& p, cudaStream_t stream) {
  if (p.num_seqs == 0) return cudaSuccess;
  if (p.num_seqs < 0 || p.num_seqs > 65535 || p.H <= 0 || p.H > 65535 || p.Hkv <= 0 || p.H % p.Hkv != 0 ||
      p.dk <= 0 || p.dv <= 0 || p.dv % 4 != 0 || p.cu_seqlens == nullptr ||
      (p.slots != nullptr && !p.state.FourValueAligned()) || p.gate.lowrank != nullptr ||  // g is read here
      p.plan_segments != 0 || p.plan_split_prep != 0)  // the chunkwise plan's overrides
    return cudaErrorInvalidValue;
  const dim3 grid((p.dv + kCols - 1) / kCols, p.H, p.num_seqs);
  // The one dispatch site: dk -> rows of state per thread.
  if (p.dk <= 32) GlaPrefillRecurrentKernel<1><<<grid, kThreads, 0, stream>>>(p);
  else if (p.dk <= 64) GlaPrefillRecurrentKernel<2><<<grid, kThreads, 0, stream>>>(p);
  else if (p.dk <= 128) GlaPrefillRecurrentKernel<4><<<grid, kThreads, 0, stream>>>(p);
  else if (p.dk <= 256) GlaPrefillRecurrentKernel<8><<<grid, kThreads, 0, stream>>>(p);
  else if (p.dk <= 512) GlaPrefillRecurrentKernel<16><<<grid, kThreads, 0, stream>>>(p);
  else return cudaErrorInvalidValue;
  return cudaGetLastError();
}

}  // namespace gla::cuda
