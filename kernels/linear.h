// Dense projections through BLAS (OpenBLAS, multi-threaded). Framework-free.
#pragma once

#include <cstdint>

namespace gla::cpu {

// y[M, N] = x[M, K] W[N, K]^T + beta * y      (W in PyTorch's [out, in] layout; row strides given)
// beta = 1 adds the product to y: that is how the residual adds are fused.
void Linear(const float* x, int64_t x_stride, const float* w, int64_t N, int64_t K, float* y, int64_t y_stride,
            int64_t M, float beta = 0.0f);

// BLAS worker threads (0 keeps the library's default).
void SetLinearThreads(int threads);

}  // namespace gla::cpu
