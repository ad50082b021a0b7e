#include "kernels/activations.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace gla::cpu {

void SwiGlu(const float* gate_up, int64_t gate_up_stride, float* out, int64_t out_stride, int64_t M, int64_t I) {
  for (int64_t r = 0; r < M; ++r) {
    const float* g = gate_up + r * gate_up_stride;
    const float* u = g + I;
    float* o = out + r * out_stride;
    for (int64_t i = 0; i < I; ++i) o[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
  }
}

void LogSigmoidGate(float* x, int64_t stride, const float* bias, int64_t rows, int64_t n, const ForgetGate& gate) {
  const float normalizer = gate.normalizer, clamp_min = gate.clamp_min;
  const bool has_clamp = gate.has_clamp;
  for (int64_t r = 0; r < rows; ++r) {
    float* xr = x + r * stride;
    for (int64_t i = 0; i < n; ++i) {
      const float z = xr[i] + (bias ? bias[i] : 0.0f);
      // logsigmoid(z) = min(z, 0) - log1p(exp(-|z|)): no overflow for large |z|.
      float y = (std::min(z, 0.0f) - std::log1p(std::exp(-std::fabs(z)))) / normalizer;
      if (has_clamp) y = std::max(y, clamp_min);
      xr[i] = y;
    }
  }
}

void EmbeddingGather(const float* table, int64_t D, const int32_t* ids, int64_t n, float* out) {
  for (int64_t r = 0; r < n; ++r) std::memcpy(out + r * D, table + static_cast<int64_t>(ids[r]) * D, D * sizeof(float));
}

}  // namespace gla::cpu
