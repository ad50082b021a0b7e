#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/gla.h"

namespace gla::cpu {

void GlaBackwardNaive(const GlaSeqParams& p, const GlaSeqGrads& d) {
  const int T = p.T, H = p.H, dk = p.dk, dv = p.dv, group = p.H / p.Hkv;
  const int64_t SS = int64_t{dk} * dv;
  // kv-head gradients are sums over the heads of a group: start from zero.
  for (int t = 0; t < T; ++t) {
    std::fill_n(d.dk + t * d.dk_stride, int64_t{p.Hkv} * dk, 0.0f);
    std::fill_n(d.dv + t * d.dv_stride, int64_t{p.Hkv} * dv, 0.0f);
    std::fill_n(d.dg + t * d.dg_stride, int64_t{p.Hkv} * dk, 0.0f);
  }
  std::vector<double> states(static_cast<size_t>(T + 1) * SS), dS(SS), a(dk), acc_v(dv);
  for (int h = 0; h < H; ++h) {
    const int hk = h / group;
    auto q = [&](int t, int i) { return static_cast<double>(p.q[t * p.q_stride + h * dk + i]); };
    auto k = [&](int t, int i) { return static_cast<double>(p.k[t * p.k_stride + hk * dk + i]); };
    auto v = [&](int t, int j) { return static_cast<double>(p.v[t * p.v_stride + hk * dv + j]); };
    auto g = [&](int t, int i) { return static_cast<double>(p.g[t * p.g_stride + hk * dk + i]); };
    // Forward, keeping every state: S_0 = h0, S_{t+1} = diag(exp(g_t)) S_t + k_t^T v_t.
    const float* h0 = p.state + h * SS;
    for (int64_t x = 0; x < SS; ++x) states[x] = h0 ? h0[x] : 0.0;
    for (int t = 0; t < T; ++t) {
      const double* prev = states.data() + t * SS;
      double* next = states.data() + (t + 1) * SS;
      for (int i = 0; i < dk; ++i) {
        const double ai = std::exp(g(t, i)), ki = k(t, i);
        for (int j = 0; j < dv; ++j) next[i * dv + j] = ai * prev[i * dv + j] + ki * v(t, j);
      }
    }
    // Backward.
    for (int64_t x = 0; x < SS; ++x) dS[x] = d.d_ht ? d.d_ht[h * SS + x] : 0.0;
    for (int t = T - 1; t >= 0; --t) {
      const double* S = states.data() + (t + 1) * SS;
      const double* prev = states.data() + t * SS;
      const float* dout = d.d_o + t * d.d_o_stride + h * dv;
      for (int i = 0; i < dk; ++i) {
        const double sq = p.scale * q(t, i);
        double dq = 0.0;
        for (int j = 0; j < dv; ++j) {
          dq += S[i * dv + j] * dout[j];
          dS[i * dv + j] += sq * dout[j];
        }
        d.dq[t * d.dq_stride + h * dk + i] = static_cast<float>(p.scale * dq);
      }
      std::fill(acc_v.begin(), acc_v.end(), 0.0);
      for (int i = 0; i < dk; ++i) {
        a[i] = std::exp(g(t, i));
        const double ki = k(t, i);
        double dk_i = 0.0, dg_i = 0.0;
        for (int j = 0; j < dv; ++j) {
          const double ds = dS[i * dv + j];
          dk_i += ds * v(t, j);
          acc_v[j] += ki * ds;
          dg_i += ds * prev[i * dv + j];
        }
        d.dk[t * d.dk_stride + hk * dk + i] += static_cast<float>(dk_i);
        d.dg[t * d.dg_stride + hk * dk + i] += static_cast<float>(a[i] * dg_i);
      }
      for (int j = 0; j < dv; ++j) d.dv[t * d.dv_stride + hk * dv + j] += static_cast<float>(acc_v[j]);
      for (int i = 0; i < dk; ++i)
        for (int j = 0; j < dv; ++j) dS[i * dv + j] *= a[i];
    }
    if (d.dh0)
      for (int64_t x = 0; x < SS; ++x) d.dh0[h * SS + x] = static_cast<float>(dS[x]);
  }
}

}  // namespace gla::cpu
