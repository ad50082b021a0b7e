// QuantizeRowsFp8 (kernels/linear_fp8.h): a projection's input rows to FP8 E4M3 with a scale per
// row, before the FP8 GEMM. One block per row: the row's largest magnitude (a max, so the order
// does not matter), then each value divided by the scale (IEEE division, as the CPU quantizer) and
// rounded to nearest even with saturation: cvt.rn.satfinite, QuantizeFp8E4M3PerRow's rounding.
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/block_reduce.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/linear_fp8.h"

namespace gla::cuda {

namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads) QuantizeRowsFp8Kernel(const __nv_bfloat16* __restrict__ x, int64_t x_stride,
                                                                   int64_t K, uint8_t* __restrict__ q, int64_t q_stride,
                                                                   float* __restrict__ scale) {
  WaitForPredecessor();  // x comes from the previous kernel; see kernels/cuda/launch.cuh
  LetDependentsLaunch();
  const int64_t m = blockIdx.x;
  const uint4* xr = reinterpret_cast<const uint4*>(x + m * x_stride);  // 8 values a chunk
  const int64_t chunks = K / 8;
  float mx = 0.f;
  for (int64_t c = threadIdx.x; c < chunks; c += kThreads) {
    const uint4 v = xr[c];
    const __nv_bfloat162* v2 = reinterpret_cast<const __nv_bfloat162*>(&v);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 f = __bfloat1622float2(v2[i]);
      mx = fmaxf(mx, fmaxf(fabsf(f.x), fabsf(f.y)));
    }
  }
  const float s = BlockMax<kThreads>(mx) / 448.0f;
  if (threadIdx.x == 0) scale[m] = s;
  uint2* qr = reinterpret_cast<uint2*>(q + m * q_stride);  // 8 FP8 values a chunk
  for (int64_t c = threadIdx.x; c < chunks; c += kThreads) {
    const uint4 v = xr[c];
    const __nv_bfloat162* v2 = reinterpret_cast<const __nv_bfloat162*>(&v);
    uint32_t words[2] = {0u, 0u};
    if (s > 0.f) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float2 f = __bfloat1622float2(v2[i]);
        const float2 r = make_float2(__fdiv_rn(f.x, s), __fdiv_rn(f.y, s));
        const uint32_t two = __nv_cvt_float2_to_fp8x2(r, __NV_SATFINITE, __NV_E4M3);  // .x in the low byte
        words[i / 2] |= two << (16 * (i % 2));
      }
    }
    qr[c] = make_uint2(words[0], words[1]);
  }
}

}  // namespace

cudaError_t QuantizeRowsFp8(const __nv_bfloat16* x, int64_t x_stride, int64_t M, int64_t K, uint8_t* q,
                            int64_t q_stride, float* scale, cudaStream_t stream) {
  if (M == 0) return cudaSuccess;
  const bool aligned = reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(q) % 8 == 0;
  if (M < 0 || M > 0x7fffffff || K <= 0 || K % 8 != 0 || x_stride % 8 != 0 || x_stride < K || q_stride < K ||
      q_stride % 8 != 0 || !aligned || scale == nullptr)
    return cudaErrorInvalidValue;
  return LaunchDependent(QuantizeRowsFp8Kernel, static_cast<unsigned>(M), kThreads, stream, x, x_stride, K, q, q_stride,
                         scale);
}

}  // namespace gla::cuda
