// GLA recurrent decode step on the GPU (the serving hot path once a batch is large).
//
// Memory-bound: each (sequence, head) state S [dk, dv] is read once and written once (fp32, or bf16
// widened in registers and rounded back: kernels/state_slots.h).
// A block owns 32 columns of one head of one sequence: 8 lanes x float4 (16-byte accesses, a
// warp covers 4 rows x 128 B, coalesced) by 32 row groups. Each thread updates its rows in place,
//   S[i, j] = exp(g_i) S[i, j] + k_i v_j,   acc_j += (scale q_i) S[i, j]
// and the 32 partial sums per column are reduced through shared memory in a fixed order, so the
// result is deterministic (no atomics). q, k and exp(g) of the head are staged in shared memory.
#include <cuda_runtime.h>

#include "kernels/cuda/forget_gate.cuh"
#include "kernels/cuda/launch.cuh"

#include "kernels/cuda/gla_recurrent_tile.cuh"
#include "kernels/cuda/state_values.cuh"
#include "kernels/gla.h"

namespace gla::cuda {

namespace {

using tile::kCols;
using tile::kLanes;
using tile::kRowGroups;
using tile::kThreads;
constexpr int kMaxDk = 1024;

// A thread's rows of the state, updated in place: i = group, group + 32, ... R > 0 (the row count,
// dk / 32, known at compile time): the rows are loaded together (LoadRows, before the kernel waits
// for its predecessor: the state does not come from it) and stored after the last update, so the
// R round trips to memory overlap with each other and with the previous kernel's tail (in one loop
// the compiler cannot move a row's load above the previous row's store: they might alias); the
// arithmetic, row by row in the same order, is the loop's. R = 0: the loop, for any dk.
// A thread owns 4 V consecutive columns of each of its rows (V = 2 for bf16 states: 16-byte
// accesses, as fp32's V = 1, so as many bytes are in flight per thread). S is the value index of the
// head's [dk, dv] state in `st` (fp32 or bf16: state_values.cuh).
template <int R, int V>
struct Rows {
  float4 s[R > 0 ? R : 1][V];
};

template <int V>
__device__ __forceinline__ void LoadCells(const CudaStateSlots& st, int64_t i, float4 (&cells)[V]) {
  if constexpr (V == 2) LoadState8(st, i, cells[0], cells[1]);
  else cells[0] = LoadState4(st, i);
}

template <int V>
__device__ __forceinline__ void StoreCells(const CudaStateSlots& st, int64_t i, const float4 (&cells)[V]) {
  if constexpr (V == 2) StoreState8(st, i, cells[0], cells[1]);
  else StoreState4(st, i, cells[0]);
}

template <int V>
__device__ __forceinline__ void UpdateCells(float4 (&cells)[V], float a, float k, float q, const float4 (&v)[V],
                                            float4 (&acc)[V]) {
#pragma unroll
  for (int c = 0; c < V; ++c) tile::UpdateRow(cells[c], a, k, q, v[c], acc[c]);
}

template <int R, int V>
__device__ __forceinline__ void LoadRows(const CudaStateSlots& st, int64_t S, int dv, int col, int group,
                                         Rows<R, V>& rows) {
  if constexpr (R > 0) {
#pragma unroll
    for (int r = 0; r < R; ++r) LoadCells<V>(st, S + static_cast<int64_t>(group + r * kRowGroups) * dv + col, rows.s[r]);
  }
}

template <int R, int V>
__device__ __forceinline__ void UpdateRows(const CudaStateSlots& st, int64_t S, int dk, int dv, int col, int group,
                                           const float* decay_s, const float* k_s, const float* q_s,
                                           const float4 (&v)[V], Rows<R, V>& rows, float4 (&acc)[V]) {
  if constexpr (R > 0) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int i = group + r * kRowGroups;
      UpdateCells<V>(rows.s[r], decay_s[i], k_s[i], q_s[i], v, acc);
    }
#pragma unroll
    for (int r = 0; r < R; ++r) StoreCells<V>(st, S + static_cast<int64_t>(group + r * kRowGroups) * dv + col, rows.s[r]);
  } else {
#pragma unroll 4
    for (int i = group; i < dk; i += kRowGroups) {
      const int64_t cell = S + static_cast<int64_t>(i) * dv + col;
      float4 s[V];
      LoadCells<V>(st, cell, s);
      UpdateCells<V>(s, decay_s[i], k_s[i], q_s[i], v, acc);
      StoreCells<V>(st, cell, s);
    }
  }
}

template <int R, int V>
__global__ void __launch_bounds__(kThreads) GlaDecodeKernel(const GlaDecodeCudaParams p) {
  constexpr int kBlockCols = kCols * V;
  const int n = blockIdx.z, h = blockIdx.y;
  const int hk = h / (p.H / p.Hkv);
  const int lane = threadIdx.x % kLanes, group = threadIdx.x / kLanes;
  const int col = blockIdx.x * kBlockCols + lane * 4 * V;
  // The state was written by this layer's step one step ago (and the slots before the step began):
  // its rows are in flight while the previous kernel finishes.
  const int64_t S = p.state.Index(p.slots[n], static_cast<int64_t>(h) * p.dk * p.dv);
  Rows<R, V> rows;
  if (col < p.dv) LoadRows<R, V>(p.state, S, p.dv, col, group, rows);
  WaitForPredecessor();  // q, k, v (and the gates) come from the kernels before; see kernels/cuda/launch.cuh
  LetDependentsLaunch();

  __shared__ float q_s[kMaxDk], k_s[kMaxDk], decay_s[kMaxDk];
  __shared__ float4 partial[V][kRowGroups][kLanes];
  if (p.gate_lowrank != nullptr) {  // the gate from its low-rank factors, here (forget_gate.cuh)
    const float* lr = p.gate_lowrank + n * p.gate_lowrank_stride;
    const float* q = p.q + n * p.q_stride + h * p.dk;
    const float* k = p.k + n * p.k_stride + hk * p.dk;
    for (int i = threadIdx.x; i < p.dk; i += kThreads) {
      q_s[i] = p.scale * q[i];
      k_s[i] = k[i];
      decay_s[i] = expf(LowRankGateOf(lr, p.gate_w1, p.gate_rank, p.gate_bias, hk * p.dk + i, p.gate_inv_normalizer,
                                      p.gate_has_clamp, p.gate_clamp_min));
    }
  } else {
    tile::StageHead(p.q + n * p.q_stride + h * p.dk, p.k + n * p.k_stride + hk * p.dk,
                    p.g + n * p.g_stride + hk * p.dk, p.dk, p.scale, q_s, k_s, decay_s);
  }
  __syncthreads();

  float4 acc[V];
#pragma unroll
  for (int c = 0; c < V; ++c) acc[c] = make_float4(0.f, 0.f, 0.f, 0.f);
  if (col < p.dv) {
    float4 v[V];
#pragma unroll
    for (int c = 0; c < V; ++c) v[c] = *reinterpret_cast<const float4*>(p.v + n * p.v_stride + hk * p.dv + col + 4 * c);
    UpdateRows<R, V>(p.state, S, p.dk, p.dv, col, group, decay_s, k_s, q_s, v, rows, acc);
  }
#pragma unroll
  for (int c = 0; c < V; ++c) partial[c][group][lane] = acc[c];
  __syncthreads();
  if (group == 0 && col < p.dv) {
#pragma unroll
    for (int c = 0; c < V; ++c)
      *reinterpret_cast<float4*>(p.o + n * p.o_stride + h * p.dv + col + 4 * c) = tile::SumPartials(partial[c], lane);
  }
}

template <int V>
cudaError_t LaunchDecode(const GlaDecodeCudaParams& p, cudaStream_t stream) {
  const dim3 grid((p.dv + kCols * V - 1) / (kCols * V), p.H, p.N);
  switch (p.dk % kRowGroups == 0 ? p.dk / kRowGroups : 0) {  // rows per thread, when it is a small constant
    case 2: return LaunchDependent(GlaDecodeKernel<2, V>, grid, kThreads, stream, p);
    case 4: return LaunchDependent(GlaDecodeKernel<4, V>, grid, kThreads, stream, p);
    case 8: return LaunchDependent(GlaDecodeKernel<8, V>, grid, kThreads, stream, p);
    default: return LaunchDependent(GlaDecodeKernel<0, V>, grid, kThreads, stream, p);
  }
}

}  // namespace

cudaError_t GlaDecodeStep(const GlaDecodeCudaParams& p, cudaStream_t stream) {
  if (p.N == 0) return cudaSuccess;
  if (p.N < 0 || p.H <= 0 || p.Hkv <= 0 || p.H % p.Hkv != 0 || p.dk <= 0 || p.dk > kMaxDk || p.dv <= 0 ||
      p.dv % 4 != 0 || p.N > 65535 || p.H > 65535 || !p.state.FourValueAligned())
    return cudaErrorInvalidValue;
  if (p.gate_lowrank != nullptr && (p.gate_w1 == nullptr || p.gate_rank <= 0 || p.gate_rank > 64))
    return cudaErrorInvalidValue;
  // bf16 states: 8 columns a thread (16-byte accesses) where the rows allow it.
  const bool eight = p.state.bf16 && p.dv % 8 == 0 && p.state.EightValueAligned();
  return eight ? LaunchDecode<2>(p, stream) : LaunchDecode<1>(p, stream);
}

}  // namespace gla::cuda
