// QuantizeRowsFp8 and QuantizeMadeRowsFp8 (kernels/linear_fp8.h): a projection's input rows to FP8
// E4M3 with a scale per row, before the FP8 GEMM. One block per row: the row's largest magnitude (a max, so the order
// does not matter), then each value divided by the scale (IEEE division, as the CPU quantizer) and
// rounded to nearest even with saturation: cvt.rn.satfinite, QuantizeFp8E4M3PerRow's rounding.
// Many rows (a prefill) run a warp a row instead (kernels/cuda/warp_rows.cuh: the same bits;
// RowForm in kernels/row_form.h).
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/block_reduce.cuh"
#include "kernels/cuda/fp8_chunk.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/made_row.cuh"
#include "kernels/cuda/warp_rows.cuh"
#include "kernels/linear_fp8.h"

namespace gla::cuda {

namespace {

constexpr int kThreads = 256;

// One row of K values (8 bf16 a chunk, in global or shared memory) to FP8 with its scale: the row's
// largest magnitude (a max: the same whatever the thread count), then each value divided by the
// scale and rounded. Called by all THREADS threads of the block.
template <int THREADS = kThreads>
__device__ __forceinline__ void QuantizeRow(const uint4* xr, int64_t K, uint2* qr, float* scale_out) {
  const int64_t chunks = K / 8;
  float mx = 0.f;
  for (int64_t c = threadIdx.x; c < chunks; c += THREADS) mx = ChunkMaxMagnitude(xr[c], mx);
  const float s = BlockMax<THREADS>(mx) / 448.0f;
  if (threadIdx.x == 0) *scale_out = s;
  for (int64_t c = threadIdx.x; c < chunks; c += THREADS) qr[c] = QuantizeChunkFp8(xr[c], s);  // 8 codes a chunk
}

__global__ void __launch_bounds__(kThreads) QuantizeRowsFp8Kernel(const __nv_bfloat16* __restrict__ x, int64_t x_stride,
                                                                   int64_t K, uint8_t* __restrict__ q, int64_t q_stride,
                                                                   float* __restrict__ scale) {
  WaitForPredecessor();  // x comes from the previous kernel; see kernels/cuda/launch.cuh
  LetDependentsLaunch();
  const int64_t m = blockIdx.x;
  QuantizeRow(reinterpret_cast<const uint4*>(x + m * x_stride), K, reinterpret_cast<uint2*>(q + m * q_stride),
              scale + m);
}

// QuantizeMadeRowsFp8: row m made in shared memory (made_row.cuh: the RMSNorm of fp32 rows or the
// SwiGLU of bf16 [gate | up] rows, the same bits as cuda::RmsNorm / cuda::SwiGlu), then quantized as
// above.
template <OneRowInput::Kind kKind>
__global__ void __launch_bounds__(kThreads) QuantizeMadeRowsFp8Kernel(const OneRowInput in, int64_t K,
                                                                       uint8_t* __restrict__ q, int64_t q_stride,
                                                                       float* __restrict__ scale) {
  extern __shared__ uint4 x_s[];  // K / 8 chunks of the made row
  WaitForPredecessor();  // the rows come from the previous kernels
  LetDependentsLaunch();
  const int64_t m = blockIdx.x;
  const void* row = kKind == OneRowInput::kRmsNorm
                        ? static_cast<const void*>(static_cast<const float*>(in.x) + m * in.x_stride)
                        : static_cast<const void*>(static_cast<const __nv_bfloat16*>(in.x) + m * in.x_stride);
  MakeRow<kKind, kThreads>(in, row, static_cast<int>(K), reinterpret_cast<__nv_bfloat16*>(x_s));
  __syncthreads();
  QuantizeRow(x_s, K, reinterpret_cast<uint2*>(q + m * q_stride), scale + m);
}

// The gated head norm's rows: norm.cu's RmsNormSwishGateKernel runs a block of kGateThreads per
// (row, head); here one block of as many threads makes a row's heads in turn (made_row.cuh), then
// quantizes the row.
constexpr int kGateThreads = 128;
__global__ void __launch_bounds__(kGateThreads) QuantizeGatedHeadNormRowsFp8Kernel(const OneRowInput in, int64_t K,
                                                                                  uint8_t* __restrict__ q,
                                                                                  int64_t q_stride,
                                                                                  float* __restrict__ scale) {
  extern __shared__ uint4 x_s[];  // K / 8 chunks of the made row
  WaitForPredecessor();           // the rows come from the previous kernels
  LetDependentsLaunch();
  const int64_t m = blockIdx.x;
  MakeGatedHeadNormRow<kGateThreads>(in, static_cast<const float*>(in.x) + m * in.x_stride, m,
                                     reinterpret_cast<__nv_bfloat16*>(x_s));
  __syncthreads();
  QuantizeRow<kGateThreads>(x_s, K, reinterpret_cast<uint2*>(q + m * q_stride), scale + m);
}

// The warp forms: a warp a row, the made rows each in its warp's slice of shared memory; as many
// warps a block (at most kMaxWarpRows) as leave the slices within the default 48 KB.
constexpr int kMaxWarpRows = 8;

int WarpRowsFor(int64_t made_K) {
  if (made_K == 0) return kMaxWarpRows;  // nothing made: no shared memory
  const int64_t fit = (48 * 1024) / (made_K * static_cast<int64_t>(sizeof(__nv_bfloat16)));
  return static_cast<int>(fit < 1 ? 1 : fit > kMaxWarpRows ? kMaxWarpRows : fit);
}

__device__ __forceinline__ int64_t WarpRow() {
  return static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
}

__global__ void __launch_bounds__(kMaxWarpRows * 32) QuantizeRowsFp8WarpKernel(const __nv_bfloat16* __restrict__ x,
                                                                                int64_t x_stride, int64_t M, int64_t K,
                                                                                uint8_t* __restrict__ q,
                                                                                int64_t q_stride,
                                                                                float* __restrict__ scale) {
  WaitForPredecessor();  // x comes from the previous kernel; see kernels/cuda/launch.cuh
  LetDependentsLaunch();
  const int64_t m = WarpRow();
  if (m >= M) return;  // a whole warp: no barrier below
  const uint4* xr = reinterpret_cast<const uint4*>(x + m * x_stride);
  warp_rows::QuantizeWithMax(xr, K, warp_rows::MaxMagnitude(xr, K), reinterpret_cast<uint2*>(q + m * q_stride),
                             scale + m);
}

// QuantizeMadeRowsFp8's warp form: the row made as the block form makes it (the same values), kept
// in the warp's slice as bf16 with its largest magnitude, then quantized.
template <OneRowInput::Kind kKind>
__global__ void __launch_bounds__(kMaxWarpRows * 32) QuantizeMadeRowsFp8WarpKernel(const OneRowInput in, int64_t M,
                                                                                    int64_t K, uint8_t* __restrict__ q,
                                                                                    int64_t q_stride,
                                                                                    float* __restrict__ scale) {
  extern __shared__ uint4 rows_s[];  // K / 8 chunks a warp
  WaitForPredecessor();              // the rows come from the previous kernels
  LetDependentsLaunch();
  const int64_t m = WarpRow();
  if (m >= M) return;  // a whole warp: __syncwarp only below
  uint4* row_s = rows_s + (threadIdx.x / 32) * (K / 8);
  __nv_bfloat16* xs = reinterpret_cast<__nv_bfloat16*>(row_s);
  float mx = 0.f;
  auto keep = [&](int64_t i, float v) {
    const __nv_bfloat16 b = __float2bfloat16(v);
    xs[i] = b;
    mx = fmaxf(mx, fabsf(__bfloat162float(b)));
  };
  if constexpr (kKind == OneRowInput::kRmsNorm) {
    warp_rows::RmsNormRow(static_cast<const float*>(in.x) + m * in.x_stride, in.norm_w, static_cast<int>(K), in.eps,
                          keep);
  } else if constexpr (kKind == OneRowInput::kSwiGlu) {
    const __nv_bfloat16* g = static_cast<const __nv_bfloat16*>(in.x) + m * in.x_stride;
    for (int64_t i = threadIdx.x & 31; i < K; i += 32) {  // made_row.cuh's SwiGLU value
      const float a = __bfloat162float(g[i]), u = __bfloat162float(g[i + K]);
      keep(i, a / (1.f + __expf(-a)) * u);
    }
  } else {
    const int dv = in.head_dim;
    for (int h = 0; h < in.heads; ++h) {
      const int64_t col = static_cast<int64_t>(h) * dv;
      warp_rows::GatedHeadNormHead(static_cast<const float*>(in.x) + m * in.x_stride + col,
                                   in.gate != nullptr ? in.gate + m * in.gate_stride + col : nullptr, in.norm_w, dv,
                                   in.eps, [&](int i, float v) { keep(col + i, v); });
    }
  }
  __syncwarp();
  warp_rows::QuantizeWithMax(row_s, K, warp_rows::WarpMax(mx), reinterpret_cast<uint2*>(q + m * q_stride), scale + m);
}

template <typename... KernelArgs, typename... Args>
cudaError_t LaunchWarpRows(void (*kernel)(KernelArgs...), int64_t M, int64_t made_K, cudaStream_t stream,
                           const Args&... args) {
  const int warps = WarpRowsFor(made_K);
  const size_t smem = static_cast<size_t>(warps) * made_K * sizeof(__nv_bfloat16);
  return LaunchDependentSmem(kernel, static_cast<unsigned>((M + warps - 1) / warps), warps * 32, smem, stream,
                             args...);
}

}  // namespace

cudaError_t QuantizeRowsFp8(const __nv_bfloat16* x, int64_t x_stride, int64_t M, int64_t K, uint8_t* q,
                            int64_t q_stride, float* scale, cudaStream_t stream, RowForm form) {
  if (M == 0) return cudaSuccess;
  const bool aligned = reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(q) % 8 == 0;
  if (M < 0 || M > 0x7fffffff || K <= 0 || K % 8 != 0 || x_stride % 8 != 0 || x_stride < K || q_stride < K ||
      q_stride % 8 != 0 || !aligned || scale == nullptr)
    return cudaErrorInvalidValue;
  if (form == RowForm::kWarpPerRow)
    return LaunchWarpRows(QuantizeRowsFp8WarpKernel, M, 0, stream, x, x_stride, M, K, q, q_stride, scale);
  return LaunchDependent(QuantizeRowsFp8Kernel, static_cast<unsigned>(M), kThreads, stream, x, x_stride, K, q, q_stride,
                         scale);
}

cudaError_t QuantizeMadeRowsFp8(const OneRowInput& in, int64_t M, int64_t K, uint8_t* q, int64_t q_stride, float* scale,
                                cudaStream_t stream, RowForm form) {
  if (M == 0) return cudaSuccess;
  const bool rms = in.kind == OneRowInput::kRmsNorm, gated = in.kind == OneRowInput::kGatedHeadNorm;
  bool input_ok = in.x != nullptr && reinterpret_cast<uintptr_t>(in.x) % 16 == 0 && in.row_id == nullptr;
  if (rms) input_ok = input_ok && in.norm_w != nullptr && in.x_stride >= K;
  else if (gated)
    input_ok = input_ok && in.norm_w != nullptr && in.x_stride >= K && in.heads > 0 && in.head_dim > 0 &&
               int64_t{in.heads} * in.head_dim == K && (in.gate == nullptr || in.gate_stride >= K);
  else input_ok = input_ok && in.kind == OneRowInput::kSwiGlu && in.x_stride >= 2 * K;
  if (!input_ok || M < 0 || M > 0x7fffffff || K <= 0 || K % 8 != 0 || K > kOneRowMaxK || q_stride < K ||
      q_stride % 8 != 0 || reinterpret_cast<uintptr_t>(q) % 8 != 0 || scale == nullptr)
    return cudaErrorInvalidValue;
  if (form == RowForm::kWarpPerRow) {
    if (gated)
      return LaunchWarpRows(QuantizeMadeRowsFp8WarpKernel<OneRowInput::kGatedHeadNorm>, M, K, stream, in, M, K, q,
                            q_stride, scale);
    if (rms)
      return LaunchWarpRows(QuantizeMadeRowsFp8WarpKernel<OneRowInput::kRmsNorm>, M, K, stream, in, M, K, q, q_stride,
                            scale);
    return LaunchWarpRows(QuantizeMadeRowsFp8WarpKernel<OneRowInput::kSwiGlu>, M, K, stream, in, M, K, q, q_stride,
                          scale);
  }
  const size_t smem = static_cast<size_t>(K) * sizeof(__nv_bfloat16);
  if (gated)
    return LaunchDependentSmem(QuantizeGatedHeadNormRowsFp8Kernel, static_cast<unsigned>(M), kGateThreads, smem, stream,
                               in, K, q, q_stride, scale);
  if (rms)
    return LaunchDependentSmem(QuantizeMadeRowsFp8Kernel<OneRowInput::kRmsNorm>, static_cast<unsigned>(M), kThreads,
                               smem, stream, in, K, q, q_stride, scale);
  return LaunchDependentSmem(QuantizeMadeRowsFp8Kernel<OneRowInput::kSwiGlu>, static_cast<unsigned>(M), kThreads, smem,
                             stream, in, K, q, q_stride, scale);
}

}  // namespace gla::cuda
