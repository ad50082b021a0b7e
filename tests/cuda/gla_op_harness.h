// One harness for the GLA kernel tests (issue 18): a problem (packed variable-length sequences,
// random inputs, initial states in scattered pool slots), its answers from the CPU definition
// (cpu::GlaRecurrentNaive forward, cpu::GlaBackwardNaive backward), its copy on the GPU, the kernel
// params filled from it in one place, and the comparisons. The forward test
// (gla_forward_cuda_test.cc: recurrent and chunkwise kernels) and the backward test
// (gla_backward_chunk_cuda_test.cc) differ only in what they launch and the bound they hold it to.
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/gla.h"
#include "tests/cuda/cuda_test_util.h"

namespace gla::testing {

struct GlaCase {
  const char* name;
  int H, Hkv, dk, dv;
  std::vector<int> lengths;  // packed sequences; 0 is allowed
  bool with_h0;              // start from random states (forward: in scattered pool slots)
  bool with_dht = false;     // backward: the final states have an upstream gradient
  bool reuse_forward_prep = false;  // backward: run the chunkwise forward on the workspace first
};

// Random inputs for a case, rows packed as the engine packs them ([T, heads, dim], row-major).
struct GlaProblem {
  GlaCase c;
  int S = 0, T = 0;
  int64_t qw = 0, kw = 0, vw = 0, ow = 0, state = 0;  // row widths and state size in floats
  float scale = 1.0f;
  std::vector<int32_t> cu;                 // [S + 1] row offsets
  std::vector<float> q, k, v, g, d_o;      // rows (d_o: upstream gradient of o)
  std::vector<float> h0, d_ht;             // [S, H, dk, dv]; zeros when the case has none
  int pool_slots = 0;                      // the forward's state pool: h0 scattered into it
  std::vector<int32_t> slots;              // [S] sequence n's slot
  std::vector<float> pool;                 // [pool_slots, H, dk, dv]; unused slots random

  // Sequence n's rows of a packed array `width` floats wide.
  size_t Row(int n, int64_t width) const { return size_t(cu[n]) * width; }
  size_t Rows(int n, int64_t width) const { return size_t(c.lengths[n]) * width; }
};

inline GlaProblem MakeProblem(const GlaCase& c, uint32_t seed) {
  GlaProblem p;
  p.c = c;
  p.S = static_cast<int>(c.lengths.size());
  p.cu.assign(1, 0);
  for (int len : c.lengths) p.cu.push_back(p.cu.back() + len);
  p.T = p.cu.back();
  p.qw = int64_t{c.H} * c.dk;
  p.kw = int64_t{c.Hkv} * c.dk;
  p.vw = int64_t{c.Hkv} * c.dv;
  p.ow = int64_t{c.H} * c.dv;
  p.state = int64_t{c.H} * c.dk * c.dv;
  p.scale = 1.0f / std::sqrt(float(c.dk));
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  auto random = [&](size_t n) {
    std::vector<float> v(n);
    for (auto& x : v) x = u(rng);
    return v;
  };
  const size_t T = p.T, S = p.S;
  p.q = random(T * p.qw);
  p.k = random(T * p.kw);
  p.v = random(T * p.vw);
  p.g = RandomGates(T * p.kw, rng);
  p.d_o = random(T * p.ow);
  p.h0 = c.with_h0 ? random(S * p.state) : std::vector<float>(S * p.state, 0.f);
  p.d_ht = c.with_dht ? random(S * p.state) : std::vector<float>(S * p.state, 0.f);
  p.pool_slots = p.S + 3;
  p.pool = random(size_t(p.pool_slots) * p.state);
  std::vector<int32_t> perm(p.pool_slots);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  p.slots.assign(perm.begin(), perm.begin() + p.S);
  for (int n = 0; n < p.S; ++n)
    std::copy_n(p.h0.begin() + n * p.state, p.state, p.pool.begin() + p.slots[n] * p.state);
  return p;
}

// The definition's forward: every output row, and each sequence's final state.
struct GlaForwardAnswer {
  std::vector<float> o, ht;  // [T, H, dv], [S, H, dk, dv]
};

inline GlaSeqParams ReferenceParams(const GlaProblem& p, int n, float* state) {
  GlaSeqParams r;
  r.T = p.c.lengths[n];
  r.H = p.c.H;
  r.Hkv = p.c.Hkv;
  r.dk = p.c.dk;
  r.dv = p.c.dv;
  r.q = p.q.data() + p.Row(n, p.qw);
  r.k = p.k.data() + p.Row(n, p.kw);
  r.g = p.g.data() + p.Row(n, p.kw);
  r.v = p.v.data() + p.Row(n, p.vw);
  r.q_stride = p.qw;
  r.k_stride = r.g_stride = p.kw;
  r.v_stride = p.vw;
  r.o_stride = p.ow;
  r.state = state;
  r.scale = p.scale;
  return r;
}

inline GlaForwardAnswer ReferenceForward(const GlaProblem& p) {
  GlaForwardAnswer a;
  a.o.assign(size_t(p.T) * p.ow, 0.f);
  a.ht = p.h0;
  for (int n = 0; n < p.S; ++n) {
    GlaSeqParams r = ReferenceParams(p, n, a.ht.data() + n * p.state);
    r.o = a.o.data() + p.Row(n, p.ow);
    cpu::GlaRecurrentNaive(r);
  }
  return a;
}

// The definition's backward: gradients of q, k, v, g (rows) and of the initial states.
struct GlaGradients {
  std::vector<float> d[5];  // dq, dk, dv, dg, dh0
  static constexpr const char* kNames[5] = {"dq", "dk", "dv", "dg", "dh0"};
};

inline GlaGradients ReferenceBackward(const GlaProblem& p) {
  GlaGradients out;
  const size_t sizes[5] = {size_t(p.T) * p.qw, size_t(p.T) * p.kw, size_t(p.T) * p.vw, size_t(p.T) * p.kw,
                           size_t(p.S) * p.state};
  for (int i = 0; i < 5; ++i) out.d[i].assign(sizes[i], 0.f);
  for (int n = 0; n < p.S; ++n) {
    std::vector<float> h0n(p.h0.begin() + n * p.state, p.h0.begin() + (n + 1) * p.state);
    const GlaSeqParams r = ReferenceParams(p, n, h0n.data());
    GlaSeqGrads d;
    d.d_o = p.d_o.data() + p.Row(n, p.ow);
    d.d_o_stride = p.ow;
    d.d_ht = p.c.with_dht ? p.d_ht.data() + n * p.state : nullptr;
    d.dq = out.d[0].data() + p.Row(n, p.qw);
    d.dq_stride = p.qw;
    d.dk = out.d[1].data() + p.Row(n, p.kw);
    d.dk_stride = p.kw;
    d.dv = out.d[2].data() + p.Row(n, p.vw);
    d.dv_stride = p.vw;
    d.dg = out.d[3].data() + p.Row(n, p.kw);
    d.dg_stride = p.kw;
    d.dh0 = out.d[4].data() + n * p.state;
    cpu::GlaBackwardNaive(r, d);
  }
  return out;
}

// The problem on the GPU (freed with the object).
struct GlaDeviceProblem {
  DeviceBuffers buf;
  float *q = nullptr, *k = nullptr, *v = nullptr, *g = nullptr, *d_o = nullptr, *h0 = nullptr, *d_ht = nullptr,
        *pool = nullptr;
  int32_t *cu = nullptr, *slots = nullptr;

  cudaError_t Upload(const GlaProblem& p) {
    for (auto [host, dev] : {std::pair{&p.q, &q}, {&p.k, &k}, {&p.v, &v}, {&p.g, &g}, {&p.d_o, &d_o},
                             {&p.h0, &h0}, {&p.d_ht, &d_ht}, {&p.pool, &pool}})
      if (cudaError_t e = buf.Upload(*host, dev); e != cudaSuccess) return e;
    if (cudaError_t e = buf.Upload(p.cu, &cu); e != cudaSuccess) return e;
    return buf.Upload(p.slots, &slots);
  }
  // A device array of `floats` floats filled with NaN: every element the kernel must write is
  // checked, so one it skips fails the comparison.
  cudaError_t Poisoned(size_t floats, float** out) {
    void* mem = nullptr;
    if (cudaError_t e = buf.Alloc(floats * 4, &mem); e != cudaSuccess) return e;
    *out = static_cast<float*>(mem);
    return cudaMemset(mem, 0xFF, floats * 4);
  }
};

// The forward's params for the problem, states in the pool's slots when the case has initial
// states (read there, final states written back), none otherwise (start from zero, none kept).
inline GlaPrefillCudaParams ForwardParams(const GlaProblem& p, const GlaDeviceProblem& d, float* o) {
  GlaPrefillCudaParams f;
  f.num_seqs = p.S;
  f.H = p.c.H;
  f.Hkv = p.c.Hkv;
  f.dk = p.c.dk;
  f.dv = p.c.dv;
  f.q = d.q;
  f.q_stride = p.qw;
  f.k = d.k;
  f.g = d.g;
  f.k_stride = f.g_stride = p.kw;
  f.v = d.v;
  f.v_stride = p.vw;
  f.o = o;
  f.o_stride = p.ow;
  f.cu_seqlens = d.cu;
  f.state = {d.pool, p.state, false};
  f.slots = p.c.with_h0 ? d.slots : nullptr;
  f.scale = p.scale;
  f.total_tokens = p.T;
  return f;
}

// The backward's params on the same inputs (training owns its states: h0 and d_ht as arrays).
inline GlaBackwardCudaParams BackwardParams(const GlaProblem& p, const GlaDeviceProblem& d, float* const out[5]) {
  GlaBackwardCudaParams b;
  static_cast<GlaPrefillCudaParams&>(b) = ForwardParams(p, d, nullptr);
  b.state = {};
  b.slots = nullptr;
  b.h0 = p.c.with_h0 ? d.h0 : nullptr;
  b.d_o = d.d_o;
  b.d_o_stride = p.ow;
  b.d_ht = p.c.with_dht ? d.d_ht : nullptr;
  b.d_q = out[0];
  b.d_q_stride = p.qw;
  b.d_k = out[1];
  b.d_k_stride = p.kw;
  b.d_v = out[2];
  b.d_v_stride = p.vw;
  b.d_g = out[3];
  b.d_g_stride = p.kw;
  b.d_h0 = out[4];
  return b;
}

// Per sequence: ||got - ref|| / ||ref|| over its rows of a packed array, expected below `bound`.
// Returns the worst (0 when every sequence is empty).
inline double ExpectRowsClose(const GlaProblem& p, const float* got, const float* ref, int64_t width, double bound,
                              const std::string& what) {
  double worst = 0;
  for (int n = 0; n < p.S; ++n) {
    if (p.c.lengths[n] == 0) continue;
    const double e = RelErr(got + p.Row(n, width), ref + p.Row(n, width), p.Rows(n, width));
    worst = std::max(worst, e);
    EXPECT_LT(e, bound) << what << " of sequence " << n << " (T=" << p.c.lengths[n] << ")";
  }
  return worst;
}

// The same per sequence over [S, H, dk, dv] state arrays.
inline double ExpectStatesClose(const GlaProblem& p, const float* got, const float* ref, double bound,
                                const std::string& what) {
  double worst = 0;
  for (int n = 0; n < p.S; ++n) {
    const double e = RelErr(got + n * p.state, ref + n * p.state, p.state);
    worst = std::max(worst, e);
    EXPECT_LT(e, bound) << what << " of sequence " << n << " (T=" << p.c.lengths[n] << ")";
  }
  return worst;
}

}  // namespace gla::testing
