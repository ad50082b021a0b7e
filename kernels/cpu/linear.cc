#include "kernels/linear.h"

#include <cblas.h>

namespace gla::cpu {

void Linear(const float* x, int64_t x_stride, const float* w, int64_t N, int64_t K, float* y, int64_t y_stride,
            int64_t M, float beta) {
  if (M == 0 || N == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(M), static_cast<blasint>(N),
              static_cast<blasint>(K), 1.0f, x, static_cast<blasint>(x_stride), w, static_cast<blasint>(K), beta, y,
              static_cast<blasint>(y_stride));
}

void SetLinearThreads(int threads) {
  if (threads > 0) openblas_set_num_threads(threads);
}

}  // namespace gla::cpu
