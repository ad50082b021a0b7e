// Element-wise kernels of the GLA block on the GPU: SwiGLU, the low-rank gate (second factor,
// logsigmoid / normalizer / clamp), and the embedding gather. Each is one pass over its rows (memory-bound).
#include <algorithm>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "kernels/cuda/forget_gate.cuh"
#include "kernels/cuda/launch.cuh"

#include "kernels/activations.h"

namespace gla::cuda {

namespace {

constexpr int kThreads = 256;

// bf16 rows for serving (GEMM inputs), fp32 rows for training (saved for the backward).
__device__ __forceinline__ float Load(const __nv_bfloat16* p) { return __bfloat162float(*p); }
__device__ __forceinline__ float Load(const float* p) { return *p; }
__device__ __forceinline__ void Store(__nv_bfloat16* p, float v) { *p = __float2bfloat16(v); }
__device__ __forceinline__ void Store(float* p, float v) { *p = v; }

template <typename T>
__global__ void SwiGluKernel(const T* gate_up, int64_t gate_up_stride, T* out, int64_t out_stride, int64_t M,
                             int64_t I) {
  WaitForPredecessor();  // see kernels/cuda/launch.cuh
  LetDependentsLaunch();
  for (int64_t r = blockIdx.y; r < M; r += gridDim.y) {
    const T* g = gate_up + r * gate_up_stride;
    for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < I;
         i += static_cast<int64_t>(gridDim.x) * kThreads) {
      const float a = Load(&g[i]), u = Load(&g[i + I]);
      Store(&out[r * out_stride + i], a / (1.f + __expf(-a)) * u);
    }
  }
}

// The bf16 SwiGLU eight values at a time (16-byte loads and stores). The scalar kernel moved two
// bytes per load and ran at ~65% of the copy rate on prefill rows (H100 profile, 2026-12-05:
// 70 us for a 4096 x 5632 gla-1.3B step against 46 us of bytes). Same arithmetic per value.
__global__ void SwiGluBf16x8Kernel(const __nv_bfloat16* gate_up, int64_t gate_up_stride, __nv_bfloat16* out,
                                   int64_t out_stride, int64_t M, int64_t I) {
  WaitForPredecessor();  // see kernels/cuda/launch.cuh
  LetDependentsLaunch();
  for (int64_t r = blockIdx.y; r < M; r += gridDim.y) {
    const __nv_bfloat16* g = gate_up + r * gate_up_stride;
    for (int64_t i = (blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x) * 8; i < I;
         i += static_cast<int64_t>(gridDim.x) * kThreads * 8) {
      const uint4 gv = __ldcs(reinterpret_cast<const uint4*>(g + i));
      const uint4 uv = __ldcs(reinterpret_cast<const uint4*>(g + I + i));
      const __nv_bfloat16* ga = reinterpret_cast<const __nv_bfloat16*>(&gv);
      const __nv_bfloat16* ua = reinterpret_cast<const __nv_bfloat16*>(&uv);
      uint4 ov;
      __nv_bfloat16* oa = reinterpret_cast<__nv_bfloat16*>(&ov);
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const float a = __bfloat162float(ga[e]), u = __bfloat162float(ua[e]);
        oa[e] = __float2bfloat16(a / (1.f + __expf(-a)) * u);
      }
      *reinterpret_cast<uint4*>(out + r * out_stride + i) = ov;
    }
  }
}


__global__ void LogSigmoidGateKernel(float* x, int64_t stride, const float* bias, int64_t rows, int64_t n,
                                     float inv_normalizer, bool has_clamp, float clamp_min) {
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y)
    for (int64_t j = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; j < n;
         j += static_cast<int64_t>(gridDim.x) * kThreads) {
      float* p = x + r * stride + j;
      *p = GateOf(*p + (bias ? bias[j] : 0.f), inv_normalizer, has_clamp, clamp_min);
    }
}

constexpr int kMaxRank = 64;
constexpr int kGateMaxRowsPerBlock = 32;

// Thread j keeps w1's row j (and bias[j]) in registers for all of its block's rows, and every row's
// factor is staged in shared memory, where all threads read the same word (a broadcast). The first
// version made each output read its w1 row from L1 with a 64-byte stride across the warp, so a
// prefill step's gates were bound by L1 wavefronts (H100 profile, 2026-12-05: 141 us a gla-1.3B
// layer at 4096 rows, 13% of the prefill). Same order of operations as LowRankGateOf: the same bits.
template <int R>  // a bound on the rank, so the w1 row can live in registers
__global__ void __launch_bounds__(kThreads) LowRankGateKernel(const float* lowrank, int64_t lowrank_stride,
                                                              const float* w1, int rank, const float* bias, float* out,
                                                              int64_t out_stride, int64_t rows, int n,
                                                              int rows_per_block, float inv_normalizer,
                                                              bool has_clamp, float clamp_min) {
  __shared__ float lr[kGateMaxRowsPerBlock][R];
  const int j = blockIdx.x * kThreads + threadIdx.x;
  float w[R];
  // Weights: no kernel of the step writes them, so they load while the predecessor finishes.
#pragma unroll
  for (int k = 0; k < R; ++k) w[k] = j < n && k < rank ? __ldg(w1 + static_cast<int64_t>(j) * rank + k) : 0.f;
  const float b = bias != nullptr && j < n ? __ldg(bias + j) : 0.f;
  WaitForPredecessor();  // see kernels/cuda/launch.cuh
  LetDependentsLaunch();
  for (int64_t r0 = static_cast<int64_t>(blockIdx.y) * rows_per_block; r0 < rows;
       r0 += static_cast<int64_t>(gridDim.y) * rows_per_block) {
    const int nr = static_cast<int>(rows - r0 < rows_per_block ? rows - r0 : rows_per_block);
    __syncthreads();  // the previous rows' factors are no longer read
    for (int i = threadIdx.x; i < nr * rank; i += kThreads)
      lr[i / rank][i % rank] = lowrank[(r0 + i / rank) * lowrank_stride + i % rank];
    __syncthreads();
    if (j >= n) continue;
    for (int rr = 0; rr < nr; ++rr) {
      float z = b;
#pragma unroll
      for (int k = 0; k < R; ++k)
        if (k < rank) z = fmaf(lr[rr][k], w[k], z);
      out[(r0 + rr) * out_stride + j] = GateOf(z, inv_normalizer, has_clamp, clamp_min);
    }
  }
}

template <typename T>
__global__ void EmbeddingGatherKernel(const T* table, int64_t D, const int32_t* ids, int64_t n, float* out) {
  WaitForPredecessor();  // see kernels/cuda/launch.cuh
  LetDependentsLaunch();
  for (int64_t r = blockIdx.y; r < n; r += gridDim.y) {
    const T* row = table + static_cast<int64_t>(ids[r]) * D;
    for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < D;
         i += static_cast<int64_t>(gridDim.x) * kThreads)
      out[r * D + i] = Load(&row[i]);
  }
}

// Enough blocks across a row to fill the GPU when there are few rows, one when there are many.
dim3 RowGrid(int64_t rows, int64_t width) {
  const int64_t per_row = (width + kThreads - 1) / kThreads;
  const int64_t across = rows >= 64 ? 1 : per_row;
  return dim3(static_cast<unsigned>(across < 1 ? 1 : across), static_cast<unsigned>(rows < 65535 ? rows : 65535));
}

bool BadRows(int64_t rows, int64_t width) { return rows < 0 || width <= 0; }

}  // namespace

cudaError_t SwiGlu(const __nv_bfloat16* gate_up, int64_t gate_up_stride, __nv_bfloat16* out, int64_t out_stride,
                   int64_t M, int64_t I, cudaStream_t stream) {
  if (M == 0) return cudaSuccess;
  if (BadRows(M, I)) return cudaErrorInvalidValue;
  const bool by_8 = I % 8 == 0 && gate_up_stride % 8 == 0 && out_stride % 8 == 0 &&
                    reinterpret_cast<uintptr_t>(gate_up) % 16 == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0;
  if (by_8) {
    const int64_t across = (I / 8 + kThreads - 1) / kThreads;
    const dim3 grid(static_cast<unsigned>(across), static_cast<unsigned>(M < 65535 ? M : 65535));
    return LaunchDependent(SwiGluBf16x8Kernel, grid, kThreads, stream, gate_up, gate_up_stride, out, out_stride, M, I);
  }
  return LaunchDependent(SwiGluKernel<__nv_bfloat16>, RowGrid(M, I), kThreads, stream, gate_up, gate_up_stride, out,
                         out_stride, M, I);
}

cudaError_t SwiGlu(const float* gate_up, int64_t gate_up_stride, float* out, int64_t out_stride, int64_t M, int64_t I,
                   cudaStream_t stream) {
  if (M == 0) return cudaSuccess;
  if (BadRows(M, I)) return cudaErrorInvalidValue;
  return LaunchDependent(SwiGluKernel<float>, RowGrid(M, I), kThreads, stream, gate_up, gate_up_stride, out,
                         out_stride, M, I);
}

cudaError_t LogSigmoidGate(float* x, int64_t stride, const float* bias, int64_t rows, int64_t n, const ForgetGate& gate,
                           cudaStream_t stream) {
  const float normalizer = gate.normalizer, clamp_min = gate.clamp_min;
  const bool has_clamp = gate.has_clamp;
  if (rows == 0) return cudaSuccess;
  if (BadRows(rows, n) || normalizer == 0.f) return cudaErrorInvalidValue;
  LogSigmoidGateKernel<<<RowGrid(rows, n), kThreads, 0, stream>>>(x, stride, bias, rows, n, 1.f / normalizer,
                                                                  has_clamp, clamp_min);
  return cudaGetLastError();
}

cudaError_t LowRankGate(const float* lowrank, int64_t lowrank_stride, const float* w1, int rank, const float* bias,
                        float* out, int64_t out_stride, int64_t rows, int n, const ForgetGate& gate,
                        cudaStream_t stream) {
  const float normalizer = gate.normalizer, clamp_min = gate.clamp_min;
  const bool has_clamp = gate.has_clamp;
  if (rows == 0) return cudaSuccess;
  if (BadRows(rows, n) || rank <= 0 || rank > kMaxRank || normalizer == 0.f) return cudaErrorInvalidValue;
  // About 512 blocks at prefill sizes (each w1 row is loaded once per block, so a block takes
  // several rows); at least 4 rows a block.
  const int64_t across = (n + kThreads - 1) / kThreads;
  const int64_t per_block = std::clamp<int64_t>(rows * across / 512, 4, kGateMaxRowsPerBlock);
  const int64_t groups = (rows + per_block - 1) / per_block;
  const dim3 grid(static_cast<unsigned>(across), static_cast<unsigned>(groups < 65535 ? groups : 65535));
  auto launch = [&](auto kernel) {
    return LaunchDependent(kernel, grid, kThreads, stream, lowrank, lowrank_stride, w1, rank, bias, out, out_stride,
                           rows, n, static_cast<int>(per_block), 1.f / normalizer, has_clamp, clamp_min);
  };
  if (rank <= 8) return launch(LowRankGateKernel<8>);
  if (rank <= 16) return launch(LowRankGateKernel<16>);
  if (rank <= 32) return launch(LowRankGateKernel<32>);
  return launch(LowRankGateKernel<kMaxRank>);
}

cudaError_t EmbeddingGather(const __nv_bfloat16* table, int64_t D, const int32_t* ids, int64_t n, float* out,
                            cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  if (BadRows(n, D)) return cudaErrorInvalidValue;
  return LaunchDependent(EmbeddingGatherKernel<__nv_bfloat16>, RowGrid(n, D), kThreads, stream, table, D, ids, n, out);
}

cudaError_t EmbeddingGather(const float* table, int64_t D, const int32_t* ids, int64_t n, float* out,
                            cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  if (BadRows(n, D)) return cudaErrorInvalidValue;
  return LaunchDependent(EmbeddingGatherKernel<float>, RowGrid(n, D), kThreads, stream, table, D, ids, n, out);
}

}  // namespace gla::cuda
