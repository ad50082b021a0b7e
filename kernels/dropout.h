// Inverted dropout with a counter-based mask (LoRA dropout on the GPU training path). Element i of
// a call seeded `seed` is kept with probability 1 - p, decided by a hash of (seed, i): nothing is
// stored, the backward recomputes the mask, and the CPU reference draws the same mask bit for bit.
#pragma once

#include <cstdint>

#if defined(GLA_HAVE_CUDA)
#include <cuda_runtime_api.h>
#endif

#include "kernels/host_device.h"

namespace gla {

// splitmix64 of the element's counter, top 24 bits as a uniform in [0, 1).
GLA_HOST_DEVICE inline bool DropoutKeeps(uint64_t seed, uint64_t i, float p) {
  uint64_t z = seed + (i + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) * (1.0f / 16777216.0f) >= p;
}

namespace cpu {
// out[i] = keep(i) ? x[i] / (1 - p) : 0      (rows of `cols` floats, strides given; i = r * cols + c)
void Dropout(const float* x, int64_t x_stride, int64_t rows, int64_t cols, float p, uint64_t seed, float* out,
             int64_t out_stride);
// dx[i] += keep(i) ? dy[i] / (1 - p) : 0    (the backward of Dropout, accumulated into dx)
void DropoutBackwardAdd(const float* dy, int64_t dy_stride, int64_t rows, int64_t cols, float p, uint64_t seed,
                        float* dx, int64_t dx_stride);
}  // namespace cpu

#if defined(GLA_HAVE_CUDA)
namespace cuda {
cudaError_t Dropout(const float* x, int64_t x_stride, int64_t rows, int64_t cols, float p, uint64_t seed, float* out,
                    int64_t out_stride, cudaStream_t stream);
cudaError_t DropoutBackwardAdd(const float* dy, int64_t dy_stride, int64_t rows, int64_t cols, float p, uint64_t seed,
                               float* dx, int64_t dx_stride, cudaStream_t stream);
}  // namespace cuda
#endif

}  // namespace gla
