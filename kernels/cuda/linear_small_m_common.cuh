// What the two decode-sized projection kernels (linear_small_m.cu on CUDA cores,
// linear_small_m_mma.cu on tensor cores) share: the shapes both take, and how one output element
// is written (bf16 or fp32, with the residual y = v + beta * y).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/swiglu.cuh"

namespace gla::cuda::small_m {

// K in 16-byte chunks, rows 16-byte aligned, something to compute.
inline bool ShapeSupported(const __nv_bfloat16* x, int64_t x_stride, const __nv_bfloat16* w, int64_t N, int64_t K) {
  const bool aligned = reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0;
  return N > 0 && K > 0 && K % 8 == 0 && x_stride % 8 == 0 && aligned;
}

// 16 bytes (8 bf16) of an input row at chunk c. kSwiGlu: the row is [gate | up] (up K columns on)
// and the input is bf16(silu(gate) * up), as the SwiGLU kernel writes it.
template <bool kSwiGlu>
__device__ __forceinline__ uint4 LoadInput(const __nv_bfloat16* row, int64_t c, int64_t K) {
  const uint4 a = __ldg(reinterpret_cast<const uint4*>(row) + c);
  if constexpr (!kSwiGlu) {
    return a;
  } else {
    const uint4 b = __ldg(reinterpret_cast<const uint4*>(row + K) + c);
    const __nv_bfloat162* g = reinterpret_cast<const __nv_bfloat162*>(&a);
    const __nv_bfloat162* u = reinterpret_cast<const __nv_bfloat162*>(&b);
    uint4 out;
    __nv_bfloat162* o = reinterpret_cast<__nv_bfloat162*>(&out);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 gf = __bfloat1622float2(g[i]), uf = __bfloat1622float2(u[i]);
      o[i] = __halves2bfloat162(__float2bfloat16(SwiGluOf(gf.x, uf.x)), __float2bfloat16(SwiGluOf(gf.y, uf.y)));
    }
    return out;
  }
}

__device__ __forceinline__ void Store(void* y, bool y_bf16, int64_t index, float v, float beta) {
  if (y_bf16) {
    __nv_bfloat16* out = static_cast<__nv_bfloat16*>(y) + index;
    *out = __float2bfloat16(beta != 0.f ? v + beta * __bfloat162float(*out) : v);
  } else {
    float* out = static_cast<float*>(y) + index;
    *out = beta != 0.f ? v + beta * *out : v;
  }
}

// LinearSmallMSwiGlu's tensor-core half (linear_small_m_mma.cu), for 1 <= M <= 8; shapes checked
// by the caller.
cudaError_t TensorCoresSwiGlu(const __nv_bfloat16* gate_up, int64_t gate_up_stride, const __nv_bfloat16* w, int64_t N,
                              int64_t I, void* y, bool y_bf16, int64_t y_stride, int64_t M, float beta,
                              cudaStream_t stream);

}  // namespace gla::cuda::small_m
