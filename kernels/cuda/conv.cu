// Short causal depthwise convolution + SiLU on the GPU for a packed step: many sequences' rows in
// one buffer (cu_seqlens), each continuing from the K-1 inputs kept in its state slot. Two passes:
// every (row, channel) output is independent given the old tail (fully parallel, also for long
// prefills), then one thread per (sequence, channel) rolls the tail forward. Tails are fp32 or bf16
// (kernels/state_slots.h): a bf16 tail holds the last K-1 inputs rounded, as the CPU's bf16 pool.
#include <cuda_runtime.h>

#include "kernels/conv.h"
#include "kernels/cuda/state_values.cuh"

namespace gla::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kMaxK = 8;

__device__ inline int SequenceOfRow(const int32_t* cu_seqlens, int num_seqs, int row) {
  int lo = 0, hi = num_seqs - 1;  // the last s with cu_seqlens[s] <= row
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (cu_seqlens[mid] <= row) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

__global__ void ConvKernel(const float* x, int64_t x_stride, const int32_t* cu_seqlens, int num_seqs, int rows,
                           int64_t C, const float* w, int K, const CudaStateSlots tails, const int32_t* slots, float* y,
                           int64_t y_stride) {
  const int64_t idx = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x;
  if (idx >= rows * C) return;
  const int row = static_cast<int>(idx / C);
  const int64_t c = idx % C;
  const int s = SequenceOfRow(cu_seqlens, num_seqs, row);
  const int t = row - cu_seqlens[s];
  const int W = K - 1;
  const int64_t tail = tails.Index(slots[s], 0);
  float acc = 0.f;
  for (int i = 0; i < K; ++i) {
    const int src = t - W + i;  // position in this step's rows of the sequence; < 0 reads the tail
    const float in = src >= 0 ? x[static_cast<int64_t>(cu_seqlens[s] + src) * x_stride + c]
                              : LoadState(tails, tail + (W + src) * C + c);
    acc += w[c * K + i] * in;
  }
  y[static_cast<int64_t>(row) * y_stride + c] = acc / (1.f + __expf(-acc));
}

__global__ void RollTailKernel(const float* x, int64_t x_stride, const int32_t* cu_seqlens, int num_seqs, int64_t C,
                               int K, const CudaStateSlots tails, const int32_t* slots) {
  const int64_t idx = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x;
  if (idx >= num_seqs * C) return;
  const int s = static_cast<int>(idx / C);
  const int64_t c = idx % C;
  const int W = K - 1, T = cu_seqlens[s + 1] - cu_seqlens[s];
  const int64_t tail = tails.Index(slots[s], 0);
  float next[kMaxK];
  for (int j = 0; j < W; ++j) {  // the last W inputs of (old tail ++ this step's rows)
    const int src = T - W + j;
    next[j] = src >= 0 ? x[static_cast<int64_t>(cu_seqlens[s] + src) * x_stride + c]
                       : LoadState(tails, tail + (W + src) * C + c);
  }
  for (int j = 0; j < W; ++j) StoreState(tails, tail + j * C + c, next[j]);  // bf16 tails: rounded here
}

}  // namespace

cudaError_t ShortConvSilu(const float* x, int64_t x_stride, const int32_t* cu_seqlens, int num_seqs, int rows,
                          int64_t C, const float* w, int K, const CudaStateSlots& tails, const int32_t* slots, float* y,
                          int64_t y_stride, cudaStream_t stream) {
  if (num_seqs == 0 || rows == 0) return cudaSuccess;
  if (num_seqs < 0 || rows < 0 || C <= 0 || K < 1 || K > kMaxK + 1 || slots == nullptr || tails.base == nullptr)
    return cudaErrorInvalidValue;
  const int64_t outputs = static_cast<int64_t>(rows) * C, rollers = static_cast<int64_t>(num_seqs) * C;
  ConvKernel<<<static_cast<unsigned>((outputs + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
      x, x_stride, cu_seqlens, num_seqs, rows, C, w, K, tails, slots, y, y_stride);
  if (const cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  if (K == 1) return cudaSuccess;  // no history to keep
  RollTailKernel<<<static_cast<unsigned>((rollers + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
      x, x_stride, cu_seqlens, num_seqs, C, K, tails, slots);
  return cudaGetLastError();
}

}  // namespace gla::cuda
