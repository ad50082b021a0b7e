// What the tensor-core projections (linear_small_m_mma.cu, linear_medium_m.cu) share: one
// mma.sync m16n8k16 with bf16 operands and fp32 sums, and the exact widening of two one-byte
// weights to a bf16 pair for it; one m16n8k32 with FP8 (E4M3) operands for FP8 inputs.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace gla::cuda {

// c += A B: A 16 x 16 (a0: row g, k 2t..2t+1; a1: row g + 8, the same k; a2, a3: k + 8), B 16 x 8
// (b0: k 2t..2t+1, column g; b1: k + 8), c: (g, 2t), (g, 2t + 1), (g + 8, 2t), (g + 8, 2t + 1), where
// g = lane / 4 and t = lane % 4. A dot product does not see a permutation of k applied to both.
__device__ __forceinline__ void MmaBf16(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                        uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// c += A B on FP8 tensor cores: A 16 x 32 E4M3 (a0: row g, k 4t..4t+3; a1: row g + 8; a2, a3: k +
// 16), B 32 x 8 E4M3 (b0: k 4t..4t+3, column g; b1: k + 16), fp32 sums laid out as MmaBf16's.
__device__ __forceinline__ void MmaE4m3(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                        uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// Two one-byte weights (the low 16 bits of `two`) as a bf16 pair, exactly (E4M3's 3 mantissa bits
// and exponent range fit bf16, and so does INT8): widened to fp32 by Widen (bf16_dot.cuh's
// Fp8x2ToFloat2 / Int8x2ToFloat2, as the CUDA-core kernels widen them), then packed.
template <float2 (*Widen)(unsigned)>
__device__ __forceinline__ uint32_t BytePairToBf16x2(uint32_t two) {
  const float2 f = Widen(two);
  const __nv_bfloat162 b = __floats2bfloat162_rn(f.x, f.y);
  return *reinterpret_cast<const uint32_t*>(&b);
}

// 16 one-byte weights (16 bytes) as two bf16 chunks of 8: lo = weights 0-7, hi = weights 8-15
// (Widen: BytePairToBf16x2 of the format's widening).
template <uint32_t (*Widen)(uint32_t)>
__device__ __forceinline__ void ByteChunkToBf16(const uint4& w, uint4& lo, uint4& hi) {
  lo = make_uint4(Widen(w.x), Widen(w.x >> 16), Widen(w.y), Widen(w.y >> 16));
  hi = make_uint4(Widen(w.z), Widen(w.z >> 16), Widen(w.w), Widen(w.w >> 16));
}

}  // namespace gla::cuda
