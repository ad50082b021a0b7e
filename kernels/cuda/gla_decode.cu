// GLA recurrent decode step on the GPU (the serving hot path once a batch is large).
//
// Memory-bound: each (sequence, head) state S [dk, dv] is read once and written once (fp32, or bf16
// widened in registers and rounded back: kernels/state_slots.h).
// A block owns 32 columns of one head of one sequence: 8 lanes x float4 (16-byte accesses, a
// warp covers 4 rows x 128 B, coalesced) by 32 row groups (bf16 states: 64 columns, 8 a lane).
// Each thread updates its rows in place,
//   S[i, j] = exp(g_i) S[i, j] + k_i v_j,   acc_j += (scale q_i) S[i, j]
// and the 32 partial sums per column are reduced through shared memory in a fixed order, so the
// result is deterministic (no atomics). q, k and exp(g) of the head are staged in shared memory.
#include <cuda_bf16.h>
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

// A thread's cells: 4 V consecutive columns of one row, as the pool stores them (Raw) and widened
// (4 V floats). fp32: V = 1, a float4. bf16: V = 2 (8 columns, one 16-byte access, as fp32's) where
// the slots are 8-value aligned, else V = 1 (8 bytes). Rows loaded ahead are kept as stored, so a
// bf16 row costs the registers of its bytes, not of its values: as many rows (bytes) are in flight
// per SM as with fp32 states (H100, gla_decode_bench: widened at load, bf16 reached 73% of the copy
// rate at gla-1.3B heads, B = 64-256, against fp32's 95%).
template <bool kBf16, int V>
struct Cells;
template <>
struct Cells<false, 1> {
  using Raw = float4;
  using Elem = float;
  __device__ static void Widen(const Raw& r, float4 (&c)[1]) { c[0] = r; }
  __device__ static Raw Round(const float4 (&c)[1]) { return c[0]; }
};
template <>
struct Cells<true, 1> {
  using Raw = uint2;
  using Elem = __nv_bfloat16;
  __device__ static void Widen(const Raw& r, float4 (&c)[1]) { c[0] = Bf16x4ToFloat4(r); }
  __device__ static Raw Round(const float4 (&c)[1]) { return Float4ToBf16x4(c[0]); }
};
template <>
struct Cells<true, 2> {
  using Raw = uint4;
  using Elem = __nv_bfloat16;
  __device__ static void Widen(const Raw& r, float4 (&c)[2]) {
    c[0] = Bf16x4ToFloat4(make_uint2(r.x, r.y));
    c[1] = Bf16x4ToFloat4(make_uint2(r.z, r.w));
  }
  __device__ static Raw Round(const float4 (&c)[2]) {
    const uint2 a = Float4ToBf16x4(c[0]), b = Float4ToBf16x4(c[1]);
    return make_uint4(a.x, a.y, b.x, b.y);
  }
};

// The cells of row i of the head whose state starts at value index S (i * dv + col further in).
template <bool kBf16, int V>
__device__ __forceinline__ typename Cells<kBf16, V>::Raw* CellsAt(const CudaStateSlots& st, int64_t S, int i, int dv,
                                                                  int col) {
  using C = Cells<kBf16, V>;
  return reinterpret_cast<typename C::Raw*>(static_cast<typename C::Elem*>(st.base) + S + static_cast<int64_t>(i) * dv +
                                            col);
}

template <int V>
__device__ __forceinline__ void UpdateCells(float4 (&cells)[V], float a, float k, float q, const float4 (&v)[V],
                                            float4 (&acc)[V]) {
#pragma unroll
  for (int c = 0; c < V; ++c) tile::UpdateRow(cells[c], a, k, q, v[c], acc[c]);
}

// A thread's rows of the state, updated in place: i = group, group + 32, ... R > 0 (the row count,
// dk / 32, known at compile time): the rows are loaded together (LoadRows, before the kernel waits
// for its predecessor: the state does not come from it) and stored after the last update, so the
// R round trips to memory overlap with each other and with the previous kernel's tail (in one loop
// the compiler cannot move a row's load above the previous row's store: they might alias); the
// arithmetic, row by row in the same order, is the loop's. R = 0: the loop, for any dk.
template <int R, bool kBf16, int V>
struct Rows {
  typename Cells<kBf16, V>::Raw raw[R > 0 ? R : 1];
};

template <int R, bool kBf16, int V>
__device__ __forceinline__ void LoadRows(const CudaStateSlots& st, int64_t S, int dv, int col, int group,
                                         Rows<R, kBf16, V>& rows) {
  if constexpr (R > 0) {
#pragma unroll
    for (int r = 0; r < R; ++r) rows.raw[r] = *CellsAt<kBf16, V>(st, S, group + r * kRowGroups, dv, col);
  }
}

template <int R, bool kBf16, int V>
__device__ __forceinline__ void UpdateRows(const CudaStateSlots& st, int64_t S, int dk, int dv, int col, int group,
                                           const float* decay_s, const float* k_s, const float* q_s,
                                           const float4 (&v)[V], Rows<R, kBf16, V>& rows, float4 (&acc)[V]) {
  using C = Cells<kBf16, V>;
  if constexpr (R > 0) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int i = group + r * kRowGroups;
      float4 cells[V];
      C::Widen(rows.raw[r], cells);
      UpdateCells<V>(cells, decay_s[i], k_s[i], q_s[i], v, acc);
      rows.raw[r] = C::Round(cells);
    }
#pragma unroll
    for (int r = 0; r < R; ++r) *CellsAt<kBf16, V>(st, S, group + r * kRowGroups, dv, col) = rows.raw[r];
  } else {
#pragma unroll 4
    for (int i = group; i < dk; i += kRowGroups) {
      typename C::Raw* at = CellsAt<kBf16, V>(st, S, i, dv, col);
      float4 cells[V];
      C::Widen(*at, cells);
      UpdateCells<V>(cells, decay_s[i], k_s[i], q_s[i], v, acc);
      *at = C::Round(cells);
    }
  }
}

template <int R, bool kBf16, int V>
__global__ void __launch_bounds__(kThreads) GlaDecodeKernel(const GlaDecodeCudaParams p) {
  constexpr int kBlockCols = kCols * V;
  const int n = blockIdx.z, h = blockIdx.y;
  const int hk = h / (p.H / p.Hkv);
  const int lane = threadIdx.x % kLanes, group = threadIdx.x / kLanes;
  const int col = blockIdx.x * kBlockCols + lane * 4 * V;
  // The state was written by this layer's step one step ago (and the slots before the step began):
  // its rows are in flight while the previous kernel finishes.
  const int64_t S = p.state.Index(p.slots[n], static_cast<int64_t>(h) * p.dk * p.dv);
  Rows<R, kBf16, V> rows;
  if (col < p.dv) LoadRows<R, kBf16, V>(p.state, S, p.dv, col, group, rows);
  WaitForPredecessor();  // q, k, v (and the gates) come from the kernels before; see kernels/cuda/launch.cuh
  LetDependentsLaunch();

  __shared__ float q_s[kMaxDk], k_s[kMaxDk], decay_s[kMaxDk];
  __shared__ float4 partial[V][kRowGroups][kLanes];
  if (p.gate.lowrank != nullptr) {  // the gate from its low-rank factors, here (forget_gate.cuh)
    const float* lr = p.gate.lowrank + n * p.gate.lowrank_stride;
    const float* q = p.q + n * p.q_stride + h * p.dk;
    const float* k = p.k + n * p.k_stride + hk * p.dk;
    for (int i = threadIdx.x; i < p.dk; i += kThreads) {
      q_s[i] = p.scale * q[i];
      k_s[i] = k[i];
      decay_s[i] = expf(LowRankGateOf(lr, p.gate.w1, p.gate.rank, p.gate.bias, hk * p.dk + i, p.gate.inv_normalizer,
                                      p.gate.has_clamp, p.gate.clamp_min));
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
    UpdateRows<R, kBf16, V>(p.state, S, p.dk, p.dv, col, group, decay_s, k_s, q_s, v, rows, acc);
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

template <bool kBf16, int V>
cudaError_t LaunchDecode(const GlaDecodeCudaParams& p, cudaStream_t stream) {
  const dim3 grid((p.dv + kCols * V - 1) / (kCols * V), p.H, p.N);
  switch (p.dk % kRowGroups == 0 ? p.dk / kRowGroups : 0) {  // rows per thread, when it is a small constant
    case 2: return LaunchDependent(GlaDecodeKernel<2, kBf16, V>, grid, kThreads, stream, p);
    case 4: return LaunchDependent(GlaDecodeKernel<4, kBf16, V>, grid, kThreads, stream, p);
    case 8: return LaunchDependent(GlaDecodeKernel<8, kBf16, V>, grid, kThreads, stream, p);
    default: return LaunchDependent(GlaDecodeKernel<0, kBf16, V>, grid, kThreads, stream, p);
  }
}

}  // namespace

cudaError_t GlaDecodeStep(const GlaDecodeCudaParams& p, cudaStream_t stream) {
  if (p.N == 0) return cudaSuccess;
  if (p.N < 0 || p.H <= 0 || p.Hkv <= 0 || p.H % p.Hkv != 0 || p.dk <= 0 || p.dk > kMaxDk || p.dv <= 0 ||
      p.dv % 4 != 0 || p.N > 65535 || p.H > 65535 || !p.state.FourValueAligned())
    return cudaErrorInvalidValue;
  if (!GateFactorsUsable(p.gate, 64)) return cudaErrorInvalidValue;
  if (!p.state.bf16) return LaunchDecode<false, 1>(p, stream);
  // bf16 states: 8 columns a thread (16-byte accesses) where the rows allow it.
  return p.dv % 8 == 0 && p.state.EightValueAligned() ? LaunchDecode<true, 2>(p, stream)
                                                      : LaunchDecode<true, 1>(p, stream);
}

}  // namespace gla::cuda
