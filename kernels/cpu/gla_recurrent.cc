// GLA recurrent forms: the naive definition and the batched one-token decode step.
#include <cmath>

#include "kernels/gla.h"

namespace gla::cpu {

void GlaRecurrentNaive(const GlaSeqParams& p) {
  const int groups = p.H / p.Hkv;
  for (int t = 0; t < p.T; ++t) {
    for (int h = 0; h < p.H; ++h) {
      const int hk = h / groups;
      const float* q = p.q + t * p.q_stride + h * p.dk;
      const float* k = p.k + t * p.k_stride + hk * p.dk;
      const float* g = p.g + t * p.g_stride + hk * p.dk;
      const float* v = p.v + t * p.v_stride + hk * p.dv;
      float* S = p.state + static_cast<int64_t>(h) * p.dk * p.dv;
      float* o = p.o + t * p.o_stride + h * p.dv;
      for (int j = 0; j < p.dv; ++j) o[j] = 0.0f;
      for (int i = 0; i < p.dk; ++i) {
        const float decay = std::exp(g[i]);
        float* row = S + static_cast<int64_t>(i) * p.dv;
        for (int j = 0; j < p.dv; ++j) row[j] = decay * row[j] + k[i] * v[j];  // S_t
        const float qi = p.scale * q[i];
        for (int j = 0; j < p.dv; ++j) o[j] += qi * row[j];  // o_t = (scale q_t) S_t
      }
    }
  }
}

void GlaDecodeStep(const GlaDecodeParams& p) {
  const int groups = p.H / p.Hkv;
  for (int n = 0; n < p.N; ++n) {
    float* state = p.states[n];
    for (int h = 0; h < p.H; ++h) {
      const int hk = h / groups;
      const float* q = p.q + n * p.q_stride + h * p.dk;
      const float* k = p.k + n * p.k_stride + hk * p.dk;
      const float* g = p.g + n * p.g_stride + hk * p.dk;
      const float* v = p.v + n * p.v_stride + hk * p.dv;
      float* S = state + static_cast<int64_t>(h) * p.dk * p.dv;
      float* o = p.o + n * p.o_stride + h * p.dv;
      for (int j = 0; j < p.dv; ++j) o[j] = 0.0f;
      for (int i = 0; i < p.dk; ++i) {
        const float decay = std::exp(g[i]), ki = k[i], qi = p.scale * q[i];
        float* row = S + static_cast<int64_t>(i) * p.dv;
        for (int j = 0; j < p.dv; ++j) {
          row[j] = decay * row[j] + ki * v[j];
          o[j] += qi * row[j];
        }
      }
    }
  }
}

}  // namespace gla::cpu
