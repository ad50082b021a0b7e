// Short causal depthwise convolution + SiLU (fla ShortConvolution) with its rolling state.
#pragma once

#include <cstdint>

namespace gla::cpu {

// One sequence of T tokens, C channels, kernel K:
//   y[t, c] = silu( sum_{i<K} w[c, i] * x[t - (K-1) + i, c] ),   x[<0] read from `tail`
// tail [K-1, C] holds the K-1 inputs before x[0] (oldest first); on return it holds the last K-1
// inputs seen, so the next call (or decode step) continues the sequence. y must not alias x.
void ShortConvSilu(const float* x, int64_t x_stride, int64_t T, int64_t C, const float* w, int K, float* tail,
                   float* y, int64_t y_stride);

}  // namespace gla::cpu
