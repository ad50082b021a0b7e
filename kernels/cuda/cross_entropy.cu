// Softmax cross-entropy rows on the GPU (the fused lm_head loss of fine-tuning): each row's logits
// turn into their gradient in place, so a block of rows never needs a second [rows, V] buffer.
// Reference: the per-row part of cpu::LinearCrossEntropy (kernels/cpu/cross_entropy.cc).
#include <cuda_runtime.h>

#include <cmath>

#include "kernels/cross_entropy.h"
#include "kernels/cuda/block_reduce.cuh"

namespace gla::cuda {

namespace {

constexpr int kThreads = 512;

__global__ void __launch_bounds__(kThreads) SoftmaxCrossEntropyKernel(float* logits, int64_t ld, const int32_t* targets,
                                                                      int64_t V, float grad_scale, double* loss_sum) {
  __shared__ double scratch[32];
  float* z = logits + int64_t{blockIdx.x} * ld;
  const int32_t t = targets[blockIdx.x];
  if (t < 0) {  // an ignored row: no loss, zero gradient
    for (int64_t j = threadIdx.x; j < V; j += kThreads) z[j] = 0.0f;
    return;
  }
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < V; j += kThreads) mx = fmaxf(mx, z[j]);
  mx = BlockMax<kThreads>(mx);
  double se = 0.0;
  for (int64_t j = threadIdx.x; j < V; j += kThreads) se += expf(z[j] - mx);
  se = BlockSumDouble(se, scratch);
  const double lse = static_cast<double>(mx) + log(se);
  const float zt = z[t], lse_f = static_cast<float>(lse);
  __syncthreads();  // every thread has read z[t] before any overwrites it
  if (threadIdx.x == 0) atomicAdd(loss_sum, lse - static_cast<double>(zt));
  for (int64_t j = threadIdx.x; j < V; j += kThreads) {
    float g = grad_scale * expf(z[j] - lse_f);
    if (j == t) g -= grad_scale;
    z[j] = g;
  }
}

}  // namespace

cudaError_t SoftmaxCrossEntropyGrad(float* logits, int64_t ld, const int32_t* targets, int64_t rows, int64_t V,
                                    float grad_scale, double* loss_sum, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  if (rows < 0 || rows > 0x7fffffff || V <= 0 || ld < V) return cudaErrorInvalidValue;
  SoftmaxCrossEntropyKernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(logits, ld, targets, V, grad_scale,
                                                                                  loss_sum);
  return cudaGetLastError();
}

}  // namespace gla::cuda
