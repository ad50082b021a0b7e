// The CUDA fused-recurrent prefill against the CPU definition (cpu::GlaRecurrentNaive): several
// sequences of different lengths (1, 63, 65, 200, ...) packed in one launch, each starting from a
// non-zero state in a scattered pool slot; outputs and final states compared, other slots unchanged.
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/gla.h"
#include "tests/cuda/cuda_test_util.h"

namespace gla {
namespace {

struct Case {
  const char* name;
  int H, Hkv, dk, dv;
  std::vector<int> lengths;
  bool with_slots;
};

double RelErr(const float* out, const float* ref, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    if (std::isnan(out[i])) return INFINITY;
    num += (double(out[i]) - ref[i]) * (double(out[i]) - ref[i]);
    den += double(ref[i]) * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

template <typename T>
T* ToDevice(const std::vector<T>& host) {
  T* d = nullptr;
  if (cudaMalloc(&d, std::max<size_t>(host.size(), 1) * sizeof(T)) != cudaSuccess) return nullptr;
  cudaMemcpy(d, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice);
  return d;
}

class GlaPrefillCuda : public ::testing::TestWithParam<Case> {};

TEST_P(GlaPrefillCuda, PackedSequencesMatchTheDefinition) {
  GLA_REQUIRE_CUDA_DEVICE();
  const Case& c = GetParam();
  const int S = static_cast<int>(c.lengths.size());
  std::vector<int32_t> cu(1, 0);
  for (int len : c.lengths) cu.push_back(cu.back() + len);
  const int T = cu.back();
  std::mt19937 rng(77 + T + c.dk);
  std::uniform_real_distribution<float> u(-1.f, 1.f), wide(-6.f, 6.f);
  auto random = [&](size_t n) {
    std::vector<float> v(n);
    for (auto& x : v) x = u(rng);
    return v;
  };
  const auto q = random(size_t(T) * c.H * c.dk), k = random(size_t(T) * c.Hkv * c.dk), v = random(size_t(T) * c.Hkv * c.dv);
  std::vector<float> g(size_t(T) * c.Hkv * c.dk);
  for (auto& x : g) {
    const float z = wide(rng);
    x = (std::min(z, 0.f) - std::log1p(std::exp(-std::fabs(z)))) / 16.f;
  }
  const int pool_slots = S + 3;
  const int64_t state_floats = int64_t{c.H} * c.dk * c.dv;
  const auto pool = random(size_t(pool_slots) * state_floats);
  std::vector<int32_t> perm(pool_slots);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  const std::vector<int32_t> slots(perm.begin(), perm.begin() + S);

  float *d_q = ToDevice(q), *d_k = ToDevice(k), *d_v = ToDevice(v), *d_g = ToDevice(g), *d_pool = ToDevice(pool);
  int32_t *d_cu = ToDevice(cu), *d_slots = ToDevice(slots);
  float* d_o = nullptr;
  const size_t on = size_t(T) * c.H * c.dv;
  GLA_CUDA_OK(cudaMalloc(&d_o, on * 4));
  GLA_CUDA_OK(cudaMemset(d_o, 0xFF, on * 4));  // NaN poison
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
  p.o = d_o;
  p.o_stride = int64_t{c.H} * c.dv;
  p.cu_seqlens = d_cu;
  p.state_base = d_pool;
  p.slot_stride = state_floats;
  p.slots = c.with_slots ? d_slots : nullptr;
  p.scale = 1.0f / std::sqrt(float(c.dk));
  GLA_CUDA_OK(cuda::GlaPrefillRecurrent(p, nullptr));
  GLA_CUDA_OK(cudaDeviceSynchronize());
  std::vector<float> o(on), pool_gpu(pool.size());
  GLA_CUDA_OK(cudaMemcpy(o.data(), d_o, on * 4, cudaMemcpyDeviceToHost));
  GLA_CUDA_OK(cudaMemcpy(pool_gpu.data(), d_pool, pool.size() * 4, cudaMemcpyDeviceToHost));

  std::vector<float> ref_pool = pool, o_ref(on);
  for (int n = 0; n < S; ++n) {
    std::vector<float> zero(state_floats, 0.0f);
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
    EXPECT_LT(RelErr(o.data() + size_t(cu[n]) * p.o_stride, r.o, size_t(c.lengths[n]) * p.o_stride), 1e-5)
        << "o of sequence " << n << " (T=" << c.lengths[n] << ")";
  }
  for (int s = 0; s < pool_slots; ++s) {
    const float* got = pool_gpu.data() + s * state_floats;
    const bool used = c.with_slots && std::find(slots.begin(), slots.end(), s) != slots.end();
    if (used) EXPECT_LT(RelErr(got, ref_pool.data() + s * state_floats, state_floats), 1e-5) << "final state, slot " << s;
    else EXPECT_TRUE(std::equal(got, got + state_floats, pool.data() + s * state_floats)) << "slot " << s << " changed";
  }
  for (void* ptr : {(void*)d_q, (void*)d_k, (void*)d_v, (void*)d_g, (void*)d_pool, (void*)d_cu, (void*)d_slots, (void*)d_o})
    cudaFree(ptr);
}

INSTANTIATE_TEST_SUITE_P(Cases, GlaPrefillCuda,
                         ::testing::Values(Case{"gla13B_mixed", 4, 4, 256, 512, {1, 63, 65, 200}, true},
                                           Case{"gla340M_mixed", 4, 4, 128, 256, {130, 1, 64, 37}, true},
                                           Case{"gla340M_from_zero", 4, 4, 128, 256, {77, 5}, false},
                                           Case{"gqa_odd", 4, 2, 40, 52, {9, 1, 33}, true},
                                           Case{"dk512", 2, 2, 512, 64, {20, 3}, true}),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace gla
