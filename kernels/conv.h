// Short causal depthwise convolution + SiLU (fla ShortConvolution) with its rolling state.
#pragma once

#include <cstdint>

#if defined(GLA_HAVE_CUDA)
#include <cuda_runtime_api.h>

#include "kernels/state_slots.h"
#endif

namespace gla::cpu {

// One sequence of T tokens, C channels, kernel K:
//   y[t, c] = silu( sum_{i<K} w[c, i] * x[t - (K-1) + i, c] ),   x[<0] read from `tail`
// tail [K-1, C] holds the K-1 inputs before x[0] (oldest first); on return it holds the last K-1
// inputs seen, so the next call (or decode step) continues the sequence. y must not alias x.
void ShortConvSilu(const float* x, int64_t x_stride, int64_t T, int64_t C, const float* w, int K, float* tail,
                   float* y, int64_t y_stride);

// Backward of ShortConvSilu for one sequence: x, w and `tail` are the forward's inputs (tail as it
// was on entry, or nullptr for a zero history), dy the gradient of y. dx written ([T, C] at
// dx_stride); dw ([C, K]) accumulated. The gradient of the entry tail is not produced (training
// sequences start from an empty history).
void ShortConvSiluBackward(const float* x, int64_t x_stride, int64_t T, int64_t C, const float* w, int K,
                           const float* tail, const float* dy, int64_t dy_stride, float* dx, int64_t dx_stride,
                           float* dw);

}  // namespace gla::cpu

#if defined(GLA_HAVE_CUDA)
namespace gla::cuda {

// ShortConvSilu for a packed step on the GPU: sequence s owns rows [cu_seqlens[s], cu_seqlens[s+1])
// of x and y (rows = cu_seqlens[num_seqs]) and its tail [K-1, C] is the values from
// tails.Index(slots[s], 0) on (updated in place; `tails` is the state pool seen at the tail's
// offset, fp32 or bf16: kernels/state_slots.h). Device arrays; K <= 9.
cudaError_t ShortConvSilu(const float* x, int64_t x_stride, const int32_t* cu_seqlens, int num_seqs, int rows,
                          int64_t C, const float* w, int K, const CudaStateSlots& tails, const int32_t* slots, float* y,
                          int64_t y_stride, cudaStream_t stream);

// Backward of ShortConvSilu for packed training sequences that start from an empty history (each
// equals cpu::ShortConvSiluBackward with tail = nullptr): dx written, dw ([C, K]) accumulated with
// atomics. One thread per (sequence, channel) walks its rows backwards (kernels/cuda/conv_backward.cu).
cudaError_t ShortConvSiluBackward(const float* x, int64_t x_stride, const int32_t* cu_seqlens, int num_seqs, int64_t C,
                                  const float* w, int K, const float* dy, int64_t dy_stride, float* dx,
                                  int64_t dx_stride, float* dw, cudaStream_t stream);

}  // namespace gla::cuda
#endif
