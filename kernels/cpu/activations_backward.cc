#include <algorithm>
#include <cmath>

#include "kernels/activations.h"

namespace gla::cpu {

void SwiGluBackward(const float* gate_up, int64_t gate_up_stride, const float* d_out, int64_t d_out_stride,
                    float* d_gate_up, int64_t d_gate_up_stride, int64_t M, int64_t I) {
  // out = silu(g) u:  du = d silu(g),  dg = d u silu'(g),  silu'(g) = s (1 + g (1 - s)), s = sigmoid(g).
  for (int64_t r = 0; r < M; ++r) {
    const float* g = gate_up + r * gate_up_stride;
    const float* u = g + I;
    const float* d = d_out + r * d_out_stride;
    float* dg = d_gate_up + r * d_gate_up_stride;
    float* du = dg + I;
    for (int64_t i = 0; i < I; ++i) {
      const double s = 1.0 / (1.0 + std::exp(-static_cast<double>(g[i])));
      du[i] = static_cast<float>(d[i] * g[i] * s);
      dg[i] = static_cast<float>(d[i] * u[i] * s * (1.0 + g[i] * (1.0 - s)));
    }
  }
}

void LogSigmoidGateBackward(const float* pre, int64_t pre_stride, const float* bias, const float* d_out,
                            int64_t d_out_stride, float* d_pre, int64_t d_pre_stride, float* d_bias, int64_t rows,
                            int64_t n, const ForgetGate& gate) {
  const double normalizer = gate.normalizer, clamp_min = gate.clamp_min;
  const bool has_clamp = gate.has_clamp;
  // y = logsigmoid(z) / normalizer, z = pre + bias:  dy/dz = sigmoid(-z) / normalizer; zero where
  // the clamp holds the output (unclamped value below clamp_min).
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < n; ++i) {
      const double z = static_cast<double>(pre[r * pre_stride + i]) + (bias ? bias[i] : 0.0f);
      const double y = (std::min(z, 0.0) - std::log1p(std::exp(-std::fabs(z)))) / normalizer;
      double g = d_out[r * d_out_stride + i] / (1.0 + std::exp(z)) / normalizer;
      if (has_clamp && y < clamp_min) g = 0.0;
      d_pre[r * d_pre_stride + i] = static_cast<float>(g);
      if (d_bias != nullptr) d_bias[i] += static_cast<float>(g);
    }
}

void EmbeddingScatterAdd(const float* d_out, int64_t D, const int32_t* ids, int64_t n, float* d_table) {
  for (int64_t r = 0; r < n; ++r) {
    float* row = d_table + static_cast<int64_t>(ids[r]) * D;
    for (int64_t i = 0; i < D; ++i) row[i] += d_out[r * D + i];
  }
}

}  // namespace gla::cpu
