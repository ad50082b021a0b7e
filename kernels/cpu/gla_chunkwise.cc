// GLA chunkwise form with two-level chunking (the CPU reference of the CUDA prefill kernel).
//
// Within a chunk of L tokens starting from state S, with b_t = sum_{u<=t} g_u (per key dim):
//   o_t = scale * [ (q_t . exp(b_t)) S  +  sum_{s<=t} A_ts v_s ],  A_ts = sum_i q_ti k_si exp(b_ti - b_si)
//   S'  = diag(exp(b_{L-1})) S + sum_s (k_s . exp(b_{L-1} - b_s))^T v_s
// A is built per sub-chunk pair. For s in sub-chunk j < i (t in i), with r = first row of i:
//   A_ts = (q_t . exp(b_t - b_r)) . (k_s . exp(b_r - b_s))    both exponents <= 0 (b decreases),
// so the factorised matmul never overflows; pairs inside one sub-chunk use exp(b_t - b_s) directly.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/gla.h"

namespace gla::cpu {

namespace {

struct HeadView {
  const float *q, *k, *v, *g;
  float *o, *S;
};

void ChunkOneHead(const GlaSeqParams& p, const HeadView& hv, int t0, int L, int c, std::vector<float>& b,
                  std::vector<float>& qr, std::vector<float>& kr, std::vector<float>& A) {
  const int dk = p.dk, dv = p.dv;
  auto q = [&](int t) { return hv.q + (t0 + t) * p.q_stride; };
  auto k = [&](int t) { return hv.k + (t0 + t) * p.k_stride; };
  auto v = [&](int t) { return hv.v + (t0 + t) * p.v_stride; };
  auto o = [&](int t) { return hv.o + (t0 + t) * p.o_stride; };

  // b: inclusive cumulative log gate within the chunk [L, dk].
  for (int t = 0; t < L; ++t) {
    const float* g = hv.g + (t0 + t) * p.g_stride;
    for (int i = 0; i < dk; ++i) b[t * dk + i] = (t ? b[(t - 1) * dk + i] : 0.0f) + g[i];
  }
  // Inter-chunk: o_t = (scale q_t . exp(b_t)) S.
  for (int t = 0; t < L; ++t) {
    float* ot = o(t);
    for (int j = 0; j < dv; ++j) ot[j] = 0.0f;
    for (int i = 0; i < dk; ++i) {
      const float qe = p.scale * q(t)[i] * std::exp(b[t * dk + i]);
      const float* Srow = hv.S + static_cast<int64_t>(i) * dv;
      for (int j = 0; j < dv; ++j) ot[j] += qe * Srow[j];
    }
  }
  // Intra-chunk, sub-chunk by sub-chunk: A [L, L] (lower triangle), then o += A v.
  for (int i0 = 0; i0 < L; i0 += c) {
    const int i1 = std::min(i0 + c, L), r = i0;
    for (int t = i0; t < i1; ++t)  // q relative to the reference row r
      for (int x = 0; x < dk; ++x) qr[t * dk + x] = p.scale * q(t)[x] * std::exp(b[t * dk + x] - b[r * dk + x]);
    for (int j0 = 0; j0 < i0; j0 += c) {  // earlier sub-chunks: one matmul
      const int j1 = j0 + c;
      for (int s = j0; s < j1; ++s)
        for (int x = 0; x < dk; ++x) kr[s * dk + x] = k(s)[x] * std::exp(b[r * dk + x] - b[s * dk + x]);
      for (int t = i0; t < i1; ++t)
        for (int s = j0; s < j1; ++s) {
          float acc = 0.0f;
          for (int x = 0; x < dk; ++x) acc += qr[t * dk + x] * kr[s * dk + x];
          A[t * L + s] = acc;
        }
    }
    for (int t = i0; t < i1; ++t)  // the diagonal sub-chunk: exact pairwise differences
      for (int s = i0; s <= t; ++s) {
        float acc = 0.0f;
        for (int x = 0; x < dk; ++x) acc += q(t)[x] * k(s)[x] * std::exp(b[t * dk + x] - b[s * dk + x]);
        A[t * L + s] = p.scale * acc;
      }
  }
  for (int t = 0; t < L; ++t) {
    float* ot = o(t);
    for (int s = 0; s <= t; ++s) {
      const float a = A[t * L + s];
      const float* vs = v(s);
      for (int j = 0; j < dv; ++j) ot[j] += a * vs[j];
    }
  }
  // State: S' = exp(b_last) . S + sum_s (k_s . exp(b_last - b_s))^T v_s.
  const float* blast = &b[(L - 1) * dk];
  for (int x = 0; x < dk; ++x) {
    float* Srow = hv.S + static_cast<int64_t>(x) * dv;
    const float decay = std::exp(blast[x]);
    for (int j = 0; j < dv; ++j) Srow[j] *= decay;
    for (int s = 0; s < L; ++s) {
      const float ks = k(s)[x] * std::exp(blast[x] - b[s * dk + x]);
      const float* vs = v(s);
      for (int j = 0; j < dv; ++j) Srow[j] += ks * vs[j];
    }
  }
}

}  // namespace

bool GlaChunkwise(const GlaSeqParams& p, int chunk, int sub_chunk) {
  if (sub_chunk <= 0 || chunk < sub_chunk || chunk % sub_chunk != 0) return false;
  const int groups = p.H / p.Hkv;
  std::vector<float> b(static_cast<size_t>(chunk) * p.dk), qr(b.size()), kr(b.size());
  std::vector<float> A(static_cast<size_t>(chunk) * chunk);
  for (int h = 0; h < p.H; ++h) {
    const int hk = h / groups;
    const HeadView hv{p.q + h * p.dk, p.k + hk * p.dk, p.v + hk * p.dv, p.g + hk * p.dk, p.o + h * p.dv,
                      p.state + static_cast<int64_t>(h) * p.dk * p.dv};
    for (int t0 = 0; t0 < p.T; t0 += chunk) ChunkOneHead(p, hv, t0, std::min(chunk, p.T - t0), sub_chunk, b, qr, kr, A);
  }
  return true;
}

}  // namespace gla::cpu
