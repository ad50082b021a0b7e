#include "kernels/optimizer.h"

#include <cmath>

namespace gla::cpu {

void AdamWStep(float* param, const float* grad, float* m, float* v, int64_t n, const AdamWParams& p,
               float grad_scale) {
  const double bc1 = 1.0 - std::pow(static_cast<double>(p.beta1), static_cast<double>(p.step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(p.beta2), static_cast<double>(p.step));
  const float decay = 1.0f - p.lr * p.weight_decay;  // decoupled: applied to the weight, not the gradient
  for (int64_t i = 0; i < n; ++i) {
    const float g = grad[i] * grad_scale;
    m[i] = p.beta1 * m[i] + (1.0f - p.beta1) * g;
    v[i] = p.beta2 * v[i] + (1.0f - p.beta2) * g * g;
    const double update = (m[i] / bc1) / (std::sqrt(v[i] / bc2) + p.eps);
    param[i] = static_cast<float>(param[i] * decay - p.lr * update);
  }
}

double SumOfSquares(const float* x, int64_t n) {
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(x[i]) * x[i];
  return s;
}

}  // namespace gla::cpu
