#include "kernels/linear.h"

#include <cblas.h>

#include "kernels/cpu/parallel.h"

namespace gla::cpu {

void Linear(const float* x, int64_t x_stride, const float* w, int64_t N, int64_t K, float* y, int64_t y_stride,
            int64_t M, float beta) {
  if (M == 0 || N == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(M), static_cast<blasint>(N),
              static_cast<blasint>(K), 1.0f, x, static_cast<blasint>(x_stride), w, static_cast<blasint>(K), beta, y,
              static_cast<blasint>(y_stride));
}

void LinearBackward(const float* x, int64_t x_stride, const float* w, int64_t N, int64_t K, const float* dy,
                    int64_t dy_stride, float* dx, int64_t dx_stride, float dx_beta, float* dw, int64_t M) {
  if (M == 0) return;
  if (dx != nullptr)  // dx[M, K] = dy[M, N] W[N, K] + beta dx
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<blasint>(M), static_cast<blasint>(K),
                static_cast<blasint>(N), 1.0f, dy, static_cast<blasint>(dy_stride), w, static_cast<blasint>(K),
                dx_beta, dx, static_cast<blasint>(dx_stride));
  if (dw != nullptr)  // dW[N, K] += dy^T x
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<blasint>(N), static_cast<blasint>(K),
                static_cast<blasint>(M), 1.0f, dy, static_cast<blasint>(dy_stride), x, static_cast<blasint>(x_stride),
                1.0f, dw, static_cast<blasint>(K));
}

void SetLinearThreads(int threads) {
  if (threads > 0) openblas_set_num_threads(threads);
  SetKernelThreads(threads);  // the INT8 projections' own threads (kernels/cpu/parallel.h)
}

}  // namespace gla::cpu
