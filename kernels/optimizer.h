// Optimizer arithmetic (fine-tuning): AdamW and the global gradient norm for clipping.
#pragma once

#include <cstdint>

#if defined(GLA_HAVE_CUDA)
#include <cuda_runtime_api.h>
#endif

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

#if defined(GLA_HAVE_CUDA)
namespace gla::cuda {

// The same on the GPU (kernels/cuda/optimizer.cu), on device arrays. AdamWStep computes in fp32
// (the bias corrections in double on the host); SumOfSquares adds the sum (double) to *sum, a
// device value, so the squares of all of a model's gradients land in one number read back once.
cudaError_t AdamWStep(float* param, const float* grad, float* m, float* v, int64_t n, const cpu::AdamWParams& p,
                      float grad_scale, cudaStream_t stream);
cudaError_t SumOfSquares(const float* x, int64_t n, double* sum, cudaStream_t stream);

}  // namespace gla::cuda
#endif
