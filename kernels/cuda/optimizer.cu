// AdamW and the sum of squares (for the global gradient-norm clip) on the GPU (fine-tuning);
// references in kernels/cpu/optimizer.cc.
#include <cuda_runtime.h>

#include <cmath>

#include "kernels/cuda/block_reduce.cuh"
#include "kernels/optimizer.h"

namespace gla::cuda {

namespace {

constexpr int kThreads = 256;

unsigned GridFor(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < 4096 ? b : 4096);  // grid-stride beyond that
}

__global__ void AdamWKernel(float* param, const float* grad, float* m, float* v, int64_t n, float lr, float beta1,
                            float beta2, float eps, float decay, float inv_bc1, float inv_bc2, float grad_scale) {
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const float g = grad[i] * grad_scale;
    const float mi = beta1 * m[i] + (1.0f - beta1) * g;
    const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    param[i] = param[i] * decay - lr * ((mi * inv_bc1) / (sqrtf(vi * inv_bc2) + eps));
  }
}

__global__ void SumOfSquaresKernel(const float* x, int64_t n, double* sum) {
  __shared__ double scratch[32];
  double s = 0.0;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    s += static_cast<double>(x[i]) * x[i];
  s = BlockSumDouble(s, scratch);
  if (threadIdx.x == 0) atomicAdd(sum, s);
}

}  // namespace

cudaError_t AdamWStep(float* param, const float* grad, float* m, float* v, int64_t n, const cpu::AdamWParams& p,
                      float grad_scale, cudaStream_t stream) {
  if (n < 0 || p.step < 1) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  const double bc1 = 1.0 - std::pow(static_cast<double>(p.beta1), static_cast<double>(p.step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(p.beta2), static_cast<double>(p.step));
  AdamWKernel<<<GridFor(n), kThreads, 0, stream>>>(param, grad, m, v, n, p.lr, p.beta1, p.beta2, p.eps,
                                                   1.0f - p.lr * p.weight_decay, static_cast<float>(1.0 / bc1),
                                                   static_cast<float>(1.0 / bc2), grad_scale);
  return cudaGetLastError();
}

cudaError_t SumOfSquares(const float* x, int64_t n, double* sum, cudaStream_t stream) {
  if (n < 0 || sum == nullptr) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  SumOfSquaresKernel<<<GridFor(n), kThreads, 0, stream>>>(x, n, sum);
  return cudaGetLastError();
}

}  // namespace gla::cuda
