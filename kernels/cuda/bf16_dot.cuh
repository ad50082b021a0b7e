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

// Two one-byte weights (the low 16 bits of `two`) widened exactly to fp32: FP8 E4M3 (through half
// precision, the one FP8 conversion sm_90 has in hardware) or INT8.
__device__ __forceinline__ float2 Fp8x2ToFloat2(unsigned two) {
  const __half2_raw raw = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(two & 0xffffu), __NV_E4M3);
  return __half22float2(__half2(raw));
}
__device__ __forceinline__ float2 Int8x2ToFloat2(unsigned two) {
  return make_float2(static_cast<float>(static_cast<int8_t>(two & 0xffu)),
                     static_cast<float>(static_cast<int8_t>((two >> 8) & 0xffu)));
}

// acc + w[0] x[0] + ... + w[15] x[15], one fmaf at a time: w 16 one-byte weights (16 bytes, widened
// by Widen), x 16 bf16 (x_lo the first 8, x_hi the next).
template <float2 (*Widen)(unsigned)>
__device__ __forceinline__ float ByteDot16(const uint4& w, const uint4& x_lo, const uint4& x_hi, float acc) {
  const unsigned words[4] = {w.x, w.y, w.z, w.w};
  const __nv_bfloat162* xl = reinterpret_cast<const __nv_bfloat162*>(&x_lo);
  const __nv_bfloat162* xh = reinterpret_cast<const __nv_bfloat162*>(&x_hi);
#pragma unroll
  for (int i = 0; i < 4; ++i) {  // word i: weights 4i ... 4i + 3
    const __nv_bfloat162* xp = (i < 2 ? xl : xh) + 2 * (i % 2);
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const float2 a = Widen(words[i] >> (16 * half)), b = __bfloat1622float2(xp[half]);
      acc = fmaf(a.x, b.x, acc);
      acc = fmaf(a.y, b.y, acc);
    }
  }
  return acc;
}
__device__ __forceinline__ float Fp8Dot16(const uint4& w, const uint4& x_lo, const uint4& x_hi, float acc) {
  return ByteDot16<Fp8x2ToFloat2>(w, x_lo, x_hi, acc);
}
__device__ __forceinline__ float Int8Dot16(const uint4& w, const uint4& x_lo, const uint4& x_hi, float acc) {
  return ByteDot16<Int8x2ToFloat2>(w, x_lo, x_hi, acc);
}

}  // namespace gla::cuda
