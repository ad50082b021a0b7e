// The chunkwise backward on the CPU (the fine-tune path's; cpu::GlaBackwardNaive is its reference).
// Same algorithm as the CUDA kernel (kernels/cuda/gla_backward_chunk.cu, whose header derives the
// formulas), in plain loops: the chunk-start states S0 from a forward scan and the state gradients
// dS from a backward scan, kept per chunk; then per chunk, with b the in-chunk inclusive cumsum of
// g and B its last row,
//   A_ts  = scale sum_i q_ti k_si exp(b_ti - b_si)            (s <= t)
//   dA_ts = do_t . v_s                                          (s <= t)
//   dv_s  = sum_{t>=s} A_ts do_t + (k_s exp(B - b_s)) dS
//   dq_t  = scale exp(b_t) . (do_t S0^T) + scale sum_{s<=t} dA_ts k_s exp(b_t - b_s)
//   dk_s  = exp(B - b_s) . (v_s dS^T) + scale sum_{t>=s} dA_ts q_t exp(b_t - b_s)
//   dg    = reverse cumsum over the sequence of (q . dq - k . dk) + rowsum(d_ht . S_T).
// Every exp() argument is <= 0 (g <= 0), one exp per (t, s <= t, i) shared by A, dq and dk.
// Memory: two [chunks, dk, dv] fp32 state arrays per head instead of the naive form's T + 1
// double states, and the work is O(T (C (dk + dv) + dk dv)) in fp32 loops the compiler vectorizes.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/gla.h"

namespace gla::cpu {

bool GlaBackwardChunkwise(const GlaSeqParams& p, const GlaSeqGrads& d, int chunk) {
  if (chunk < 1) return false;
  const int T = p.T, H = p.H, dk = p.dk, dv = p.dv, group = p.H / p.Hkv, C = chunk;
  const int chunks = (T + C - 1) / C;
  const int64_t SS = int64_t{dk} * dv;
  for (int t = 0; t < T; ++t) {  // kv-head gradients are sums over the heads of a group
    std::fill_n(d.dk + t * d.dk_stride, int64_t{p.Hkv} * dk, 0.0f);
    std::fill_n(d.dv + t * d.dv_stride, int64_t{p.Hkv} * dv, 0.0f);
    std::fill_n(d.dg + t * d.dg_stride, int64_t{p.Hkv} * dk, 0.0f);
  }
  std::vector<float> S0(static_cast<size_t>(chunks) * SS), dSe(static_cast<size_t>(chunks) * SS), S(SS), dS(SS);
  std::vector<float> b(static_cast<size_t>(C) * dk), A(static_cast<size_t>(C) * C), dA(static_cast<size_t>(C) * C);
  std::vector<float> dq(static_cast<size_t>(C) * dk), dkv(static_cast<size_t>(C) * dk), dc(static_cast<size_t>(T) * dk);
  std::vector<float> decay(dk), tmp(dv), final_term(dk);
  for (int h = 0; h < H; ++h) {
    const int hk = h / group;
    const float* q = p.q + h * dk;
    const float* k = p.k + hk * dk;
    const float* v = p.v + hk * dv;
    const float* g = p.g + hk * dk;
    const float* dout = d.d_o + h * dv;
    auto Q = [&](int t) { return q + t * p.q_stride; };
    auto K = [&](int t) { return k + t * p.k_stride; };
    auto V = [&](int t) { return v + t * p.v_stride; };
    auto DO = [&](int t) { return dout + t * d.d_o_stride; };
    // b of chunk c's rows (in-chunk inclusive cumsum of g) and exp(B).
    auto cumsum = [&](int t0, int L) {
      for (int r = 0; r < L; ++r)
        for (int i = 0; i < dk; ++i) b[r * dk + i] = g[(t0 + r) * p.g_stride + i] + (r > 0 ? b[(r - 1) * dk + i] : 0.0f);
      for (int i = 0; i < dk; ++i) decay[i] = std::exp(b[(L - 1) * dk + i]);
    };
    // Forward scan: S0 of every chunk; S ends as S_T.
    for (int64_t x = 0; x < SS; ++x) S[x] = p.state != nullptr ? p.state[h * SS + x] : 0.0f;
    for (int c = 0; c < chunks; ++c) {
      const int t0 = c * C, L = std::min(C, T - t0);
      std::copy(S.begin(), S.end(), S0.begin() + c * SS);
      cumsum(t0, L);
      for (int i = 0; i < dk; ++i) {
        float* row = S.data() + int64_t{i} * dv;
        for (int j = 0; j < dv; ++j) row[j] *= decay[i];
        for (int s = 0; s < L; ++s) {
          const float kg = K(t0 + s)[i] * std::exp(b[(L - 1) * dk + i] - b[s * dk + i]);
          const float* vs = V(t0 + s);
          for (int j = 0; j < dv; ++j) row[j] += kg * vs[j];
        }
      }
    }
    for (int i = 0; i < dk; ++i) {  // dg's final-state term: rowsum(d_ht . S_T)
      float sum = 0.0f;
      if (d.d_ht != nullptr)
        for (int j = 0; j < dv; ++j) sum += d.d_ht[h * SS + int64_t{i} * dv + j] * S[int64_t{i} * dv + j];
      final_term[i] = sum;
    }
    // Backward scan: dS after every chunk; dS ends as dh0.
    for (int64_t x = 0; x < SS; ++x) dS[x] = d.d_ht != nullptr ? d.d_ht[h * SS + x] : 0.0f;
    for (int c = chunks - 1; c >= 0; --c) {
      const int t0 = c * C, L = std::min(C, T - t0);
      std::copy(dS.begin(), dS.end(), dSe.begin() + c * SS);
      cumsum(t0, L);
      for (int i = 0; i < dk; ++i) {
        float* row = dS.data() + int64_t{i} * dv;
        for (int j = 0; j < dv; ++j) row[j] *= decay[i];
        for (int t = 0; t < L; ++t) {
          const float qg = p.scale * Q(t0 + t)[i] * std::exp(b[t * dk + i]);
          const float* dot = DO(t0 + t);
          for (int j = 0; j < dv; ++j) row[j] += qg * dot[j];
        }
      }
    }
    if (d.dh0 != nullptr) std::copy(dS.begin(), dS.end(), d.dh0 + h * SS);
    // Per chunk.
    for (int c = 0; c < chunks; ++c) {
      const int t0 = c * C, L = std::min(C, T - t0);
      const float* s0 = S0.data() + c * SS;
      const float* dse = dSe.data() + c * SS;
      cumsum(t0, L);
      for (int t = 0; t < L; ++t)
        for (int s = 0; s <= t; ++s) {
          const float* dot = DO(t0 + t);
          const float* vs = V(t0 + s);
          float sum = 0.0f;
          for (int j = 0; j < dv; ++j) sum += dot[j] * vs[j];
          dA[t * C + s] = sum;
        }
      std::fill(dq.begin(), dq.end(), 0.0f);
      std::fill(dkv.begin(), dkv.end(), 0.0f);
      for (int t = 0; t < L; ++t) {
        const float* qt = Q(t0 + t);
        const float* bt = b.data() + t * dk;
        float* dqt = dq.data() + t * dk;
        for (int s = 0; s <= t; ++s) {
          const float* ks = K(t0 + s);
          const float* bs = b.data() + s * dk;
          float* dks = dkv.data() + s * dk;
          const float da = p.scale * dA[t * C + s];
          float a = 0.0f;
          for (int i = 0; i < dk; ++i) {
            const float e = std::exp(bt[i] - bs[i]);
            a += qt[i] * ks[i] * e;
            dqt[i] += da * ks[i] * e;
            dks[i] += da * qt[i] * e;
          }
          A[t * C + s] = p.scale * a;
        }
      }
      for (int t = 0; t < L; ++t) {
        const float* dot = DO(t0 + t);
        float* dqt = dq.data() + t * dk;
        for (int i = 0; i < dk; ++i) {  // + scale exp(b_t) . (do_t S0^T)
          const float* row = s0 + int64_t{i} * dv;
          float sum = 0.0f;
          for (int j = 0; j < dv; ++j) sum += dot[j] * row[j];
          dqt[i] += p.scale * std::exp(b[t * dk + i]) * sum;
        }
        float* out = d.dq + (t0 + t) * d.dq_stride + h * dk;
        std::copy(dqt, dqt + dk, out);
      }
      for (int s = 0; s < L; ++s) {
        const float* ks = K(t0 + s);
        const float* vs = V(t0 + s);
        float* dks = dkv.data() + s * dk;
        std::fill(tmp.begin(), tmp.end(), 0.0f);  // dv_s: sum_{t>=s} A_ts do_t + kg_s dS
        for (int t = s; t < L; ++t) {
          const float a = A[t * C + s];
          const float* dot = DO(t0 + t);
          for (int j = 0; j < dv; ++j) tmp[j] += a * dot[j];
        }
        for (int i = 0; i < dk; ++i) {
          const float f = std::exp(b[(L - 1) * dk + i] - b[s * dk + i]);
          const float* row = dse + int64_t{i} * dv;
          const float kg = ks[i] * f;
          float sum = 0.0f;
          for (int j = 0; j < dv; ++j) {
            tmp[j] += kg * row[j];
            sum += vs[j] * row[j];
          }
          dks[i] += f * sum;  // + exp(B - b_s) . (v_s dS^T)
        }
        float* dvo = d.dv + (t0 + s) * d.dv_stride + hk * dv;
        for (int j = 0; j < dv; ++j) dvo[j] += tmp[j];
        float* dko = d.dk + (t0 + s) * d.dk_stride + hk * dk;
        for (int i = 0; i < dk; ++i) dko[i] += dks[i];
      }
      for (int r = 0; r < L; ++r) {  // this head's q . dq - k . dk
        const float* qt = Q(t0 + r);
        const float* kt = K(t0 + r);
        for (int i = 0; i < dk; ++i) dc[(t0 + r) * dk + i] = qt[i] * dq[r * dk + i] - kt[i] * dkv[r * dk + i];
      }
    }
    std::vector<float> run(final_term);  // reverse cumsum, plus the final-state term everywhere
    for (int t = T - 1; t >= 0; --t) {
      float* dg = d.dg + t * d.dg_stride + hk * dk;
      for (int i = 0; i < dk; ++i) {
        run[i] += dc[t * dk + i];
        dg[i] += run[i];
      }
    }
  }
  return true;
}

}  // namespace gla::cpu
