// The three forms of the GLA operator agree with each other and with fla's float64 answers.
#include <gtest/gtest.h>

#include <cmath>

#include "kernels/gla.h"
#include "models/safetensors.h"
#include "tests/support/test_util.h"

namespace gla {
namespace {

using testing::RelErr;

// One problem: inputs in the operator's layout, B sequences of length T.
struct Problem {
  int B, T, H, Hkv, dk, dv;
  std::vector<float> q, k, v, g, h0;  // [B, T, H|Hkv, d], h0 [B, H, dk, dv]
};

Problem RandomProblem(int B, int T, int H, int Hkv, int dk, int dv, unsigned seed) {
  std::mt19937 rng(seed);
  Problem p{B, T, H, Hkv, dk, dv};
  p.q = testing::RandomVector(size_t(B) * T * H * dk, rng);
  p.k = testing::RandomVector(size_t(B) * T * Hkv * dk, rng);
  p.v = testing::RandomVector(size_t(B) * T * Hkv * dv, rng);
  // Log gates as the model makes them: logsigmoid(x) / 16, some strongly forgetting.
  p.g = testing::RandomVector(size_t(B) * T * Hkv * dk, rng, -6.0f, 6.0f);
  for (auto& x : p.g) x = (std::min(x, 0.0f) - std::log1p(std::exp(-std::fabs(x)))) / 16.0f;
  p.h0 = testing::RandomVector(size_t(B) * H * dk * dv, rng);
  return p;
}

GlaSeqParams SeqParams(const Problem& p, int b, std::vector<float>& o, std::vector<float>& state) {
  GlaSeqParams s;
  s.T = p.T;
  s.H = p.H;
  s.Hkv = p.Hkv;
  s.dk = p.dk;
  s.dv = p.dv;
  s.q = p.q.data() + size_t(b) * p.T * p.H * p.dk;
  s.k = p.k.data() + size_t(b) * p.T * p.Hkv * p.dk;
  s.v = p.v.data() + size_t(b) * p.T * p.Hkv * p.dv;
  s.g = p.g.data() + size_t(b) * p.T * p.Hkv * p.dk;
  s.q_stride = p.H * p.dk;
  s.k_stride = s.g_stride = p.Hkv * p.dk;
  s.v_stride = p.Hkv * p.dv;
  s.o = o.data() + size_t(b) * p.T * p.H * p.dv;
  s.o_stride = p.H * p.dv;
  s.state = state.data() + size_t(b) * p.H * p.dk * p.dv;
  s.scale = 1.0f / std::sqrt(static_cast<float>(p.dk));
  return s;
}

struct Result {
  std::vector<float> o, ht;
};

Result RunNaive(const Problem& p) {
  Result r{std::vector<float>(size_t(p.B) * p.T * p.H * p.dv), p.h0};
  for (int b = 0; b < p.B; ++b) cpu::GlaRecurrentNaive(SeqParams(p, b, r.o, r.ht));
  return r;
}

Result RunChunkwise(const Problem& p, int chunk, int sub) {
  Result r{std::vector<float>(size_t(p.B) * p.T * p.H * p.dv), p.h0};
  for (int b = 0; b < p.B; ++b) EXPECT_TRUE(cpu::GlaChunkwise(SeqParams(p, b, r.o, r.ht), chunk, sub));
  return r;
}

// Decode: every sequence advances one token per call, all B in one batched step.
Result RunDecodeSteps(const Problem& p) {
  Result r{std::vector<float>(size_t(p.B) * p.T * p.H * p.dv), p.h0};
  std::vector<float*> states;
  for (int b = 0; b < p.B; ++b) states.push_back(r.ht.data() + size_t(b) * p.H * p.dk * p.dv);
  for (int t = 0; t < p.T; ++t) {
    GlaDecodeParams d;
    d.N = p.B;
    d.H = p.H;
    d.Hkv = p.Hkv;
    d.dk = p.dk;
    d.dv = p.dv;
    d.q = p.q.data() + size_t(t) * p.H * p.dk;
    d.q_stride = int64_t(p.T) * p.H * p.dk;  // next sequence, same t
    d.k = p.k.data() + size_t(t) * p.Hkv * p.dk;
    d.g = p.g.data() + size_t(t) * p.Hkv * p.dk;
    d.k_stride = d.g_stride = int64_t(p.T) * p.Hkv * p.dk;
    d.v = p.v.data() + size_t(t) * p.Hkv * p.dv;
    d.v_stride = int64_t(p.T) * p.Hkv * p.dv;
    d.o = r.o.data() + size_t(t) * p.H * p.dv;
    d.o_stride = int64_t(p.T) * p.H * p.dv;
    d.states = states.data();
    d.scale = 1.0f / std::sqrt(static_cast<float>(p.dk));
    cpu::GlaDecodeStep(d);
  }
  return r;
}

struct Shape {
  int B, T, H, Hkv, dk, dv;
};

class GlaForms : public ::testing::TestWithParam<Shape> {};

TEST_P(GlaForms, ChunkwiseAndDecodeAgreeWithNaive) {
  const Shape s = GetParam();
  const Problem p = RandomProblem(s.B, s.T, s.H, s.Hkv, s.dk, s.dv, 17 + s.T);
  const Result naive = RunNaive(p);
  const Result dec = RunDecodeSteps(p);
  EXPECT_LT(RelErr(dec.o, naive.o), 1e-6);
  EXPECT_LT(RelErr(dec.ht, naive.ht), 1e-6);
  for (auto [chunk, sub] : {std::pair{64, 16}, {32, 16}, {16, 4}, {8, 8}, {64, 64}}) {
    const Result ch = RunChunkwise(p, chunk, sub);
    EXPECT_LT(RelErr(ch.o, naive.o), 1e-5) << "chunk " << chunk << "/" << sub;
    EXPECT_LT(RelErr(ch.ht, naive.ht), 1e-5) << "chunk " << chunk << "/" << sub;
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, GlaForms,
                         ::testing::Values(Shape{1, 1, 2, 2, 16, 32},     // T = 1
                                           Shape{2, 63, 2, 2, 16, 32},    // just under a chunk
                                           Shape{1, 65, 4, 4, 32, 16},    // just over a chunk
                                           Shape{2, 130, 4, 2, 16, 32},   // GQA, two chunks and a bit
                                           Shape{1, 200, 1, 1, 64, 64},   // the reference's head shape
                                           Shape{1, 77, 2, 1, 24, 40}));  // dims that are not powers of 2

TEST(GlaForms, RejectsChunkThatIsNotAMultipleOfSubChunk) {
  const Problem p = RandomProblem(1, 10, 1, 1, 8, 8, 3);
  Result r{std::vector<float>(size_t(p.T) * p.dv), p.h0};
  EXPECT_FALSE(cpu::GlaChunkwise(SeqParams(p, 0, r.o, r.ht), 48, 32));
  EXPECT_FALSE(cpu::GlaChunkwise(SeqParams(p, 0, r.o, r.ht), 16, 0));
}

TEST(GlaForms, ChunkwiseStaysFiniteUnderStrongForgetting) {
  // Cumulative gates of -200 inside a chunk would overflow exp(-b) in a one-level factorisation.
  Problem p = RandomProblem(1, 128, 2, 2, 16, 16, 5);
  for (auto& x : p.g) x = -3.0f;
  const Result naive = RunNaive(p), ch = RunChunkwise(p, 64, 16);
  EXPECT_LT(RelErr(ch.o, naive.o), 1e-5);
  EXPECT_LT(RelErr(ch.ht, naive.ht), 1e-5);
}

// fla's float64 ground truth ([B, T, H, K] layouts, scale = K^-1/2 applied to q).
class GlaReference : public ::testing::TestWithParam<std::string> {};

TEST_P(GlaReference, AllFormsMatchFlaOutputsAndFinalState) {
  auto f = SafetensorsFile::Open(testing::ReferenceDir() + "/gla-tiny/" + GetParam());
  ASSERT_TRUE(f.ok()) << f.status();
  auto get = [&](const char* n) {
    auto v = ToFloat64(*f->Find(n));
    return std::vector<float>(v->begin(), v->end());
  };
  const auto& qs = f->Find("q")->shape;
  const auto& vs = f->Find("v")->shape;
  Problem p{int(qs[0]), int(qs[1]), int(qs[2]), int(qs[2]), int(qs[3]), int(vs[3])};
  p.q = get("q");
  p.k = get("k");
  p.v = get("v");
  p.g = get("g");
  p.h0 = get("h0");
  const auto o_ref = *ToFloat64(*f->Find("o"));
  const auto ht_ref = *ToFloat64(*f->Find("ht"));
  const Result naive = RunNaive(p), dec = RunDecodeSteps(p);
  EXPECT_LT(RelErr(naive.o, o_ref), 1e-5);
  EXPECT_LT(RelErr(naive.ht, ht_ref), 1e-5);
  EXPECT_LT(RelErr(dec.o, o_ref), 1e-5);
  EXPECT_LT(RelErr(dec.ht, ht_ref), 1e-5);
  for (auto [chunk, sub] : {std::pair{64, 16}, {32, 8}, {16, 16}}) {
    const Result ch = RunChunkwise(p, chunk, sub);
    EXPECT_LT(RelErr(ch.o, o_ref), 1e-5) << "chunk " << chunk << "/" << sub;
    EXPECT_LT(RelErr(ch.ht, ht_ref), 1e-5) << "chunk " << chunk << "/" << sub;
  }
}

INSTANTIATE_TEST_SUITE_P(Files, GlaReference,
                         ::testing::Values("gla_op_B1_T200_H1_K64_V64.safetensors",
                                           "gla_op_B2_T100_H2_K16_V32.safetensors"));

}  // namespace
}  // namespace gla
