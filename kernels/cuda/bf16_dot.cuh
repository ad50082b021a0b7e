// Eight bf16 products added to an fp32 sum in a fixed order (the weight streams of the decode-sized
// projections and of the persistent decode kernel share it, so they agree on the order).
#pragma once

#include <cuda_bf16.h>
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

}  // namespace gla::cuda
