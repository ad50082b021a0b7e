// Element-wise kernels of the GLA block on the GPU: SwiGLU, the low-rank gate (second factor,
// logsigmoid / normalizer / clamp), and the embedding gather. Each is one pass over its rows (memory-bound).
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

__global__ void LowRankGateKernel(const float* lowrank, int64_t lowrank_stride, const float* w1, int rank,
                                  const float* bias, float* out, int64_t out_stride, int64_t rows, int n,
                                  float inv_normalizer, bool has_clamp, float clamp_min) {
  WaitForPredecessor();  // see kernels/cuda/launch.cuh
  LetDependentsLaunch();
  __shared__ float lr[kMaxRank];
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    __syncthreads();  // the previous row's lr is no longer read
    for (int k = threadIdx.x; k < rank; k += kThreads) lr[k] = lowrank[r * lowrank_stride + k];
    __syncthreads();
    for (int j = blockIdx.x * kThreads + threadIdx.x; j < n; j += gridDim.x * kThreads)
      out[r * out_stride + j] = LowRankGateOf(lr, w1, rank, bias, j, inv_normalizer, has_clamp, clamp_min);
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
  return LaunchDependent(LowRankGateKernel, RowGrid(rows, n), kThreads, stream, lowrank, lowrank_stride, w1, rank, bias,
                         out, out_stride, rows, n, 1.f / normalizer, has_clamp, clamp_min);
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
