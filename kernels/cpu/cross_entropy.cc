#include "kernels/cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/linear.h"

namespace gla::cpu {

CrossEntropyResult LinearCrossEntropy(const float* h, int64_t h_stride, const float* w, int64_t V, int64_t D,
                                      const int32_t* targets, int64_t rows, float grad_scale, float* dh,
                                      int64_t dh_stride, float* dw, int64_t block_rows) {
  CrossEntropyResult result;
  block_rows = std::max<int64_t>(1, block_rows);
  std::vector<float> z;
  for (int64_t r0 = 0; r0 < rows; r0 += block_rows) {
    const int64_t n = std::min(block_rows, rows - r0);
    z.resize(n * V);
    Linear(h + r0 * h_stride, h_stride, w, V, D, z.data(), V, n);
    // Each row's logits become its gradient in place: grad_scale (softmax - onehot), or 0 if ignored.
    for (int64_t i = 0; i < n; ++i) {
      float* zr = z.data() + i * V;
      const int32_t t = targets[r0 + i];
      if (t < 0) {
        std::fill(zr, zr + V, 0.0f);
        continue;
      }
      double mx = zr[0];
      for (int64_t j = 1; j < V; ++j) mx = std::max<double>(mx, zr[j]);
      double se = 0.0;
      for (int64_t j = 0; j < V; ++j) se += std::exp(zr[j] - mx);
      const double lse = mx + std::log(se);
      result.loss_sum += lse - zr[t];
      result.count += 1;
      for (int64_t j = 0; j < V; ++j) zr[j] = static_cast<float>(grad_scale * std::exp(zr[j] - lse));
      zr[t] -= grad_scale;
    }
    // dh = dz W (ignored rows have dz = 0, so they get 0);  dW += dz^T h
    LinearBackward(h + r0 * h_stride, h_stride, w, V, D, z.data(), V, dh != nullptr ? dh + r0 * dh_stride : nullptr,
                   dh_stride, 0.0f, dw, n);
  }
  return result;
}

}  // namespace gla::cpu
