// Decode-sized projections on CUDA cores (M <= kSmallMCudaCores rows), bf16 or FP8 weights, and
// LinearSmallM's choice between this kernel and the tensor-core one; and the one-row projection
// whose input row is made in the kernel (LinearOneRowStaged), bf16 or FP8 weights too. Memory-bound, so the aim is the
// weight stream at full bandwidth. One warp per output row n: each lane reads 16 bytes of weights
// per step (8 bf16 or 16 FP8), four to eight steps in flight, multiplies them with the M input rows
// (small, served from L1/L2), and the warp reduces its M partial sums with shuffles in a fixed order
// (deterministic). One kernel template serves both weight types (small_m::Bf16Rows / Fp8Rows).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "kernels/cuda/bf16_dot.cuh"
#include "kernels/cuda/block_reduce.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/linear_small_m_common.cuh"
#include "kernels/cuda/made_row.cuh"

#include "kernels/linear.h"

namespace gla::cuda {

namespace {

constexpr int kWarps = 8;
constexpr int kUnroll = 4;
// From this many rows on, LinearSmallM takes the tensor-core kernel (linear_small_m_mma.cu): at one
// row this kernel is 5-20% faster, from two on the tensor-core one (H200, linear_small_m_bench).
constexpr int64_t kSmallMTensorCoresFrom = 2;

// One output row's weight stream, shared by both kernels below. Two batches of kUnroll chunks per
// lane in flight: the one being multiplied and the next. The first batch (FirstWeights) goes out
// before the kernel's wait (the weights do not come from the previous kernel), so the stream
// starts while the previous kernel finishes. A lane takes its chunks in increasing order, as a
// single loop would: the sums are the same bits. mul(c, w) multiplies chunk c's weights w.
__device__ __forceinline__ void FirstWeights(const uint4* wr, int64_t chunks, int lane, bool active,
                                             uint4 (&wv)[kUnroll]) {
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    const int64_t c = lane + 32 * u;
    wv[u] = active && c < chunks ? __ldcs(wr + c) : make_uint4(0u, 0u, 0u, 0u);  // streamed once: not kept in L2
  }
}

template <class Mul>
__device__ __forceinline__ void StreamWeights(const uint4* wr, int64_t chunks, int lane, uint4 (&wv)[kUnroll],
                                              Mul&& mul) {
  for (int64_t c = lane; c < chunks; c += 32 * kUnroll) {
    uint4 next[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t cn = c + 32 * (kUnroll + u);
      next[u] = cn < chunks ? __ldcs(wr + cn) : make_uint4(0u, 0u, 0u, 0u);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (c + 32 * u >= chunks) break;
      mul(c + 32 * u, wv[u]);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) wv[u] = next[u];
  }
}

// Chunk c of a weight row (wc) against the matching inputs of x's row xr: 8 bf16 weights, or 16
// FP8 ones (two chunks of the row).
__device__ __forceinline__ float DotChunk(const small_m::Bf16Rows&, const uint4& wc, const __nv_bfloat16* xr,
                                          int64_t c, float acc) {
  return Bf16Dot8(wc, __ldg(reinterpret_cast<const uint4*>(xr) + c), acc);
}
__device__ __forceinline__ float DotChunk(const small_m::Fp8Rows&, const uint4& wc, const __nv_bfloat16* xr,
                                          int64_t c, float acc) {
  const uint4* x2 = reinterpret_cast<const uint4*>(xr) + 2 * c;
  return Fp8Dot16(wc, __ldg(x2), __ldg(x2 + 1), acc);
}
__device__ __forceinline__ float DotChunk(const small_m::Int8Rows&, const uint4& wc, const __nv_bfloat16* xr,
                                          int64_t c, float acc) {
  const uint4* x2 = reinterpret_cast<const uint4*>(xr) + 2 * c;
  return Int8Dot16(wc, __ldg(x2), __ldg(x2 + 1), acc);
}

template <int M, class Rows>
__global__ void __launch_bounds__(kWarps * 32) SmallMKernel(const __nv_bfloat16* __restrict__ x, int64_t x_stride,
                                                             const Rows rows, int64_t N, int64_t K, void* y,
                                                             bool y_bf16, int64_t y_stride, float beta) {
  const int lane = threadIdx.x % 32;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (n >= N) return;
  const uint4* wr = rows.Row(n, K);
  const int64_t chunks = K / Rows::kWeightsPerChunk;  // 16-byte chunks per row
  uint4 wv[kUnroll];
  FirstWeights(wr, chunks, lane, true, wv);
  float scale = 1.f;
  if constexpr (Rows::kScaled) scale = rows.Scale(n);
  WaitForPredecessor();  // x (and y, with beta) come from the previous kernel; see kernels/cuda/launch.cuh
  LetDependentsLaunch();
  float acc[M];
#pragma unroll
  for (int m = 0; m < M; ++m) acc[m] = 0.f;
  StreamWeights(wr, chunks, lane, wv, [&](int64_t c, const uint4& wc) {
#pragma unroll
    for (int m = 0; m < M; ++m) acc[m] = DotChunk(rows, wc, x + m * x_stride, c, acc[m]);
  });
#pragma unroll
  for (int m = 0; m < M; ++m) {
    float v = acc[m];
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    if (lane == 0) small_m::Store(y, y_bf16, m * y_stride + n, small_m::Scaled<Rows>(v, scale), beta);
  }
}

// The one dispatch site of both weight types: rows -> a compile-time accumulator count.
template <class Rows>
cudaError_t Launch(const __nv_bfloat16* x, int64_t x_stride, const Rows& rows, int64_t N, int64_t K, void* y,
                   bool y_bf16, int64_t y_stride, int64_t M, float beta, cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>((N + kWarps - 1) / kWarps);
  auto launch = [&](auto kernel) {
    return LaunchDependent(kernel, blocks, kWarps * 32, stream, x, x_stride, rows, N, K, y, y_bf16, y_stride, beta);
  };
  switch (M) {
    case 1: return launch(SmallMKernel<1, Rows>);
    case 2: return launch(SmallMKernel<2, Rows>);
    case 3: return launch(SmallMKernel<3, Rows>);
    case 4: return launch(SmallMKernel<4, Rows>);
    case 5: return launch(SmallMKernel<5, Rows>);
    case 6: return launch(SmallMKernel<6, Rows>);
    case 7: return launch(SmallMKernel<7, Rows>);
    default: return launch(SmallMKernel<8, Rows>);
  }
}

// The entry points' checks (nothing launched when they fail), then the launch.
template <class Rows>
cudaError_t CheckedLaunch(const __nv_bfloat16* x, int64_t x_stride, const Rows& rows, int64_t N, int64_t K, void* y,
                          bool y_bf16, int64_t y_stride, int64_t M, float beta, cudaStream_t stream) {
  if (M == 0) return cudaSuccess;
  if (M < 0 || M > kSmallMCudaCores || !rows.Supported(x, x_stride, N, K) || N > int64_t{kWarps} * 0x7fffffff)
    return cudaErrorInvalidValue;
  return Launch(x, x_stride, rows, N, K, y, y_bf16, y_stride, M, beta, stream);
}

// LinearSmallM's choice, for every weight type: the CUDA-core kernel for one row, the tensor-core
// one from two (up to kSmallM rows).
template <class CudaCores, class TensorCores, class Weight>
cudaError_t Choose(CudaCores cuda_cores, TensorCores tensor_cores, const __nv_bfloat16* x, int64_t x_stride,
                   const Weight& w, int64_t N, int64_t K, void* y, bool y_bf16, int64_t y_stride, int64_t M,
                   float beta, cudaStream_t stream) {
  if (M > kSmallM) return cudaErrorInvalidValue;
  if (M < kSmallMTensorCoresFrom) return cuda_cores(x, x_stride, w, N, K, y, y_bf16, y_stride, M, beta, stream);
  return tensor_cores(x, x_stride, w, N, K, y, y_bf16, y_stride, M, beta, stream);
}

// LinearOneRowStaged (kernels/linear.h): the input row made in shared memory, then the weights
// streamed as above with x read from there. Chunk c of a weight row meets the staged row's chunk c
// (bf16: 8 weights) or chunks 2c and 2c + 1 (FP8, INT8: 16 weights).
__device__ __forceinline__ float DotStagedChunk(const small_m::Bf16Rows&, const uint4& wc, const uint4* x_s, int64_t c,
                                                float acc) {
  return Bf16Dot8(wc, x_s[c], acc);
}
__device__ __forceinline__ float DotStagedChunk(const small_m::Fp8Rows&, const uint4& wc, const uint4* x_s, int64_t c,
                                                float acc) {
  return Fp8Dot16(wc, x_s[2 * c], x_s[2 * c + 1], acc);
}
__device__ __forceinline__ float DotStagedChunk(const small_m::Int8Rows&, const uint4& wc, const uint4* x_s,
                                                int64_t c, float acc) {
  return Int8Dot16(wc, x_s[2 * c], x_s[2 * c + 1], acc);
}

template <OneRowInput::Kind kKind, class Rows>
__global__ void __launch_bounds__(kWarps * 32) OneRowStagedKernel(const OneRowInput in, const Rows rows, int64_t N,
                                                                   int64_t K, void* y, bool y_bf16, float beta) {
  extern __shared__ uint4 x_s[];  // K / 8 chunks of the made row
  const int lane = threadIdx.x % 32;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  const bool active = n < N;  // every thread helps make the row
  const uint4* wr = rows.Row(active ? n : 0, K);
  const int64_t chunks = K / Rows::kWeightsPerChunk;
  uint4 wv[kUnroll];
  FirstWeights(wr, chunks, lane, active, wv);
  float scale = 1.f;
  if constexpr (Rows::kScaled) scale = rows.Scale(active ? n : 0);
  WaitForPredecessor();  // the input row comes from the previous kernels; see kernels/cuda/launch.cuh
  LetDependentsLaunch();
  const void* row = in.x;
  if constexpr (kKind == OneRowInput::kRmsNorm)
    row = static_cast<const float*>(in.x) + (in.row_id ? static_cast<int64_t>(*in.row_id) : 0) * in.x_stride;
  MakeRow<kKind, kWarps * 32>(in, row, static_cast<int>(K), reinterpret_cast<__nv_bfloat16*>(x_s));
  __syncthreads();
  if (!active) return;
  float acc = 0.f;
  StreamWeights(wr, chunks, lane, wv, [&](int64_t c, const uint4& wc) { acc = DotStagedChunk(rows, wc, x_s, c, acc); });
  for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
  if (lane == 0) small_m::Store(y, y_bf16, n, small_m::Scaled<Rows>(acc, scale), beta);
}

// The one launch site of the staged kernel, both weight types.
template <class Rows>
cudaError_t LaunchOneRowStaged(const OneRowInput& in, const Rows& rows, int64_t N, int64_t K, void* y, bool y_bf16,
                               float beta, cudaStream_t stream) {
  const bool input_ok = in.x != nullptr && in.x_stride >= 0 && reinterpret_cast<uintptr_t>(in.x) % 16 == 0 &&
                        (in.kind == OneRowInput::kSwiGlu || (in.kind == OneRowInput::kRmsNorm && in.norm_w != nullptr));
  if (!input_ok || N <= 0 || K <= 0 || K % Rows::kWeightsPerChunk != 0 || K > kOneRowMaxK ||
      N > int64_t{kWarps} * 0x7fffffff)
    return cudaErrorInvalidValue;
  const unsigned blocks = static_cast<unsigned>((N + kWarps - 1) / kWarps);
  const size_t smem = static_cast<size_t>(K) * sizeof(__nv_bfloat16);
  if (in.kind == OneRowInput::kRmsNorm)
    return LaunchDependentSmem(OneRowStagedKernel<OneRowInput::kRmsNorm, Rows>, blocks, kWarps * 32, smem, stream, in,
                               rows, N, K, y, y_bf16, beta);
  return LaunchDependentSmem(OneRowStagedKernel<OneRowInput::kSwiGlu, Rows>, blocks, kWarps * 32, smem, stream, in,
                             rows, N, K, y, y_bf16, beta);
}

}  // namespace

cudaError_t LinearSmallMCudaCores(const __nv_bfloat16* x, int64_t x_stride, const __nv_bfloat16* w, int64_t N,
                                  int64_t K, void* y, bool y_bf16, int64_t y_stride, int64_t M, float beta,
                                  cudaStream_t stream) {
  return CheckedLaunch(x, x_stride, small_m::Bf16Rows{w}, N, K, y, y_bf16, y_stride, M, beta, stream);
}

cudaError_t LinearSmallMFp8CudaCores(const __nv_bfloat16* x, int64_t x_stride, const Fp8Weight& w, int64_t N,
                                     int64_t K, void* y, bool y_bf16, int64_t y_stride, int64_t M, float beta,
                                     cudaStream_t stream) {
  return CheckedLaunch(x, x_stride, small_m::Fp8Rows{w}, N, K, y, y_bf16, y_stride, M, beta, stream);
}

cudaError_t LinearSmallMInt8CudaCores(const __nv_bfloat16* x, int64_t x_stride, const Int8Weight& w, int64_t N,
                                      int64_t K, void* y, bool y_bf16, int64_t y_stride, int64_t M, float beta,
                                      cudaStream_t stream) {
  return CheckedLaunch(x, x_stride, small_m::Int8Rows{w}, N, K, y, y_bf16, y_stride, M, beta, stream);
}

cudaError_t LinearSmallMFp8(const __nv_bfloat16* x, int64_t x_stride, const Fp8Weight& w, int64_t N, int64_t K,
                            void* y, bool y_bf16, int64_t y_stride, int64_t M, float beta, cudaStream_t stream) {
  return Choose(LinearSmallMFp8CudaCores, LinearSmallMFp8TensorCores, x, x_stride, w, N, K, y, y_bf16, y_stride, M,
                beta, stream);
}

cudaError_t LinearSmallMInt8(const __nv_bfloat16* x, int64_t x_stride, const Int8Weight& w, int64_t N, int64_t K,
                             void* y, bool y_bf16, int64_t y_stride, int64_t M, float beta, cudaStream_t stream) {
  return Choose(LinearSmallMInt8CudaCores, LinearSmallMInt8TensorCores, x, x_stride, w, N, K, y, y_bf16, y_stride, M,
                beta, stream);
}

cudaError_t LinearSmallM(const __nv_bfloat16* x, int64_t x_stride, const __nv_bfloat16* w, int64_t N, int64_t K,
                         void* y, bool y_bf16, int64_t y_stride, int64_t M, float beta, cudaStream_t stream) {
  return Choose(LinearSmallMCudaCores, LinearSmallMTensorCores, x, x_stride, w, N, K, y, y_bf16, y_stride, M, beta,
                stream);
}

cudaError_t LinearOneRowStaged(const OneRowInput& in, const __nv_bfloat16* w, int64_t N, int64_t K, void* y,
                               bool y_bf16, float beta, cudaStream_t stream) {
  if (reinterpret_cast<uintptr_t>(w) % 16 != 0) return cudaErrorInvalidValue;
  return LaunchOneRowStaged(in, small_m::Bf16Rows{w}, N, K, y, y_bf16, beta, stream);
}

cudaError_t LinearOneRowStagedFp8(const OneRowInput& in, const Fp8Weight& w, int64_t N, int64_t K, void* y,
                                  bool y_bf16, float beta, cudaStream_t stream) {
  if (reinterpret_cast<uintptr_t>(w.q) % 16 != 0 || w.scale == nullptr) return cudaErrorInvalidValue;
  return LaunchOneRowStaged(in, small_m::Fp8Rows{w}, N, K, y, y_bf16, beta, stream);
}

cudaError_t LinearOneRowStagedInt8(const OneRowInput& in, const Int8Weight& w, int64_t N, int64_t K, void* y,
                                   bool y_bf16, float beta, cudaStream_t stream) {
  if (reinterpret_cast<uintptr_t>(w.q) % 16 != 0 || w.scale == nullptr) return cudaErrorInvalidValue;
  return LaunchOneRowStaged(in, small_m::Int8Rows{w}, N, K, y, y_bf16, beta, stream);
}

}  // namespace gla::cuda
