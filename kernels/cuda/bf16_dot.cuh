// Eight bf16 products added to an fp32 sum in a fixed order (the weight streams of the decode-sized
// projections and of the persistent decode kernel share it, so they agree on the order); and the
// same for sixteen FP8 or INT8 weights against bf16 inputs.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

namespace gla::cuda {

// acc + w[0] x[0] + ... + w[7] x[7], one fmaf at a time: w and x are 8 bf16 each (16 bytes).
__device__ __forceinline__ float Bf16Dot8(const uint4& w, const uint4& x, float acc) {
  const __nv_bfloat162* w2 = reinterpret_cast<const __nv_bfloat162*>(&w);
  const __nv_bfloat162* x2 = reinterpret_cast<const __nv_bfloat162*>(&x);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 a = __bfloat1622float2(w2[i]), b = __bfloat1622float2(x2[i]);
    acc = fmaf(a.x, b.x, acc);
    acc = fmaf(a.y, b.y, acc);
  }
  return acc;
}

// acc + w[0] x[0] + ... + w[15] x[15], one fmaf at a time: w 16 FP8 E4M3 values (16 bytes, widened
// exactly through half precision), x 16 bf16 (x_lo the first 8, x_hi the next).
__device__ __forceinline__ float Fp8Dot16(const uint4& w, const uint4& x_lo, const uint4& x_hi, float acc) {
  const unsigned words[4] = {w.x, w.y, w.z, w.w};
  const __nv_bfloat162* xl = reinterpret_cast<const __nv_bfloat162*>(&x_lo);
  const __nv_bfloat162* xh = reinterpret_cast<const __nv_bfloat162*>(&x_hi);
#pragma unroll
  for (int i = 0; i < 4; ++i) {  // word i: weights 4i ... 4i + 3
    const __nv_bfloat162* xp = (i < 2 ? xl : xh) + 2 * (i % 2);
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const __half2_raw raw = __nv_cvt_fp8x2_to_halfraw2(
          static_cast<__nv_fp8x2_storage_t>((words[i] >> (16 * half)) & 0xffffu), __NV_E4M3);
      const float2 a = __half22float2(__half2(raw)), b = __bfloat1622float2(xp[half]);
      acc = fmaf(a.x, b.x, acc);
      acc = fmaf(a.y, b.y, acc);
    }
  }
  return acc;
}

// The same for 16 INT8 weights (widened exactly to fp32).
__device__ __forceinline__ float Int8Dot16(const uint4& w, const uint4& x_lo, const uint4& x_hi, float acc) {
  const unsigned words[4] = {w.x, w.y, w.z, w.w};
  const __nv_bfloat162* xl = reinterpret_cast<const __nv_bfloat162*>(&x_lo);
  const __nv_bfloat162* xh = reinterpret_cast<const __nv_bfloat162*>(&x_hi);
#pragma unroll
  for (int i = 0; i < 4; ++i) {  // word i: weights 4i ... 4i + 3
    const __nv_bfloat162* xp = (i < 2 ? xl : xh) + 2 * (i % 2);
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const float a0 = static_cast<float>(static_cast<int8_t>((words[i] >> (16 * half)) & 0xffu));
      const float a1 = static_cast<float>(static_cast<int8_t>((words[i] >> (16 * half + 8)) & 0xffu));
      const float2 b = __bfloat1622float2(xp[half]);
      acc = fmaf(a0, b.x, acc);
      acc = fmaf(a1, b.y, acc);
    }
  }
  return acc;
}

}  // namespace gla::cuda
