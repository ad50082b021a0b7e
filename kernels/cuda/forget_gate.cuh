// The forget gate's activation on the device: logsigmoid / normalizer, then the clamp. One
// definition for every kernel that makes the gate (LowRankGate, LogSigmoidGate, and the decode step
// that computes it itself), so that they agree to the bit.
#pragma once

#include <cuda_runtime.h>

namespace gla::cuda {

__device__ __forceinline__ float GateOf(float z, float inv_normalizer, bool has_clamp, float clamp_min) {
  float y = (fminf(z, 0.f) - log1pf(expf(-fabsf(z)))) * inv_normalizer;
  return has_clamp ? fmaxf(y, clamp_min) : y;
}

// The gate of key j from its low-rank factor row `lr` ([rank]) and the second factor w1 ([n, rank],
// fp32): bias + lr . w1[j], accumulated in the order LowRankGate uses.
__device__ __forceinline__ float LowRankGateOf(const float* lr, const float* w1, int rank, const float* bias, int j,
                                               float inv_normalizer, bool has_clamp, float clamp_min) {
  float z = bias ? bias[j] : 0.f;
  for (int k = 0; k < rank; ++k) z = fmaf(lr[k], w1[static_cast<int64_t>(j) * rank + k], z);
  return GateOf(z, inv_normalizer, has_clamp, clamp_min);
}

}  // namespace gla::cuda
