#include "kernels/conv.h"

#include <cmath>
#include <algorithm>
#include <vector>

namespace gla::cpu {

void ShortConvSilu(const float* x, int64_t x_stride, int64_t T, int64_t C, const float* w, int K, float* tail,
                   float* y, int64_t y_stride) {
  const int64_t W = K - 1;
  auto input = [&](int64_t t, int64_t c) { return t >= 0 ? x[t * x_stride + c] : tail[(W + t) * C + c]; };
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t c = 0; c < C; ++c) {
      float acc = 0.0f;
      for (int i = 0; i < K; ++i) acc += w[c * K + i] * input(t - W + i, c);
      y[t * y_stride + c] = acc / (1.0f + std::exp(-acc));
    }
  }
  // New tail: the last W inputs of (old tail ++ x).
  std::vector<float> next(static_cast<size_t>(W * C));
  for (int64_t j = 0; j < W; ++j)
    for (int64_t c = 0; c < C; ++c) next[j * C + c] = input(T - W + j, c);
  std::copy(next.begin(), next.end(), tail);
}

}  // namespace gla::cpu
