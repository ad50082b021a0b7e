// Shared by the tensor-core chunkwise GLA kernels (gla_prefill_chunk.cu: forward; gla_backward_chunk.cu:
// backward): the chunk geometry, the sm_80+ PTX wrappers (cp.async, ldmatrix, bf16 mma.sync), the
// packed-sequence unit numbering, and the forward's prep kernel (gated bf16 q/k, chunk decays and the
// intra-chunk matrix A), which the backward needs unchanged and so launches through LaunchChunkPrep.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "kernels/gla.h"

namespace gla::cuda::chunk {

constexpr int kChunk = 64;  // tokens per chunk (the state is carried between chunks)
constexpr int kSub = 16;    // tokens per sub-chunk (= the mma k / m granularity)

using bf16 = __nv_bfloat16;

__device__ __forceinline__ uint32_t SmemAddr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte async copy; when !valid nothing is read and the 16 bytes are zero-filled.
__device__ __forceinline__ void CpAsync16(void* smem, const void* gmem, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(SmemAddr(smem)), "l"(gmem),
               "r"(valid ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void CpAsyncWait1() { CpAsyncWait<1>(); }

__device__ __forceinline__ void LdMatrixX4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SmemAddr(p)));
}
__device__ __forceinline__ void LdMatrixX4Trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SmemAddr(p)));
}

// D += A B, m16n8k16, bf16 in, fp32 accumulate.
__device__ __forceinline__ void Mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t PackBf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x (low half) = lo
  return *reinterpret_cast<const uint32_t*>(&v);
}

// Units (chunks or segments) of `unit` tokens are numbered per sequence from
// base(n) = cu[n] / unit + n, which is strictly increasing in n and leaves room for
// ceil(len_n / unit) ids: ids stay below total / unit + num_seqs. Finds (n, index) of `id`;
// false when the id falls in a gap.
__device__ __forceinline__ bool FindUnit(const int32_t* cu, int num_seqs, int64_t id, int64_t unit, int* n_out,
                                         int64_t* index_out) {
  int lo = 0, hi = num_seqs - 1;
  while (lo < hi) {  // largest n with base(n) <= id
    const int mid = (lo + hi + 1) >> 1;
    if (cu[mid] / unit + mid <= id) lo = mid;
    else hi = mid - 1;
  }
  const int64_t index = id - (cu[lo] / unit + lo);
  if (index < 0 || index * unit >= int64_t{cu[lo + 1]} - cu[lo]) return false;
  *n_out = lo;
  *index_out = index;
  return true;
}

// Where the prep kernel writes (see gla_prefill_chunk.cu): rows indexed by packed token, decays by
// chunk id (FindUnit numbering with unit kChunk).
struct PrepOut {
  bf16* qg;      // [tokens, H, dk]    scale * q * exp(b)             (b: inclusive cumsum of g in the chunk)
  bf16* kg;      // [tokens, Hkv, dk]  k * exp(b_last - b)
  bf16* A;       // [tokens, H, 64]    intra-chunk matrix, scale included, zero above the diagonal
  float* decay;  // [chunk ids, Hkv, dk]  exp(b_last)
};

// Where the prep's outputs sit at the start of a workspace, for `total` packed tokens: the forward
// and the backward plans both begin with this layout (so a training step's backward can reuse the
// forward's prep, GlaBackwardCudaParams::reuse_forward_prep). Offsets are 256-byte aligned.
struct PrepLayout {
  int64_t chunk_ids = 0;
  size_t qg = 0, kg = 0, A = 0, decay = 0, end = 0;
};
// The head dimensions the tensor-core chunk kernels take (their 64-column tiles), and the one place
// a runtime dk becomes a template argument: fn(std::integral_constant<int, DK>{}) for dk in {64,
// 128, 256}; cudaErrorInvalidValue for any other.
inline bool ChunkHeadDimSupported(int dk) { return dk == 64 || dk == 128 || dk == 256; }
template <typename Fn>
cudaError_t DispatchHeadDim(int dk, Fn&& fn) {
  switch (dk) {
    case 64: return fn(std::integral_constant<int, 64>{});
    case 128: return fn(std::integral_constant<int, 128>{});
    case 256: return fn(std::integral_constant<int, 256>{});
    default: return cudaErrorInvalidValue;
  }
}

inline size_t Align256(size_t bytes) { return (bytes + 255) / 256 * 256; }

// Rows the kernels read and write with 16-byte accesses: a 16-byte aligned base and a stride (in
// floats) that keeps every row so.
inline bool RowsAligned16(const void* ptr, int64_t stride) {
  return reinterpret_cast<uintptr_t>(ptr) % 16 == 0 && stride % 4 == 0;
}
inline PrepLayout MakePrepLayout(int H, int Hkv, int dk, int64_t total, int num_seqs) {
  PrepLayout l;
  total = total > 0 ? total : 0;
  l.chunk_ids = total / kChunk + (num_seqs > 1 ? num_seqs : 1);
  const size_t T = static_cast<size_t>(total), h = H > 0 ? H : 0, hkv = Hkv > 0 ? Hkv : 0, d = dk > 0 ? dk : 0;
  l.qg = 0;
  l.kg = l.qg + Align256(T * h * d * 2);
  l.A = l.kg + Align256(T * hkv * d * 2);
  l.decay = l.A + Align256(T * h * kChunk * 2);
  l.end = l.decay + Align256(static_cast<size_t>(l.chunk_ids) * hkv * d * 4);
  return l;
}

// Launches the forward's prep kernel over chunk ids [0, chunk_ids) for p's q/k/g, cu_seqlens, H,
// Hkv, dk (64, 128 or 256: the caller validates) and scale. Rows past a sequence's end are not
// written. Defined in gla_prefill_chunk.cu.
cudaError_t LaunchChunkPrep(const GlaPrefillCudaParams& p, const PrepOut& out, int64_t chunk_ids,
                            cudaStream_t stream);

}  // namespace gla::cuda::chunk
