// The GLA operator's backward (CPU reference for fine-tuning, issue 5) against fla's float64
// gradients in shared/reference (dq, dk, dv, dg, dh0 for given do and dht) and against finite
// differences of the forward (which also covers GQA, where the reference files have none).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/gla.h"
#include "models/safetensors.h"
#include "tests/support/test_util.h"

namespace gla {
namespace {

using testing::RelErr;

struct Op {
  int T = 0, H = 0, Hkv = 0, dk = 0, dv = 0;
  std::vector<float> q, k, v, g, h0, d_o, d_ht;
};

GlaSeqParams Params(const Op& op, float* state) {
  GlaSeqParams p;
  p.T = op.T;
  p.H = op.H;
  p.Hkv = op.Hkv;
  p.dk = op.dk;
  p.dv = op.dv;
  p.q = op.q.data();
  p.q_stride = int64_t{op.H} * op.dk;
  p.k = op.k.data();
  p.k_stride = int64_t{op.Hkv} * op.dk;
  p.v = op.v.data();
  p.v_stride = int64_t{op.Hkv} * op.dv;
  p.g = op.g.data();
  p.g_stride = int64_t{op.Hkv} * op.dk;
  p.state = state;
  p.scale = 1.0f / std::sqrt(static_cast<float>(op.dk));
  return p;
}

struct Grads {
  std::vector<float> dq, dk, dv, dg, dh0;
};

// chunk 0: cpu::GlaBackwardNaive; > 0: cpu::GlaBackwardChunkwise with chunks of that many tokens.
Grads Backward(const Op& op, int chunk = 0) {
  Grads r{std::vector<float>(op.q.size()), std::vector<float>(op.k.size()), std::vector<float>(op.v.size()),
          std::vector<float>(op.g.size()), std::vector<float>(op.h0.size())};
  std::vector<float> h0 = op.h0;
  GlaSeqGrads d;
  d.d_o = op.d_o.data();
  d.d_o_stride = int64_t{op.H} * op.dv;
  d.d_ht = op.d_ht.data();
  d.dq = r.dq.data();
  d.dq_stride = int64_t{op.H} * op.dk;
  d.dk = r.dk.data();
  d.dk_stride = int64_t{op.Hkv} * op.dk;
  d.dv = r.dv.data();
  d.dv_stride = int64_t{op.Hkv} * op.dv;
  d.dg = r.dg.data();
  d.dg_stride = int64_t{op.Hkv} * op.dk;
  d.dh0 = r.dh0.data();
  if (chunk == 0) cpu::GlaBackwardNaive(Params(op, h0.data()), d);
  else EXPECT_TRUE(cpu::GlaBackwardChunkwise(Params(op, h0.data()), d, chunk));
  EXPECT_EQ(h0, op.h0) << "the backward must not change the initial state";
  return r;
}

// L = sum(o * do) + sum(ht * dht), in double over a float forward.
double Loss(const Op& op) {
  std::vector<float> o(static_cast<size_t>(op.T) * op.H * op.dv), state = op.h0;
  GlaSeqParams p = Params(op, state.data());
  p.o = o.data();
  p.o_stride = int64_t{op.H} * op.dv;
  cpu::GlaRecurrentNaive(p);
  double l = 0;
  for (size_t i = 0; i < o.size(); ++i) l += static_cast<double>(o[i]) * op.d_o[i];
  for (size_t i = 0; i < state.size(); ++i) l += static_cast<double>(state[i]) * op.d_ht[i];
  return l;
}

// fla's gradients: each batch element of the file is one sequence ([B, T, H, *] layouts).
class GlaBackwardReference : public ::testing::TestWithParam<std::string> {};

TEST_P(GlaBackwardReference, MatchesFlaGradientsWithin1e5) {
  auto f = SafetensorsFile::Open(testing::ReferenceDir() + "/gla-tiny/" + GetParam());
  ASSERT_TRUE(f.ok()) << f.status();
  auto get = [&](const char* n) { return *ToFloat64(*f->Find(n)); };
  const auto& qs = f->Find("q")->shape;
  const int B = int(qs[0]), T = int(qs[1]), H = int(qs[2]), dk = int(qs[3]), dv = int(f->Find("v")->shape[3]);
  const auto q = get("q"), k = get("k"), v = get("v"), g = get("g"), h0 = get("h0"), d_o = get("do"), d_ht = get("dht");
  const auto dq = get("dq"), dkr = get("dk"), dvr = get("dv"), dg = get("dg"), dh0 = get("dh0");
  for (int b = 0; b < B; ++b) {
    const size_t tk = size_t(T) * H * dk, tv = size_t(T) * H * dv, s = size_t(H) * dk * dv;
    auto part = [](const std::vector<double>& x, size_t n, int b) {
      return std::vector<float>(x.begin() + b * n, x.begin() + (b + 1) * n);
    };
    auto ref = [](const std::vector<double>& x, size_t n, int b) {
      return std::vector<double>(x.begin() + b * n, x.begin() + (b + 1) * n);
    };
    Op op{T, H, H, dk, dv, part(q, tk, b), part(k, tk, b), part(v, tv, b), part(g, tk, b), part(h0, s, b),
          part(d_o, tv, b), part(d_ht, s, b)};
    for (int chunk : {0, 16, 64}) {  // the naive form, then the chunkwise one (partial last chunks)
      const Grads r = Backward(op, chunk);
      EXPECT_LT(RelErr(r.dq, ref(dq, tk, b)), 1e-5) << "dq, batch " << b << ", chunk " << chunk;
      EXPECT_LT(RelErr(r.dk, ref(dkr, tk, b)), 1e-5) << "dk, batch " << b << ", chunk " << chunk;
      EXPECT_LT(RelErr(r.dv, ref(dvr, tv, b)), 1e-5) << "dv, batch " << b << ", chunk " << chunk;
      EXPECT_LT(RelErr(r.dg, ref(dg, tk, b)), 1e-5) << "dg, batch " << b << ", chunk " << chunk;
      EXPECT_LT(RelErr(r.dh0, ref(dh0, s, b)), 1e-5) << "dh0, batch " << b << ", chunk " << chunk;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Files, GlaBackwardReference,
                         ::testing::Values("gla_op_B1_T200_H1_K64_V64.safetensors",
                                           "gla_op_B2_T100_H2_K16_V32.safetensors"));

// A random problem: q, k, v, h0, d_o (and d_ht, when wanted; zero otherwise) uniform in [-1, 1],
// the log gates uniform in [g_lo, g_hi].
Op RandomOp(std::mt19937& rng, int T, int H, int Hkv, int dk, int dv, float g_lo, float g_hi, bool with_dht) {
  Op op;
  op.T = T;
  op.H = H;
  op.Hkv = Hkv;
  op.dk = dk;
  op.dv = dv;
  auto rnd = [&](size_t n, float lo, float hi) { return testing::RandomVector(n, rng, lo, hi); };
  op.q = rnd(size_t(T) * H * dk, -1, 1);
  op.k = rnd(size_t(T) * Hkv * dk, -1, 1);
  op.v = rnd(size_t(T) * Hkv * dv, -1, 1);
  op.g = rnd(size_t(T) * Hkv * dk, g_lo, g_hi);
  op.h0 = rnd(size_t(H) * dk * dv, -1, 1);
  op.d_o = rnd(size_t(T) * H * dv, -1, 1);
  if (with_dht) op.d_ht = rnd(size_t(H) * dk * dv, -1, 1);
  else op.d_ht.assign(size_t(H) * dk * dv, 0.0f);
  return op;
}

// Central differences of the float forward, on every input of a small GQA problem.
TEST(GlaBackward, MatchesFiniteDifferencesWithGqa) {
  std::mt19937 rng(3);
  const Op op = RandomOp(rng, /*T=*/9, /*H=*/4, /*Hkv=*/2, /*dk=*/4, /*dv=*/3, -1.0f, -0.05f, /*with_dht=*/true);
  const float eps = 1e-2f;
  for (int chunk : {0, 4}) {
    const Grads r = Backward(op, chunk);
    auto check = [&](std::vector<float> Op::*field, const std::vector<float>& grad, const char* name) {
      std::vector<double> numeric(grad.size());
      for (size_t i = 0; i < grad.size(); ++i) {
        Op plus = op, minus = op;
        (plus.*field)[i] += eps;
        (minus.*field)[i] -= eps;
        numeric[i] = (Loss(plus) - Loss(minus)) / (2.0 * eps);
      }
      EXPECT_LT(RelErr(grad, numeric), 2e-3) << name << ", chunk " << chunk;
    };
    check(&Op::q, r.dq, "dq");
    check(&Op::k, r.dk, "dk");
    check(&Op::v, r.dv, "dv");
    check(&Op::g, r.dg, "dg");
    check(&Op::h0, r.dh0, "dh0");
  }
}

// The chunkwise form against the naive one on fresh random inputs: GQA, an initial state, no
// final-state gradient, and chunk sizes from 1 token to more than the sequence.
TEST(GlaBackward, ChunkwiseEqualsNaiveWithGqaAndAnyChunkSize) {
  std::mt19937 rng(11);
  const Op op = RandomOp(rng, /*T=*/150, /*H=*/4, /*Hkv=*/2, /*dk=*/32, /*dv=*/48, -0.5f, -0.001f, /*with_dht=*/false);
  const Grads ref = Backward(op, 0);
  for (int chunk : {1, 7, 64, 200}) {
    const Grads r = Backward(op, chunk);
    EXPECT_LT(RelErr(r.dq, ref.dq), 1e-5) << "dq, chunk " << chunk;
    EXPECT_LT(RelErr(r.dk, ref.dk), 1e-5) << "dk, chunk " << chunk;
    EXPECT_LT(RelErr(r.dv, ref.dv), 1e-5) << "dv, chunk " << chunk;
    EXPECT_LT(RelErr(r.dg, ref.dg), 1e-5) << "dg, chunk " << chunk;
    EXPECT_LT(RelErr(r.dh0, ref.dh0), 1e-5) << "dh0, chunk " << chunk;
  }
}

}  // namespace
}  // namespace gla
