#include "kernels/norm.h"

#include <cmath>

namespace gla::cpu {

namespace {
float InverseRms(const float* x, int64_t n, float eps) {
  double ss = 0.0;  // double: the reference should not lose digits on wide rows
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  return static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
}
}  // namespace

void RmsNorm(const float* x, int64_t x_stride, const float* w, float* y, int64_t y_stride, int64_t rows,
             int64_t n, float eps) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * x_stride;
    float* yr = y + r * y_stride;
    const float inv = InverseRms(xr, n, eps);
    for (int64_t i = 0; i < n; ++i) yr[i] = xr[i] * inv * w[i];
  }
}

void RmsNormSwishGate(const float* o, int64_t o_stride, const float* gate, int64_t gate_stride, const float* w,
                      float* y, int64_t y_stride, int64_t rows, int heads, int dv, float eps) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int h = 0; h < heads; ++h) {
      const float* oh = o + r * o_stride + h * dv;
      float* yh = y + r * y_stride + h * dv;
      const float inv = InverseRms(oh, dv, eps);
      for (int i = 0; i < dv; ++i) {
        float val = oh[i] * inv * w[i];
        if (gate != nullptr) {
          const float z = gate[r * gate_stride + h * dv + i];
          val *= z / (1.0f + std::exp(-z));
        }
        yh[i] = val;
      }
    }
  }
}

}  // namespace gla::cpu
