// The tensor-core chunkwise backward (cuda::GlaBackwardChunk) against the CPU definition's backward
// (cpu::GlaBackwardNaive, itself checked against fla's float64 gradients and finite differences in
// tests/unit/gla_backward_test.cc): packed variable-length sequences (0, 1, 63, 64, 65, 200, ...),
// with and without initial states and final-state gradients, GQA, every supported dk, and one long
// sequence. Each gradient is compared by relative error ||got - ref|| / ||ref|| per sequence;
// outputs are NaN-poisoned first, so a row left unwritten fails. Unsupported shapes and a short
// workspace are refused with no launch. Some cases run the forward first and let the backward
// reuse its prep (a training step).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "kernels/gla.h"
#include "tests/cuda/cuda_test_util.h"

namespace gla {
namespace {

using testing::DeviceBuffers;
using testing::RandomGates;
using testing::RelErr;

// bf16 operands with fp32 accumulation, as the forward (tests/cuda/gla_prefill_chunk_cuda_test.cc:
// 2e-2). dg is a reverse cumsum of q.dq - k.dk, whose terms cancel: its bound is looser.
constexpr double kBound = 2e-2, kGateBound = 4e-2;

struct Case {
  const char* name;
  int H, Hkv, dk, dv;
  std::vector<int> lengths;
  bool with_h0, with_dht;
  bool reuse_forward_prep = false;  // run GlaPrefillChunk on the workspace first and reuse its prep
};

struct Host {
  std::vector<float> q, k, v, g, h0, d_o, d_ht;
};

class GlaBackwardChunkCuda : public ::testing::TestWithParam<Case> {};

TEST_P(GlaBackwardChunkCuda, PackedSequencesMatchTheDefinition) {
  GLA_REQUIRE_CUDA_DEVICE();
  const Case& c = GetParam();
  const int S = static_cast<int>(c.lengths.size());
  std::vector<int32_t> cu(1, 0);
  for (int len : c.lengths) cu.push_back(cu.back() + len);
  const int T = cu.back();
  std::mt19937 rng(77 + T + c.dk + c.dv + c.H);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  auto random = [&](size_t n) {
    std::vector<float> v(n);
    for (auto& x : v) x = u(rng);
    return v;
  };
  const int64_t qw = int64_t{c.H} * c.dk, kw = int64_t{c.Hkv} * c.dk, vw = int64_t{c.Hkv} * c.dv,
                ow = int64_t{c.H} * c.dv, state = int64_t{c.H} * c.dk * c.dv;
  Host in;
  in.q = random(size_t(T) * qw);
  in.k = random(size_t(T) * kw);
  in.v = random(size_t(T) * vw);
  in.g = RandomGates(size_t(T) * kw, rng);
  in.d_o = random(size_t(T) * ow);
  in.h0 = c.with_h0 ? random(size_t(S) * state) : std::vector<float>(size_t(S) * state, 0.f);
  in.d_ht = c.with_dht ? random(size_t(S) * state) : std::vector<float>(size_t(S) * state, 0.f);

  DeviceBuffers buf;
  float *q, *k, *v, *g, *h0, *d_o, *d_ht;
  int32_t* d_cu;
  GLA_CUDA_OK(buf.Upload(in.q, &q));
  GLA_CUDA_OK(buf.Upload(in.k, &k));
  GLA_CUDA_OK(buf.Upload(in.v, &v));
  GLA_CUDA_OK(buf.Upload(in.g, &g));
  GLA_CUDA_OK(buf.Upload(in.h0, &h0));
  GLA_CUDA_OK(buf.Upload(in.d_o, &d_o));
  GLA_CUDA_OK(buf.Upload(in.d_ht, &d_ht));
  GLA_CUDA_OK(buf.Upload(cu, &d_cu));
  const size_t sizes[5] = {size_t(T) * qw, size_t(T) * kw, size_t(T) * vw, size_t(T) * kw, size_t(S) * state};
  void* out[5];
  for (int i = 0; i < 5; ++i) {
    GLA_CUDA_OK(buf.Alloc(sizes[i] * 4, &out[i]));
    GLA_CUDA_OK(cudaMemset(out[i], 0xFF, sizes[i] * 4));  // NaN poison
  }
  GlaBackwardCudaParams p;
  p.num_seqs = S;
  p.H = c.H;
  p.Hkv = c.Hkv;
  p.dk = c.dk;
  p.dv = c.dv;
  p.cu_seqlens = d_cu;
  p.scale = 1.0f / std::sqrt(float(c.dk));
  p.q = q;
  p.q_stride = qw;
  p.k = k;
  p.k_stride = kw;
  p.v = v;
  p.v_stride = vw;
  p.g = g;
  p.g_stride = kw;
  p.h0 = c.with_h0 ? h0 : nullptr;
  p.d_o = d_o;
  p.d_o_stride = ow;
  p.d_ht = c.with_dht ? d_ht : nullptr;
  p.d_q = static_cast<float*>(out[0]);
  p.d_q_stride = qw;
  p.d_k = static_cast<float*>(out[1]);
  p.d_k_stride = kw;
  p.d_v = static_cast<float*>(out[2]);
  p.d_v_stride = vw;
  p.d_g = static_cast<float*>(out[3]);
  p.d_g_stride = kw;
  p.d_h0 = static_cast<float*>(out[4]);
  p.total_tokens = T;
  p.workspace_bytes = cuda::GlaBackwardChunkWorkspaceBytes(p, T);
  GlaPrefillCudaParams f;  // the step's forward, when the backward reuses its prep
  f.q = q;
  f.q_stride = qw;
  f.k = k;
  f.k_stride = kw;
  f.v = v;
  f.v_stride = vw;
  f.g = g;
  f.g_stride = kw;
  f.num_seqs = S;
  f.H = c.H;
  f.Hkv = c.Hkv;
  f.dk = c.dk;
  f.dv = c.dv;
  f.cu_seqlens = d_cu;
  f.scale = p.scale;
  f.total_tokens = T;
  if (c.reuse_forward_prep)
    p.workspace_bytes = std::max(p.workspace_bytes, cuda::GlaPrefillChunkWorkspaceBytes(f, T));
  GLA_CUDA_OK(buf.Alloc(p.workspace_bytes, &p.workspace));
  GLA_CUDA_OK(cudaMemset(p.workspace, 0xFF, p.workspace_bytes));  // nothing may be read before it is written
  if (c.reuse_forward_prep) {
    void* o;
    GLA_CUDA_OK(buf.Alloc(size_t(T) * ow * 4, &o));
    f.o = static_cast<float*>(o);
    f.o_stride = ow;
    f.workspace = p.workspace;
    f.workspace_bytes = p.workspace_bytes;
    GLA_CUDA_OK(cuda::GlaPrefillChunk(f, nullptr));
    p.reuse_forward_prep = true;
  }
  GLA_CUDA_OK(cuda::GlaBackwardChunk(p, nullptr));
  GLA_CUDA_OK(cudaDeviceSynchronize());
  std::vector<float> got[5];
  for (int i = 0; i < 5; ++i) {
    got[i].resize(sizes[i]);
    GLA_CUDA_OK(cudaMemcpy(got[i].data(), out[i], sizes[i] * 4, cudaMemcpyDeviceToHost));
  }

  std::vector<float> ref[5];
  for (int i = 0; i < 5; ++i) ref[i].assign(sizes[i], 0.f);
  const char* names[5] = {"dq", "dk", "dv", "dg", "dh0"};
  const int64_t widths[5] = {qw, kw, vw, kw, 0};
  double worst[5] = {};
  for (int n = 0; n < S; ++n) {
    std::vector<float> h0n(in.h0.begin() + n * state, in.h0.begin() + (n + 1) * state);
    GlaSeqParams r;
    r.T = c.lengths[n];
    r.H = c.H;
    r.Hkv = c.Hkv;
    r.dk = c.dk;
    r.dv = c.dv;
    r.q = in.q.data() + size_t(cu[n]) * qw;
    r.k = in.k.data() + size_t(cu[n]) * kw;
    r.v = in.v.data() + size_t(cu[n]) * vw;
    r.g = in.g.data() + size_t(cu[n]) * kw;
    r.q_stride = qw;
    r.k_stride = r.g_stride = kw;
    r.v_stride = vw;
    r.state = h0n.data();
    r.scale = p.scale;
    GlaSeqGrads d;
    d.d_o = in.d_o.data() + size_t(cu[n]) * ow;
    d.d_o_stride = ow;
    d.d_ht = c.with_dht ? in.d_ht.data() + n * state : nullptr;
    d.dq = ref[0].data() + size_t(cu[n]) * qw;
    d.dq_stride = qw;
    d.dk = ref[1].data() + size_t(cu[n]) * kw;
    d.dk_stride = kw;
    d.dv = ref[2].data() + size_t(cu[n]) * vw;
    d.dv_stride = vw;
    d.dg = ref[3].data() + size_t(cu[n]) * kw;
    d.dg_stride = kw;
    d.dh0 = ref[4].data() + n * state;
    cpu::GlaBackwardNaive(r, d);
    for (int i = 0; i < 5; ++i) {
      const size_t at = i == 4 ? size_t(n) * state : size_t(cu[n]) * widths[i];
      const size_t count = i == 4 ? size_t(state) : size_t(c.lengths[n]) * widths[i];
      if (count == 0) continue;
      const double e = RelErr(got[i].data() + at, ref[i].data() + at, count);
      worst[i] = std::max(worst[i], e);
      EXPECT_LT(e, i == 3 ? kGateBound : kBound) << names[i] << " of sequence " << n << " (T=" << c.lengths[n] << ")";
    }
  }
  std::printf("[ backward ] %-16s T=%-5d rel err: dq %.2e dk %.2e dv %.2e dg %.2e dh0 %.2e (workspace %.1f MB)\n",
              c.name, T, worst[0], worst[1], worst[2], worst[3], worst[4], p.workspace_bytes / 1e6);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, GlaBackwardChunkCuda,
    ::testing::Values(Case{"small_mixed", 2, 2, 64, 64, {1, 63, 64, 65, 0, 200}, true, true},
                      Case{"small_from_zero", 2, 2, 64, 64, {130, 7}, false, false},
                      Case{"gla340M", 4, 4, 128, 256, {300, 1, 129}, true, true},
                      Case{"gla13B", 4, 4, 256, 512, {200, 64}, true, true},
                      Case{"gqa", 4, 2, 128, 64, {100, 33, 250}, true, true},
                      Case{"gqa_dk256_no_dht", 8, 2, 256, 128, {77, 150}, true, false},
                      Case{"long", 2, 2, 128, 128, {3000}, true, true},
                      Case{"after_forward", 4, 4, 256, 512, {700, 33}, true, true, true},
                      Case{"after_forward_gqa", 4, 2, 128, 128, {5, 64, 400}, true, true, true}),
    [](const ::testing::TestParamInfo<Case>& info) { return std::string(info.param.name); });

TEST(GlaBackwardChunkCuda, RefusesUnsupportedShapesAndShortWorkspaces) {
  GLA_REQUIRE_CUDA_DEVICE();
  DeviceBuffers buf;
  void* mem;
  GLA_CUDA_OK(buf.Alloc(1 << 20, &mem));
  float* f = static_cast<float*>(mem);
  GlaBackwardCudaParams p;
  p.num_seqs = 1;
  p.H = p.Hkv = 1;
  p.dk = 64;
  p.dv = 64;
  p.cu_seqlens = reinterpret_cast<const int32_t*>(f);
  p.q = p.k = p.v = p.g = p.d_o = f;
  p.d_q = p.d_k = p.d_v = p.d_g = f;
  p.q_stride = p.k_stride = p.v_stride = p.g_stride = p.d_o_stride = 64;
  p.d_q_stride = p.d_k_stride = p.d_v_stride = p.d_g_stride = 64;
  p.total_tokens = 10;
  p.workspace = f;
  p.workspace_bytes = cuda::GlaBackwardChunkWorkspaceBytes(p, 10) - 1;
  EXPECT_EQ(cuda::GlaBackwardChunk(p, nullptr), cudaErrorInvalidValue) << "workspace one byte short";
  p.workspace_bytes = 1 << 20;
  GlaBackwardCudaParams bad = p;
  bad.dk = 32;
  EXPECT_EQ(cuda::GlaBackwardChunk(bad, nullptr), cudaErrorInvalidValue) << "dk 32";
  bad = p;
  bad.dv = 96;
  EXPECT_EQ(cuda::GlaBackwardChunk(bad, nullptr), cudaErrorInvalidValue) << "dv 96";
  bad = p;
  bad.H = 3;
  bad.Hkv = 2;
  EXPECT_EQ(cuda::GlaBackwardChunk(bad, nullptr), cudaErrorInvalidValue) << "H % Hkv != 0";
  bad = p;
  bad.q_stride = 66;
  EXPECT_EQ(cuda::GlaBackwardChunk(bad, nullptr), cudaErrorInvalidValue) << "stride not a multiple of 4";
  bad = p;
  bad.d_g = nullptr;
  EXPECT_EQ(cuda::GlaBackwardChunk(bad, nullptr), cudaErrorInvalidValue) << "missing output";
  EXPECT_EQ(cudaGetLastError(), cudaSuccess) << "a refusal must not launch";
}

}  // namespace
}  // namespace gla
