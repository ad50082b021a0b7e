#include <cmath>
#include <vector>

#include "kernels/conv.h"

namespace gla::cpu {

void ShortConvSiluBackward(const float* x, int64_t x_stride, int64_t T, int64_t C, const float* w, int K,
                           const float* tail, const float* dy, int64_t dy_stride, float* dx, int64_t dx_stride,
                           float* dw) {
  // y[t,c] = silu(a[t,c]), a[t,c] = sum_i w[c,i] x[t-(K-1)+i, c] (x before 0 from the tail).
  const int64_t W = K - 1;
  auto input = [&](int64_t t, int64_t c) -> float {
    if (t >= 0) return x[t * x_stride + c];
    return tail != nullptr ? tail[(W + t) * C + c] : 0.0f;
  };
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < C; ++c) dx[t * dx_stride + c] = 0.0f;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < C; ++c) {
      double a = 0.0;
      for (int i = 0; i < K; ++i) a += static_cast<double>(w[c * K + i]) * input(t - W + i, c);
      const double s = 1.0 / (1.0 + std::exp(-a));
      const double da = dy[t * dy_stride + c] * s * (1.0 + a * (1.0 - s));
      for (int i = 0; i < K; ++i) {
        const int64_t src = t - W + i;
        if (src >= 0) dx[src * dx_stride + c] += static_cast<float>(da * w[c * K + i]);
        if (dw != nullptr) dw[c * K + i] += static_cast<float>(da * input(src, c));
      }
    }
}

}  // namespace gla::cpu
