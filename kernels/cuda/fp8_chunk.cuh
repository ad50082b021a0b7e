// Eight bf16 values (a 16-byte chunk) on their way to FP8 E4M3 with a row scale: their largest
// magnitude, and their codes. The one place of the row quantizers' arithmetic (quantize_fp8.cu's
// block form, warp_rows.cuh's warp form): each value divided by the scale with IEEE division (as the
// CPU quantizer) and rounded to nearest even with saturation (cvt.rn.satfinite,
// QuantizeFp8E4M3PerRow's rounding); all zeros where the scale is 0.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include <cstdint>

namespace gla::cuda {

__device__ __forceinline__ float ChunkMaxMagnitude(const uint4& v, float mx) {
  const __nv_bfloat162* v2 = reinterpret_cast<const __nv_bfloat162*>(&v);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __bfloat1622float2(v2[i]);
    mx = fmaxf(mx, fmaxf(fabsf(f.x), fabsf(f.y)));
  }
  return mx;
}

__device__ __forceinline__ uint2 QuantizeChunkFp8(const uint4& v, float s) {
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
  return make_uint2(words[0], words[1]);
}

}  // namespace gla::cuda
