// Inverted dropout on the GPU with the counter-based mask of kernels/dropout.h (references in
// kernels/cpu/dropout.cc): one grid-stride pass, memory-bound.
#include <cuda_runtime.h>

#include "kernels/dropout.h"

namespace gla::cuda {

namespace {

constexpr int kThreads = 256;

template <bool kBackwardAdd>
__global__ void DropoutKernel(const float* in, int64_t in_stride, int64_t rows, int64_t cols, float p, uint64_t seed,
                              float* out, int64_t out_stride) {
  const float keep = 1.0f / (1.0f - p);
  const int64_t n = rows * cols;
  for (int64_t i = int64_t{blockIdx.x} * kThreads + threadIdx.x; i < n; i += int64_t{gridDim.x} * kThreads) {
    const int64_t r = i / cols, c = i % cols;
    const bool kept = DropoutKeeps(seed, static_cast<uint64_t>(i), p);
    const float v = kept ? in[r * in_stride + c] * keep : 0.0f;
    if constexpr (kBackwardAdd) out[r * out_stride + c] += v;
    else out[r * out_stride + c] = v;
  }
}

template <bool kBackwardAdd>
cudaError_t Launch(const float* in, int64_t in_stride, int64_t rows, int64_t cols, float p, uint64_t seed, float* out,
                   int64_t out_stride, cudaStream_t stream) {
  if (rows == 0 || cols == 0) return cudaSuccess;
  if (rows < 0 || cols < 0 || !(p >= 0.0f && p < 1.0f)) return cudaErrorInvalidValue;
  const int64_t blocks = (rows * cols + kThreads - 1) / kThreads;
  DropoutKernel<kBackwardAdd><<<static_cast<unsigned>(blocks < 4096 ? blocks : 4096), kThreads, 0, stream>>>(
      in, in_stride, rows, cols, p, seed, out, out_stride);
  return cudaGetLastError();
}

}  // namespace

cudaError_t Dropout(const float* x, int64_t x_stride, int64_t rows, int64_t cols, float p, uint64_t seed, float* out,
                    int64_t out_stride, cudaStream_t stream) {
  return Launch<false>(x, x_stride, rows, cols, p, seed, out, out_stride, stream);
}

cudaError_t DropoutBackwardAdd(const float* dy, int64_t dy_stride, int64_t rows, int64_t cols, float p, uint64_t seed,
                               float* dx, int64_t dx_stride, cudaStream_t stream) {
  return Launch<true>(dy, dy_stride, rows, cols, p, seed, dx, dx_stride, stream);
}

}  // namespace gla::cuda
