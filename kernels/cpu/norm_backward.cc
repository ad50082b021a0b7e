#include "kernels/norm.h"

#include <cmath>
#include <vector>

namespace gla::cpu {

namespace {
double InverseRms(const float* x, int64_t n, float eps) {
  double ss = 0.0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  return 1.0 / std::sqrt(ss / static_cast<double>(n) + eps);
}

// y = x * inv * w with inv = (mean(x^2) + eps)^-1/2. With u = dy * w:
//   dx = inv * (u - x * inv^2 * mean(u * x)),   dw += dy * x * inv.
void RowBackward(const float* x, const float* w, const float* dy, float* dx, bool accumulate, float* dw, int64_t n,
                 float eps) {
  const double inv = InverseRms(x, n, eps);
  double ux = 0.0;
  for (int64_t i = 0; i < n; ++i) ux += static_cast<double>(dy[i]) * w[i] * x[i];
  const double k = inv * inv * ux / static_cast<double>(n);
  for (int64_t i = 0; i < n; ++i) {
    const float g = static_cast<float>(inv * (static_cast<double>(dy[i]) * w[i] - x[i] * k));
    dx[i] = accumulate ? dx[i] + g : g;
    if (dw != nullptr) dw[i] += static_cast<float>(static_cast<double>(dy[i]) * x[i] * inv);
  }
}
}  // namespace

void RmsNormBackward(const float* x, int64_t x_stride, const float* w, const float* dy, int64_t dy_stride, float* dx,
                     int64_t dx_stride, bool accumulate_dx, float* dw, int64_t rows, int64_t n, float eps) {
  for (int64_t r = 0; r < rows; ++r)
    RowBackward(x + r * x_stride, w, dy + r * dy_stride, dx + r * dx_stride, accumulate_dx, dw, n, eps);
}

void RmsNormSwishGateBackward(const float* o, int64_t o_stride, const float* gate, int64_t gate_stride,
                              const float* w, const float* dy, int64_t dy_stride, float* d_o, int64_t d_o_stride,
                              float* d_gate, int64_t d_gate_stride, float* dw, int64_t rows, int heads, int dv,
                              float eps) {
  std::vector<float> dn(dv);  // gradient reaching the norm's output: dy * swish(gate)
  for (int64_t r = 0; r < rows; ++r)
    for (int h = 0; h < heads; ++h) {
      const float* oh = o + r * o_stride + h * dv;
      const float* dyh = dy + r * dy_stride + h * dv;
      if (gate != nullptr) {
        // y = n * swish(z), n = RmsNorm(o) w:  dn = dy swish(z);  dz = dy n swish'(z),
        // swish'(z) = sigmoid(z) (1 + z (1 - sigmoid(z))).
        const float* zh = gate + r * gate_stride + h * dv;
        float* dzh = d_gate + r * d_gate_stride + h * dv;
        const double inv = InverseRms(oh, dv, eps);
        for (int i = 0; i < dv; ++i) {
          const double z = zh[i], s = 1.0 / (1.0 + std::exp(-z));
          const double n = oh[i] * inv * w[i];
          dn[i] = static_cast<float>(dyh[i] * z * s);
          dzh[i] = static_cast<float>(dyh[i] * n * s * (1.0 + z * (1.0 - s)));
        }
      } else {
        for (int i = 0; i < dv; ++i) dn[i] = dyh[i];
      }
      RowBackward(oh, w, dn.data(), d_o + r * d_o_stride + h * dv, false, dw, dv, eps);
    }
}

}  // namespace gla::cpu
