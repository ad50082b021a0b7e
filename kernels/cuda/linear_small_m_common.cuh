// What the two decode-sized projection kernels (linear_small_m.cu on CUDA cores,
// linear_small_m_mma.cu on tensor cores) share: the shapes both take, their weight rows (bf16, or
// FP8 with a scale per row), and how one output element is written (bf16 or fp32, with the residual
// y = v + beta * y).
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "kernels/linear.h"

namespace gla::cuda::small_m {

// K in 16-byte chunks, rows 16-byte aligned, something to compute.
inline bool ShapeSupported(const __nv_bfloat16* x, int64_t x_stride, const __nv_bfloat16* w, int64_t N, int64_t K) {
  const bool aligned = reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0;
  return N > 0 && K > 0 && K % 8 == 0 && x_stride % 8 == 0 && aligned;
}

// The same for one-byte weights (kernels/linear.h's Fp8Weight, Int8Weight): K in 16-weight chunks,
// scales given.
inline bool ByteShapeSupported(const __nv_bfloat16* x, int64_t x_stride, const void* q, const float* scale, int64_t N,
                               int64_t K) {
  const bool aligned = reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(q) % 16 == 0;
  return N > 0 && K > 0 && K % 16 == 0 && x_stride % 8 == 0 && aligned && scale != nullptr;
}

// A kernel's weight rows as it streams them, in 16-byte chunks: bf16 (8 weights a chunk), or FP8
// E4M3 or INT8 (16 weights a chunk) whose row sums are scaled once by the row's scale. The kernels
// are templates over these; each multiplies a chunk with its inputs through an overload per type.
// Supported(): the shapes the entry points take (checked on the host before any launch).
struct Bf16Rows {
  const __nv_bfloat16* w;
  static constexpr int kWeightsPerChunk = 8;
  static constexpr bool kScaled = false;
  __device__ __forceinline__ const uint4* Row(int64_t n, int64_t K) const {
    return reinterpret_cast<const uint4*>(w + n * K);
  }
  __device__ __forceinline__ float Scale(int64_t) const { return 1.f; }
  bool Supported(const __nv_bfloat16* x, int64_t x_stride, int64_t N, int64_t K) const {
    return ShapeSupported(x, x_stride, w, N, K);
  }
  bool Present() const { return w != nullptr; }
};

template <class Weight>  // Fp8Weight or Int8Weight: q [N, K] one byte a weight, scale [N]
struct ByteRows {
  Weight w;
  static constexpr int kWeightsPerChunk = 16;
  static constexpr bool kScaled = true;
  __device__ __forceinline__ const uint4* Row(int64_t n, int64_t K) const {
    return reinterpret_cast<const uint4*>(w.q + n * K);
  }
  __device__ __forceinline__ float Scale(int64_t n) const { return __ldg(w.scale + n); }
  bool Supported(const __nv_bfloat16* x, int64_t x_stride, int64_t N, int64_t K) const {
    return ByteShapeSupported(x, x_stride, w.q, w.scale, N, K);
  }
  bool Present() const { return w.q != nullptr && w.scale != nullptr; }
};
using Fp8Rows = ByteRows<Fp8Weight>;
using Int8Rows = ByteRows<Int8Weight>;

// An output's sum as stored: scaled by its row's scale where the rows carry one.
template <class Rows>
__device__ __forceinline__ float Scaled(float v, float scale) {
  if constexpr (Rows::kScaled) return scale * v;
  return v;
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

}  // namespace gla::cuda::small_m
