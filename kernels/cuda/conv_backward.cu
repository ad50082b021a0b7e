// Backward of the short causal convolution + SiLU on the GPU (fine-tuning), for packed sequences
// that start from an empty history; reference: cpu::ShortConvSiluBackward (kernels/cpu/conv_backward.cc).
// One thread per (sequence, channel) walks the rows backwards: dx[t] needs da of rows t .. t+K-1,
// which it keeps in a ring; dw is summed in registers and added once per thread.
#include <cuda_runtime.h>

#include "kernels/conv.h"

namespace gla::cuda {

namespace {

constexpr int kMaxK = 9, kThreads = 128;

__global__ void ShortConvSiluBackwardKernel(const float* x, int64_t x_stride, const int32_t* cu, int64_t C,
                                            const float* w, int K, const float* dy, int64_t dy_stride, float* dx,
                                            int64_t dx_stride, float* dw) {
  const int64_t c = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const int n = blockIdx.y;
  const int64_t begin = cu[n], T = int64_t{cu[n + 1]} - begin;
  const int W = K - 1;
  float wc[kMaxK], dwc[kMaxK], ring[kMaxK];  // ring[j]: da of row t + j (j = 0 newest-past ... W)
  for (int i = 0; i < K; ++i) {
    wc[i] = w[c * K + i];
    dwc[i] = 0.f;
    ring[i] = 0.f;
  }
  auto input = [&](int64_t t) { return t >= 0 ? x[(begin + t) * x_stride + c] : 0.f; };
  for (int64_t t = T - 1; t >= 0; --t) {
    double a = 0.0;
    for (int i = 0; i < K; ++i) a += static_cast<double>(wc[i]) * input(t - W + i);
    const double s = 1.0 / (1.0 + exp(-a));
    const float da = static_cast<float>(dy[(begin + t) * dy_stride + c] * s * (1.0 + a * (1.0 - s)));
    for (int j = W; j > 0; --j) ring[j] = ring[j - 1];  // shift: ring[j] = da[t + j]
    ring[0] = da;
    // dx[t] = sum_i da[t + W - i] w[i] over rows that exist (t + W - i < T).
    double g = 0.0;
    for (int i = 0; i < K; ++i) {
      const int j = W - i;
      if (t + j < T) g += static_cast<double>(ring[j]) * wc[i];
    }
    dx[(begin + t) * dx_stride + c] = static_cast<float>(g);
    for (int i = 0; i < K; ++i) dwc[i] += static_cast<float>(static_cast<double>(da) * input(t - W + i));
  }
  if (dw != nullptr)
    for (int i = 0; i < K; ++i) atomicAdd(dw + c * K + i, dwc[i]);
}

}  // namespace

cudaError_t ShortConvSiluBackward(const float* x, int64_t x_stride, const int32_t* cu_seqlens, int num_seqs, int64_t C,
                                  const float* w, int K, const float* dy, int64_t dy_stride, float* dx,
                                  int64_t dx_stride, float* dw, cudaStream_t stream) {
  if (num_seqs < 0 || num_seqs > 65535 || C < 1 || K < 1 || K > kMaxK) return cudaErrorInvalidValue;
  if (num_seqs == 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>((C + kThreads - 1) / kThreads), static_cast<unsigned>(num_seqs));
  ShortConvSiluBackwardKernel<<<grid, kThreads, 0, stream>>>(x, x_stride, cu_seqlens, C, w, K, dy, dy_stride, dx,
                                                             dx_stride, dw);
  return cudaGetLastError();
}

}  // namespace gla::cuda
