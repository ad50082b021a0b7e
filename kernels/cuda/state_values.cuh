// Loads and stores of state values in a CudaStateSlots pool (kernels/state_slots.h): fp32 as they
// are, bf16 widened to fp32 on load and rounded to nearest-even on store. Indices count values;
// the 4-value forms need i % 4 == 0 (16-byte fp32 / 8-byte bf16 accesses).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "kernels/state_slots.h"

namespace gla::cuda {

// 4 bf16 values (8 bytes, the lower-addressed first) widened, and 4 floats rounded to them.
__device__ __forceinline__ float4 Bf16x4ToFloat4(uint2 raw) {
  return make_float4(__uint_as_float(raw.x << 16), __uint_as_float(raw.x & 0xffff0000u), __uint_as_float(raw.y << 16),
                     __uint_as_float(raw.y & 0xffff0000u));
}

__device__ __forceinline__ uint2 Float4ToBf16x4(float4 v) {
  const __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y), hi = __floats2bfloat162_rn(v.z, v.w);
  return make_uint2(*reinterpret_cast<const unsigned*>(&lo), *reinterpret_cast<const unsigned*>(&hi));
}

// Cache policy of a state access: kDefault, or kStreaming (__ldcs / __stcs: evict first, for a
// state touched once per step while a weight stream wants the cache).
enum class StateCache { kDefault, kStreaming };

template <StateCache kCache = StateCache::kDefault>
__device__ __forceinline__ float4 LoadState4(const CudaStateSlots& s, int64_t i) {
  if (s.bf16) {
    const uint2* p = reinterpret_cast<const uint2*>(static_cast<const __nv_bfloat16*>(s.base) + i);
    return Bf16x4ToFloat4(kCache == StateCache::kStreaming ? __ldcs(p) : *p);
  }
  const float4* p = reinterpret_cast<const float4*>(static_cast<const float*>(s.base) + i);
  return kCache == StateCache::kStreaming ? __ldcs(p) : *p;
}

template <StateCache kCache = StateCache::kDefault>
__device__ __forceinline__ void StoreState4(const CudaStateSlots& s, int64_t i, float4 v) {
  if (s.bf16) {
    uint2* p = reinterpret_cast<uint2*>(static_cast<__nv_bfloat16*>(s.base) + i);
    const uint2 r = Float4ToBf16x4(v);
    if constexpr (kCache == StateCache::kStreaming) __stcs(p, r);
    else *p = r;
    return;
  }
  float4* p = reinterpret_cast<float4*>(static_cast<float*>(s.base) + i);
  if constexpr (kCache == StateCache::kStreaming) __stcs(p, v);
  else *p = v;
}

__device__ __forceinline__ float LoadState(const CudaStateSlots& s, int64_t i) {
  return s.bf16 ? __bfloat162float(static_cast<const __nv_bfloat16*>(s.base)[i]) : static_cast<const float*>(s.base)[i];
}

__device__ __forceinline__ void StoreState(const CudaStateSlots& s, int64_t i, float v) {
  if (s.bf16) static_cast<__nv_bfloat16*>(s.base)[i] = __float2bfloat16_rn(v);
  else static_cast<float*>(s.base)[i] = v;
}

}  // namespace gla::cuda
