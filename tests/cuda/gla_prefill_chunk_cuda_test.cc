// The tensor-core chunkwise prefill (cuda::GlaPrefillChunk) against the CPU definition
// (cpu::GlaRecurrentNaive): packed variable-length sequences (0, 1, 63, 65, 200, ...), states from
// scattered pool slots or from zero, GQA, dv not a multiple of 64, and sequences long enough to be
// cut into segments that run in parallel. Outputs and final states are compared by relative error
// ||out - ref|| / ||ref|| (bf16 matmuls: bound 2e-2); other slots must stay bit-identical.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/gla.h"
#include "tests/cuda/cuda_test_util.h"

namespace gla {
namespace {

constexpr double kBf16Bound = 2e-2;

struct Case {
  const char* name;
  int H, Hkv, dk, dv;
  std::vector<int> lengths;
  bool with_slots;
};

using testing::DeviceBuffers;
using testing::RandomGates;
using testing::RelErr;

class GlaPrefillChunkCuda : public ::testing::TestWithParam<Case> {};

TEST_P(GlaPrefillChunkCuda, PackedSequencesMatchTheDefinition) {
  GLA_REQUIRE_CUDA_DEVICE();
  const Case& c = GetParam();
  const int S = static_cast<int>(c.lengths.size());
  std::vector<int32_t> cu(1, 0);
  for (int len : c.lengths) cu.push_back(cu.back() + len);
  const int T = cu.back();
  std::mt19937 rng(1234 + T + c.dk + c.dv);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  auto random = [&](size_t n) {
    std::vector<float> v(n);
    for (auto& x : v) x = u(rng);
    return v;
  };
  const auto q = random(size_t(T) * c.H * c.dk), k = random(size_t(T) * c.Hkv * c.dk);
  const auto v = random(size_t(T) * c.Hkv * c.dv);
  const auto g = RandomGates(size_t(T) * c.Hkv * c.dk, rng);
  const int pool_slots = S + 3;
  const int64_t state_floats = int64_t{c.H} * c.dk * c.dv;
  const auto pool = random(size_t(pool_slots) * state_floats);
  std::vector<int32_t> perm(pool_slots);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  const std::vector<int32_t> slots(perm.begin(), perm.begin() + S);

  DeviceBuffers buf;
  float *d_q, *d_k, *d_v, *d_g, *d_pool;
  int32_t *d_cu, *d_slots;
  GLA_CUDA_OK(buf.Upload(q, &d_q));
  GLA_CUDA_OK(buf.Upload(k, &d_k));
  GLA_CUDA_OK(buf.Upload(v, &d_v));
  GLA_CUDA_OK(buf.Upload(g, &d_g));
  GLA_CUDA_OK(buf.Upload(pool, &d_pool));
  GLA_CUDA_OK(buf.Upload(cu, &d_cu));
  GLA_CUDA_OK(buf.Upload(slots, &d_slots));
  void* d_o = nullptr;
  const size_t on = size_t(T) * c.H * c.dv;
  GLA_CUDA_OK(buf.Alloc(on * 4, &d_o));
  GLA_CUDA_OK(cudaMemset(d_o, 0xFF, on * 4));  // NaN poison: every row must be written
  GlaPrefillCudaParams p;
  p.num_seqs = S;
  p.H = c.H;
  p.Hkv = c.Hkv;
  p.dk = c.dk;
  p.dv = c.dv;
  p.q = d_q;
  p.q_stride = int64_t{c.H} * c.dk;
  p.k = d_k;
  p.g = d_g;
  p.k_stride = p.g_stride = int64_t{c.Hkv} * c.dk;
  p.v = d_v;
  p.v_stride = int64_t{c.Hkv} * c.dv;
  p.o = static_cast<float*>(d_o);
  p.o_stride = int64_t{c.H} * c.dv;
  p.cu_seqlens = d_cu;
  p.state_base = d_pool;
  p.slot_stride = state_floats;
  p.slots = c.with_slots ? d_slots : nullptr;
  p.scale = 1.0f / std::sqrt(float(c.dk));
  p.total_tokens = T;
  p.workspace_bytes = cuda::GlaPrefillChunkWorkspaceBytes(p, T);
  GLA_CUDA_OK(buf.Alloc(p.workspace_bytes, &p.workspace));
  GLA_CUDA_OK(cuda::GlaPrefillChunk(p, nullptr));
  GLA_CUDA_OK(cudaDeviceSynchronize());
  std::vector<float> o(on), pool_gpu(pool.size());
  GLA_CUDA_OK(cudaMemcpy(o.data(), d_o, on * 4, cudaMemcpyDeviceToHost));
  GLA_CUDA_OK(cudaMemcpy(pool_gpu.data(), d_pool, pool.size() * 4, cudaMemcpyDeviceToHost));

  std::vector<float> ref_pool = pool, o_ref(on);
  std::vector<float> zero(state_floats);
  double worst_o = 0, worst_state = 0;
  for (int n = 0; n < S; ++n) {
    std::fill(zero.begin(), zero.end(), 0.0f);
    GlaSeqParams r;
    r.T = c.lengths[n];
    r.H = c.H;
    r.Hkv = c.Hkv;
    r.dk = c.dk;
    r.dv = c.dv;
    r.q = q.data() + size_t(cu[n]) * p.q_stride;
    r.k = k.data() + size_t(cu[n]) * p.k_stride;
    r.g = g.data() + size_t(cu[n]) * p.g_stride;
    r.v = v.data() + size_t(cu[n]) * p.v_stride;
    r.o = o_ref.data() + size_t(cu[n]) * p.o_stride;
    r.q_stride = p.q_stride;
    r.k_stride = r.g_stride = p.k_stride;
    r.v_stride = p.v_stride;
    r.o_stride = p.o_stride;
    r.state = c.with_slots ? ref_pool.data() + slots[n] * state_floats : zero.data();
    r.scale = p.scale;
    cpu::GlaRecurrentNaive(r);
    if (c.lengths[n] == 0) continue;
    const double e = RelErr(o.data() + size_t(cu[n]) * p.o_stride, r.o, size_t(c.lengths[n]) * p.o_stride);
    worst_o = std::max(worst_o, e);
    EXPECT_LT(e, kBf16Bound) << "o of sequence " << n << " (T=" << c.lengths[n] << ")";
  }
  for (int s = 0; s < pool_slots; ++s) {
    const float* got = pool_gpu.data() + s * state_floats;
    const auto it = std::find(slots.begin(), slots.end(), s);
    const bool used = c.with_slots && it != slots.end();
    if (used && c.lengths[it - slots.begin()] > 0) {
      const double e = RelErr(got, ref_pool.data() + s * state_floats, state_floats);
      worst_state = std::max(worst_state, e);
      EXPECT_LT(e, kBf16Bound) << "final state, slot " << s;
    } else {
      EXPECT_TRUE(std::equal(got, got + state_floats, pool.data() + s * state_floats)) << "slot " << s << " changed";
    }
  }
  std::printf("[ chunk    ] %-18s T=%-5d rel err: o %.2e, final states %.2e (workspace %.1f MB)\n", c.name, T, worst_o,
              worst_state, p.workspace_bytes / 1e6);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, GlaPrefillChunkCuda,
    ::testing::Values(Case{"gla13B_mixed", 4, 4, 256, 512, {1, 63, 65, 200}, true},
                      Case{"gla13B_from_zero", 4, 4, 256, 512, {130, 1}, false},
                      Case{"gla340M_mixed", 4, 4, 128, 256, {130, 1, 64, 0, 37}, true},
                      Case{"gla340M_from_zero", 4, 4, 128, 256, {77, 5, 200}, false},
                      Case{"single_token", 4, 4, 128, 256, {1}, true},
                      Case{"gqa_dv96", 4, 2, 64, 96, {9, 1, 33, 128}, true},
                      Case{"gqa_dk256", 8, 2, 256, 64, {100, 29}, true},
                      // One long sequence: too few blocks for the GPU, so it is cut into segments.
                      Case{"gla13B_segments", 4, 4, 256, 512, {3000}, true},
                      Case{"gla340M_segments", 4, 4, 128, 256, {4100}, true},
                      Case{"gla340M_segments0", 4, 4, 128, 256, {4100}, false}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(GlaPrefillChunkCudaShapes, UnsupportedShapesAreInvalidValue) {
  GLA_REQUIRE_CUDA_DEVICE();
  std::vector<int32_t> cu = {0, 4};
  DeviceBuffers buf;
  int32_t* d_cu;
  GLA_CUDA_OK(buf.Upload(cu, &d_cu));
  void* d_rows = nullptr;
  GLA_CUDA_OK(buf.Alloc(size_t(4) * 4 * 512 * 4, &d_rows));
  float* rows = static_cast<float*>(d_rows);
  GlaPrefillCudaParams p;
  p.num_seqs = 1;
  p.H = p.Hkv = 1;
  p.dk = 96;  // not in {64, 128, 256}
  p.dv = 64;
  p.q = p.k = p.g = p.v = rows;
  p.o = rows;
  p.q_stride = p.k_stride = p.g_stride = p.v_stride = p.o_stride = 512;
  p.cu_seqlens = d_cu;
  p.total_tokens = 4;
  p.workspace_bytes = cuda::GlaPrefillChunkWorkspaceBytes(p, 4);
  GLA_CUDA_OK(buf.Alloc(p.workspace_bytes + (1 << 20), &p.workspace));
  EXPECT_EQ(cuda::GlaPrefillChunk(p, nullptr), cudaErrorInvalidValue);
  p.dk = 64;
  p.dv = 30;  // not a multiple of 4
  EXPECT_EQ(cuda::GlaPrefillChunk(p, nullptr), cudaErrorInvalidValue);
  p.dv = 64;
  p.H = 3;
  p.Hkv = 2;  // H % Hkv != 0
  EXPECT_EQ(cuda::GlaPrefillChunk(p, nullptr), cudaErrorInvalidValue);
  p.H = p.Hkv = 1;
  p.workspace_bytes = cuda::GlaPrefillChunkWorkspaceBytes(p, 4) - 1;  // too small
  EXPECT_EQ(cuda::GlaPrefillChunk(p, nullptr), cudaErrorInvalidValue);
  p.workspace_bytes = cuda::GlaPrefillChunkWorkspaceBytes(p, 4);
  p.q_stride = 511;  // rows not 16-byte aligned
  EXPECT_EQ(cuda::GlaPrefillChunk(p, nullptr), cudaErrorInvalidValue);
  p.q_stride = 512;
  EXPECT_EQ(cuda::GlaPrefillChunk(p, nullptr), cudaSuccess);
  GLA_CUDA_OK(cudaDeviceSynchronize());
}

}  // namespace
}  // namespace gla
