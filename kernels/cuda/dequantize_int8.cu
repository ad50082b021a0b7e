// DequantizeInt8ToBf16 (kernels/linear.h): INT8 rows with a scale per row to bf16, for the bf16 GEMM
// that steps larger than decode-sized run with `--weights int8`. Each thread makes 16 values: one
// 16-byte load of codes, two 16-byte stores; bf16(scale * q) rounded to nearest even.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/launch.cuh"
#include "kernels/linear.h"

namespace gla::cuda {

namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads) DequantizeInt8Kernel(const int8_t* __restrict__ q,
                                                                  const float* __restrict__ scale, int64_t K,
                                                                  int64_t chunks, __nv_bfloat16* __restrict__ out) {
  WaitForPredecessor();  // the previous kernel may still read `out` (the last projection's weights)
  LetDependentsLaunch();
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;  // chunk of 16 values
  if (i >= chunks) return;
  const int64_t n = i * 16 / K;
  const float s = __ldg(scale + n);
  const uint4 codes = __ldcs(reinterpret_cast<const uint4*>(q) + i);
  const uint32_t words[4] = {codes.x, codes.y, codes.z, codes.w};
  uint32_t packed[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const uint32_t two = words[j / 2] >> (16 * (j % 2));
    const __nv_bfloat162 b = __floats2bfloat162_rn(s * static_cast<float>(static_cast<int8_t>(two & 0xffu)),
                                                   s * static_cast<float>(static_cast<int8_t>((two >> 8) & 0xffu)));
    packed[j] = *reinterpret_cast<const uint32_t*>(&b);
  }
  uint4* o = reinterpret_cast<uint4*>(out) + 2 * i;
  o[0] = make_uint4(packed[0], packed[1], packed[2], packed[3]);
  o[1] = make_uint4(packed[4], packed[5], packed[6], packed[7]);
}

}  // namespace

cudaError_t DequantizeInt8ToBf16(const Int8Weight& w, int64_t N, int64_t K, __nv_bfloat16* out, cudaStream_t stream) {
  const bool aligned = reinterpret_cast<uintptr_t>(w.q) % 16 == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0;
  if (N <= 0 || K <= 0 || K % 16 != 0 || !aligned || w.scale == nullptr) return cudaErrorInvalidValue;
  const int64_t chunks = N * K / 16;
  const int64_t blocks = (chunks + kThreads - 1) / kThreads;
  if (blocks > 0x7fffffff) return cudaErrorInvalidValue;
  return LaunchDependent(DequantizeInt8Kernel, static_cast<unsigned>(blocks), kThreads, stream, w.q, w.scale, K, chunks,
                         out);
}

}  // namespace gla::cuda
