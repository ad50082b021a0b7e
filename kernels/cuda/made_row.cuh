// A projection's input row made inside the kernel that reads it, from the previous kernel's output
// (kernels/linear.h's OneRowInput), into shared memory as bf16: the kernels that do this
// (LinearOneRowStaged, QuantizeMadeRowsFp8) save the separate norm or activation kernel and its bf16
// round trip. Each maker uses the threads, reduction order and arithmetic of the kernel it stands in
// for (norm.cu's RmsNormKernel and RmsNormSwishGateKernel, activations.cu's SwiGLU kernels), so the
// row has the same bits; their tests hold them to it.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "kernels/cuda/block_reduce.cuh"
#include "kernels/linear.h"

namespace gla::cuda {

// kRmsNorm: `row` is K fp32 values, normed with in.norm_w and in.eps (RmsNormKernel: 256 threads).
// kSwiGlu: `row` is bf16 [gate K | up K]. Called by all THREADS threads; xs holds K values after a
// __syncthreads the caller makes.
template <OneRowInput::Kind kKind, int THREADS>
__device__ __forceinline__ void MakeRow(const OneRowInput& in, const void* row, int K, __nv_bfloat16* xs) {
  if constexpr (kKind == OneRowInput::kRmsNorm) {
    const float* xr = static_cast<const float*>(row);
    float ss = 0.f;
    for (int i = threadIdx.x; i < K; i += THREADS) ss = SquareAdd(xr[i], ss);
    const float inv = rsqrtf(BlockSum<THREADS>(ss) / K + in.eps);
    for (int i = threadIdx.x; i < K; i += THREADS) xs[i] = __float2bfloat16(xr[i] * inv * in.norm_w[i]);
  } else {
    static_assert(kKind == OneRowInput::kSwiGlu, "kGatedHeadNorm has its own maker");
    const __nv_bfloat16* g = static_cast<const __nv_bfloat16*>(row);
    for (int i = threadIdx.x; i < K; i += THREADS) {
      const float a = __bfloat162float(g[i]), u = __bfloat162float(g[i + K]);
      xs[i] = __float2bfloat16(a / (1.f + __expf(-a)) * u);
    }
  }
}

// kGatedHeadNorm: `row` is fp32 o of in.heads heads of in.head_dim values, each normed with
// in.norm_w and in.eps and multiplied by swish of row `m` of in.gate where there is one; the heads in
// turn, each as RmsNormSwishGateKernel's block of 128 threads makes it (THREADS must be 128).
template <int THREADS>
__device__ __forceinline__ void MakeGatedHeadNormRow(const OneRowInput& in, const float* row, int64_t m,
                                                     __nv_bfloat16* xs) {
  static_assert(THREADS == 128, "RmsNormSwishGateKernel's block");
  const int dv = in.head_dim;
  for (int h = 0; h < in.heads; ++h) {
    const float* oh = row + static_cast<int64_t>(h) * dv;
    float ss = 0.f;
    for (int i = threadIdx.x; i < dv; i += THREADS) ss = SquareAdd(oh[i], ss);
    const float inv = rsqrtf(BlockSum<THREADS>(ss) / dv + in.eps);
    for (int i = threadIdx.x; i < dv; i += THREADS) {
      float val = oh[i] * inv * in.norm_w[i];
      if (in.gate != nullptr) {
        const float z = in.gate[m * in.gate_stride + static_cast<int64_t>(h) * dv + i];
        val *= z / (1.f + __expf(-z));
      }
      xs[h * dv + i] = __float2bfloat16(val);
    }
  }
}

}  // namespace gla::cuda
