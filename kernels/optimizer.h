// Optimizer arithmetic (fine-tuning): AdamW and the global gradient norm for clipping.
#pragma once

#include <cstdint>

namespace gla::cpu {

struct AdamWParams {
  float lr = 1e-4f;
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  float weight_decay = 0.0f;  // decoupled (AdamW): param -= lr * weight_decay * param
  int64_t step = 1;           // 1-based, for the bias corrections
};

// One AdamW update of n parameters, in place on param, m and v (torch.optim.AdamW semantics):
// g = grad * grad_scale (grad_scale carries gradient clipping), m = b1 m + (1-b1) g,
// v = b2 v + (1-b2) g^2, param = param * (1 - lr wd) - lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps).
void AdamWStep(float* param, const float* grad, float* m, float* v, int64_t n, const AdamWParams& p,
               float grad_scale = 1.0f);

// Sum of squares in double (the clip factor is min(1, max_norm / sqrt(sum over all tensors))).
double SumOfSquares(const float* x, int64_t n);

}  // namespace gla::cpu
