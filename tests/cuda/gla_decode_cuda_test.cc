// The CUDA decode step against the CPU reference (cpu::GlaDecodeStep): fresh random inputs,
// gla-340M and gla-1.3B head shapes, GQA, B = 1 and odd batch sizes, slots scattered through a
// larger pool (untouched slots must not change), several chained steps from non-zero states.
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/activations.h"
#include "kernels/gla.h"
#include "tests/cuda/cuda_test_util.h"

namespace gla {
namespace {

struct Shape {
  int N, H, Hkv, dk, dv, pool_slots, steps;
};

double RelErr(const std::vector<float>& out, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    if (std::isnan(out[i])) return INFINITY;
    num += (double(out[i]) - ref[i]) * (double(out[i]) - ref[i]);
    den += double(ref[i]) * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

class GlaDecodeCuda : public ::testing::TestWithParam<Shape> {};

// A non-null pointer for argument checks that fail before anything is read.
const float* lr_unused() {
  static const float x = 0.f;
  return &x;
}

TEST_P(GlaDecodeCuda, MatchesCpuReferenceInPlaceBySlot) {
  GLA_REQUIRE_CUDA_DEVICE();
  const Shape s = GetParam();
  std::mt19937 rng(1000 + s.N * 7 + s.dk);
  std::uniform_real_distribution<float> u(-1.f, 1.f), wide(-6.f, 6.f);
  const int64_t state_floats = int64_t{s.H} * s.dk * s.dv;
  std::vector<float> pool(static_cast<size_t>(s.pool_slots * state_floats));
  for (auto& x : pool) x = u(rng);
  std::vector<int32_t> all(s.pool_slots);
  std::iota(all.begin(), all.end(), 0);
  std::shuffle(all.begin(), all.end(), rng);
  const std::vector<int32_t> slots(all.begin(), all.begin() + s.N);

  float *d_pool, *d_q, *d_k, *d_v, *d_g, *d_o;
  int32_t* d_slots;
  const size_t qn = size_t(s.N) * s.H * s.dk, kn = size_t(s.N) * s.Hkv * s.dk, vn = size_t(s.N) * s.Hkv * s.dv,
               on = size_t(s.N) * s.H * s.dv;
  GLA_CUDA_OK(cudaMalloc(&d_pool, pool.size() * 4));
  GLA_CUDA_OK(cudaMalloc(&d_q, qn * 4));
  GLA_CUDA_OK(cudaMalloc(&d_k, kn * 4));
  GLA_CUDA_OK(cudaMalloc(&d_g, kn * 4));
  GLA_CUDA_OK(cudaMalloc(&d_v, vn * 4));
  GLA_CUDA_OK(cudaMalloc(&d_o, on * 4));
  GLA_CUDA_OK(cudaMalloc(&d_slots, s.N * 4));
  GLA_CUDA_OK(cudaMemcpy(d_pool, pool.data(), pool.size() * 4, cudaMemcpyHostToDevice));
  GLA_CUDA_OK(cudaMemcpy(d_slots, slots.data(), s.N * 4, cudaMemcpyHostToDevice));

  std::vector<float> ref_pool = pool, o_ref(on), o_gpu(on);
  for (int step = 0; step < s.steps; ++step) {
    std::vector<float> q(qn), k(kn), g(kn), v(vn);
    for (auto& x : q) x = u(rng);
    for (auto& x : k) x = u(rng);
    for (auto& x : v) x = u(rng);
    for (auto& x : g) {
      const float z = wide(rng);
      x = (std::min(z, 0.f) - std::log1p(std::exp(-std::fabs(z)))) / 16.f;
    }
    GLA_CUDA_OK(cudaMemcpy(d_q, q.data(), qn * 4, cudaMemcpyHostToDevice));
    GLA_CUDA_OK(cudaMemcpy(d_k, k.data(), kn * 4, cudaMemcpyHostToDevice));
    GLA_CUDA_OK(cudaMemcpy(d_g, g.data(), kn * 4, cudaMemcpyHostToDevice));
    GLA_CUDA_OK(cudaMemcpy(d_v, v.data(), vn * 4, cudaMemcpyHostToDevice));
    GLA_CUDA_OK(cudaMemset(d_o, 0xFF, on * 4));  // NaN poison: every output must be written

    GlaDecodeCudaParams p;
    p.N = s.N;
    p.H = s.H;
    p.Hkv = s.Hkv;
    p.dk = s.dk;
    p.dv = s.dv;
    p.q = d_q;
    p.q_stride = int64_t{s.H} * s.dk;
    p.k = d_k;
    p.g = d_g;
    p.k_stride = p.g_stride = int64_t{s.Hkv} * s.dk;
    p.v = d_v;
    p.v_stride = int64_t{s.Hkv} * s.dv;
    p.o = d_o;
    p.o_stride = int64_t{s.H} * s.dv;
    p.state = {d_pool, state_floats, false};
    p.slots = d_slots;
    p.scale = 1.0f / std::sqrt(float(s.dk));
    GLA_CUDA_OK(cuda::GlaDecodeStep(p, nullptr));
    GLA_CUDA_OK(cudaDeviceSynchronize());

    std::vector<float*> states;
    for (int32_t slot : slots) states.push_back(ref_pool.data() + slot * state_floats);
    GlaDecodeParams c;
    c.N = s.N;
    c.H = s.H;
    c.Hkv = s.Hkv;
    c.dk = s.dk;
    c.dv = s.dv;
    c.q = q.data();
    c.q_stride = p.q_stride;
    c.k = k.data();
    c.g = g.data();
    c.k_stride = c.g_stride = p.k_stride;
    c.v = v.data();
    c.v_stride = p.v_stride;
    c.o = o_ref.data();
    c.o_stride = p.o_stride;
    c.states = states.data();
    c.scale = p.scale;
    cpu::GlaDecodeStep(c);
    GLA_CUDA_OK(cudaMemcpy(o_gpu.data(), d_o, on * 4, cudaMemcpyDeviceToHost));
    EXPECT_LT(RelErr(o_gpu, o_ref), 1e-5) << "o at step " << step;
  }
  std::vector<float> pool_gpu(pool.size());
  GLA_CUDA_OK(cudaMemcpy(pool_gpu.data(), d_pool, pool.size() * 4, cudaMemcpyDeviceToHost));
  std::vector<bool> used(s.pool_slots, false);
  for (int32_t slot : slots) used[slot] = true;
  for (int slot = 0; slot < s.pool_slots; ++slot) {
    const auto b = pool.begin() + slot * state_floats, e = b + state_floats;
    const std::vector<float> got(pool_gpu.begin() + slot * state_floats, pool_gpu.begin() + (slot + 1) * state_floats);
    if (used[slot]) {
      const std::vector<float> want(ref_pool.begin() + slot * state_floats, ref_pool.begin() + (slot + 1) * state_floats);
      EXPECT_LT(RelErr(got, want), 1e-5) << "state of slot " << slot;
    } else {
      EXPECT_TRUE(std::equal(b, e, got.begin())) << "untouched slot " << slot << " changed";
    }
  }
  for (void* ptr : {(void*)d_pool, (void*)d_q, (void*)d_k, (void*)d_v, (void*)d_g, (void*)d_o, (void*)d_slots}) cudaFree(ptr);
}

INSTANTIATE_TEST_SUITE_P(Shapes, GlaDecodeCuda,
                         ::testing::Values(Shape{1, 4, 4, 256, 512, 3, 3},    // gla-1.3B heads, B = 1
                                           Shape{5, 4, 4, 256, 512, 9, 2},    // odd batch, scattered slots
                                           Shape{1, 4, 4, 128, 256, 2, 3},    // gla-340M heads
                                           Shape{33, 4, 4, 128, 256, 40, 2},  // gla-340M, B = 33
                                           Shape{7, 4, 2, 64, 96, 10, 4},     // GQA, dv not a multiple of 32
                                           Shape{3, 2, 1, 24, 20, 5, 3},      // small odd dims
                                           Shape{2, 2, 2, 96, 64, 4, 3},      // dk / 32 = 3: the loop, not the unrolled rows
                                           Shape{2, 2, 1, 512, 64, 3, 2}),    // dk / 32 = 16: the loop
                         [](const auto& info) {
                           const Shape& s = info.param;
                           return "B" + std::to_string(s.N) + "_H" + std::to_string(s.H) + "_Hkv" + std::to_string(s.Hkv) +
                                  "_dk" + std::to_string(s.dk) + "_dv" + std::to_string(s.dv);
                         });

TEST(GlaDecodeCuda, RefusesUnsupportedShapesWithoutLaunching) {
  GLA_REQUIRE_CUDA_DEVICE();
  GlaDecodeCudaParams p;
  p.N = 1;
  p.H = 4;
  p.Hkv = 3;  // does not divide H
  p.dk = 64;
  p.dv = 64;
  EXPECT_EQ(cuda::GlaDecodeStep(p, nullptr), cudaErrorInvalidValue);
  p.Hkv = 4;
  p.dv = 30;  // not a multiple of 4
  EXPECT_EQ(cuda::GlaDecodeStep(p, nullptr), cudaErrorInvalidValue);
  p.dv = 64;
  p.dk = 2048;  // over the shared-memory staging size
  EXPECT_EQ(cuda::GlaDecodeStep(p, nullptr), cudaErrorInvalidValue);
}

// The decode step that makes the forget gate itself (the engine's decode layers) gives the same
// bits as LowRankGate followed by the step that reads g: outputs and states, with GQA, a bias and
// a clamp, over chained steps.
TEST(GlaDecodeCudaFusedGate, EqualsLowRankGateThenDecodeToTheBit) {
  GLA_REQUIRE_CUDA_DEVICE();
  const int N = 3, H = 4, Hkv = 2, dk = 128, dv = 256, rank = 16, P = 64;  // lowrank rows padded to P
  std::mt19937 rng(77);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  auto host = [&](size_t n) {
    std::vector<float> v(n);
    for (auto& x : v) x = u(rng);
    return v;
  };
  const int64_t state_floats = int64_t{H} * dk * dv;
  const std::vector<float> pool = host(static_cast<size_t>(N * state_floats));
  const std::vector<float> w1 = host(size_t{Hkv} * dk * rank), bias = host(size_t{Hkv} * dk);
  auto up = [](const std::vector<float>& v) {
    float* d = nullptr;
    EXPECT_EQ(cudaMalloc(&d, v.size() * 4), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(d, v.data(), v.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
    return d;
  };
  std::vector<int32_t> slots = {2, 0, 1};
  int32_t* d_slots = nullptr;
  GLA_CUDA_OK(cudaMalloc(&d_slots, N * 4));
  GLA_CUDA_OK(cudaMemcpy(d_slots, slots.data(), N * 4, cudaMemcpyHostToDevice));
  float *pool_a = up(pool), *pool_b = up(pool), *d_w1 = up(w1), *d_bias = up(bias);
  float *o_a = up(std::vector<float>(size_t{N} * H * dv)), *o_b = up(std::vector<float>(size_t{N} * H * dv));
  float* d_g = up(std::vector<float>(size_t{N} * Hkv * dk));
  ForgetGate gate;
  gate.has_clamp = true;
  gate.clamp_min = -0.05f;  // some gates clamp
  for (int step = 0; step < 3; ++step) {
    float *q = up(host(size_t{N} * H * dk)), *k = up(host(size_t{N} * Hkv * dk)), *v = up(host(size_t{N} * Hkv * dv));
    std::vector<float> lr_host = host(size_t{N} * P);
    for (auto& x : lr_host) x *= 3.f;
    float* lr = up(lr_host);
    GlaDecodeCudaParams p;
    p.N = N, p.H = H, p.Hkv = Hkv, p.dk = dk, p.dv = dv;
    p.q = q, p.q_stride = int64_t{H} * dk;
    p.k = k, p.k_stride = int64_t{Hkv} * dk;
    p.g = d_g, p.g_stride = int64_t{Hkv} * dk;
    p.v = v, p.v_stride = int64_t{Hkv} * dv;
    p.o_stride = int64_t{H} * dv;
    p.slots = d_slots, p.scale = 1.0f / std::sqrt(float(dk));
    // A: the gate first, then the step that reads it.
    GLA_CUDA_OK(cuda::LowRankGate(lr, P, d_w1, rank, d_bias, d_g, Hkv * dk, N, Hkv * dk, gate, nullptr));
    p.o = o_a, p.state = {pool_a, state_floats, false};
    GLA_CUDA_OK(cuda::GlaDecodeStep(p, nullptr));
    // B: the step makes the gate (g is poisoned: it must not be read).
    GLA_CUDA_OK(cudaMemset(d_g, 0xFF, size_t{N} * Hkv * dk * 4));
    p.o = o_b, p.state = {pool_b, state_floats, false};
    p.gate.lowrank = lr, p.gate.lowrank_stride = P, p.gate.w1 = d_w1, p.gate.bias = d_bias, p.gate.rank = rank;
    p.gate.inv_normalizer = 1.0f / gate.normalizer, p.gate.has_clamp = gate.has_clamp, p.gate.clamp_min = gate.clamp_min;
    GLA_CUDA_OK(cuda::GlaDecodeStep(p, nullptr));
    GLA_CUDA_OK(cudaDeviceSynchronize());
    for (float* d : {q, k, v, lr}) cudaFree(d);
  }
  auto down = [](const float* d, size_t n) {
    std::vector<float> h(n);
    EXPECT_EQ(cudaMemcpy(h.data(), d, n * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
  };
  const size_t on = size_t{N} * H * dv, sn = pool.size();
  const std::vector<float> oa = down(o_a, on), ob = down(o_b, on), sa = down(pool_a, sn), sb = down(pool_b, sn);
  EXPECT_EQ(std::memcmp(oa.data(), ob.data(), on * 4), 0) << "outputs differ";
  EXPECT_EQ(std::memcmp(sa.data(), sb.data(), sn * 4), 0) << "states differ";
  EXPECT_NE(std::memcmp(sa.data(), pool.data(), sn * 4), 0) << "the steps changed nothing";
  GlaDecodeCudaParams bad;
  bad.N = 1, bad.H = 1, bad.Hkv = 1, bad.dk = 64, bad.dv = 64;
  bad.gate.lowrank = lr_unused();
  bad.gate.rank = 65;  // over the rank the step stages
  bad.gate.w1 = d_w1;
  EXPECT_EQ(cuda::GlaDecodeStep(bad, nullptr), cudaErrorInvalidValue);
  bad.gate.rank = rank;
  bad.gate.inv_normalizer = std::nanf("");  // every gate would be NaN
  EXPECT_EQ(cuda::GlaDecodeStep(bad, nullptr), cudaErrorInvalidValue);
  for (float* d : {pool_a, pool_b, d_w1, d_bias, o_a, o_b, d_g}) cudaFree(d);
  cudaFree(d_slots);
}

}  // namespace
}  // namespace gla
