// The non-GLA operators against their definitions, written out in double precision here.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "kernels/activations.h"
#include "kernels/conv.h"
#include "kernels/dropout.h"
#include "kernels/linear.h"
#include "kernels/linear_int8.h"
#include "kernels/norm.h"
#include "tests/support/test_util.h"

namespace gla {
namespace {

using testing::RelErr;

TEST(Ops, RmsNormMatchesDefinition) {
  std::mt19937 rng(1);
  const int rows = 3, n = 37;
  auto x = testing::RandomVector(rows * n, rng), w = testing::RandomVector(n, rng);
  std::vector<float> y(rows * n);
  cpu::RmsNorm(x.data(), n, w.data(), y.data(), n, rows, n, 1e-6f);
  std::vector<double> ref(rows * n);
  for (int r = 0; r < rows; ++r) {
    double ss = 0;
    for (int i = 0; i < n; ++i) ss += double(x[r * n + i]) * x[r * n + i];
    for (int i = 0; i < n; ++i) ref[r * n + i] = x[r * n + i] / std::sqrt(ss / n + 1e-6) * w[i];
  }
  EXPECT_LT(RelErr(y, ref), 1e-6);
}

TEST(Ops, RmsNormSwishGatePerHead) {
  std::mt19937 rng(2);
  const int rows = 2, heads = 3, dv = 8;
  auto o = testing::RandomVector(rows * heads * dv, rng), g = testing::RandomVector(rows * heads * dv, rng, -4, 4);
  auto w = testing::RandomVector(dv, rng);
  std::vector<float> y(o.size()), y_nogate(o.size());
  cpu::RmsNormSwishGate(o.data(), heads * dv, g.data(), heads * dv, w.data(), y.data(), heads * dv, rows, heads, dv, 1e-5f);
  cpu::RmsNormSwishGate(o.data(), heads * dv, nullptr, 0, w.data(), y_nogate.data(), heads * dv, rows, heads, dv, 1e-5f);
  std::vector<double> ref(o.size()), ref_nogate(o.size());
  for (int r = 0; r < rows; ++r)
    for (int h = 0; h < heads; ++h) {
      const int base = (r * heads + h) * dv;
      double ss = 0;
      for (int i = 0; i < dv; ++i) ss += double(o[base + i]) * o[base + i];
      for (int i = 0; i < dv; ++i) {
        const double z = g[base + i];
        ref_nogate[base + i] = o[base + i] / std::sqrt(ss / dv + 1e-5) * w[i];
        ref[base + i] = ref_nogate[base + i] * z / (1 + std::exp(-z));
      }
    }
  EXPECT_LT(RelErr(y, ref), 1e-6);
  EXPECT_LT(RelErr(y_nogate, ref_nogate), 1e-6);
}

TEST(Ops, LogSigmoidGateWithBiasNormalizerAndClamp) {
  std::vector<float> x = {-100.0f, -3.0f, 0.0f, 2.5f, 100.0f};
  const std::vector<float> bias = {0.5f, 0.5f, 0.5f, 0.5f, 0.5f};
  auto y = x;
  cpu::LogSigmoidGate(y.data(), 5, bias.data(), 1, 5, ForgetGate{16.0f, false, 0.0f});
  for (int i = 0; i < 5; ++i) {
    const double z = double(x[i]) + 0.5;
    EXPECT_NEAR(y[i], -std::log1p(std::exp(-z)) / 16.0, 1e-6 * (1 + std::fabs(z))) << "x=" << x[i];
  }
  auto c = x;
  cpu::LogSigmoidGate(c.data(), 5, bias.data(), 1, 5, ForgetGate{16.0f, true, -0.1f});
  EXPECT_FLOAT_EQ(c[0], -0.1f);
  EXPECT_GT(c[4], -1e-6f);
}

TEST(Ops, SwiGluAndLinear) {
  std::mt19937 rng(3);
  const int M = 4, K = 9, N = 5, I = 6;
  auto x = testing::RandomVector(M * K, rng), w = testing::RandomVector(N * K, rng), y0 = testing::RandomVector(M * N, rng);
  auto y = y0;
  cpu::Linear(x.data(), K, w.data(), N, K, y.data(), N, M, /*beta=*/1.0f);
  std::vector<double> ref(M * N);
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      double acc = y0[m * N + n];
      for (int k = 0; k < K; ++k) acc += double(x[m * K + k]) * w[n * K + k];
      ref[m * N + n] = acc;
    }
  EXPECT_LT(RelErr(y, ref), 1e-6);
  auto gu = testing::RandomVector(M * 2 * I, rng, -3, 3);
  std::vector<float> a(M * I);
  cpu::SwiGlu(gu.data(), 2 * I, a.data(), I, M, I);
  std::vector<double> aref(M * I);
  for (int m = 0; m < M; ++m)
    for (int i = 0; i < I; ++i) {
      const double g = gu[m * 2 * I + i], u = gu[m * 2 * I + I + i];
      aref[m * I + i] = g / (1 + std::exp(-g)) * u;
    }
  EXPECT_LT(RelErr(a, aref), 1e-6);
}

// Weight-only INT8 (issue 23): quantization within half a step of every weight, and the product
// against its definition on the dequantized weight in double precision, through both paths (rows
// streamed, and BLAS on dequantized tiles; a K that leaves a remainder after 8; beta 0 and 1).
TEST(Ops, Int8WeightsQuantizePerRowAndLinearInt8MatchesTheDequantizedProduct) {
  std::mt19937 rng(11);
  const int64_t N = 700, K = 3000 + 5;  // N x K past one 2^20-float tile: BLAS takes three (348, 348, 4 rows)
  auto w = testing::RandomVector(N * K, rng, -0.2f, 0.2f);
  for (int64_t k = 0; k < K; ++k) w[5 * K + k] = 0.0f;  // an all-zero row
  w[7 * K + 3] = 40.0f;                                  // an outlier: its row's scale
  cpu::Int8Weight q;
  ASSERT_TRUE(cpu::QuantizeInt8PerRow(w.data(), N, K, &q));
  ASSERT_EQ(q.q.size(), static_cast<size_t>(N * K));
  EXPECT_EQ(q.scale[5], 0.0f);
  EXPECT_FLOAT_EQ(q.scale[7], 40.0f / 127.0f);
  std::vector<float> deq(static_cast<size_t>(N * K));
  cpu::DequantizeInt8Rows(q, 0, N, deq.data());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k)
      ASSERT_LE(std::fabs(deq[n * K + k] - w[n * K + k]), q.scale[n] * 0.5f + 1e-7f) << n << "," << k;
  EXPECT_EQ(deq[7 * K + 3], 40.0f);
  for (int64_t M : {1, 3, 4, 5, 16, 17}) {
    for (float beta : {0.0f, 1.0f}) {
      cpu::UsePortableInt8ForTesting(beta == 1.0f);  // both forms of the few-rows path (AVX2 where there)
      auto x = testing::RandomVector(M * K, rng);
      auto y0 = testing::RandomVector(M * N, rng);
      auto y = y0;
      cpu::LinearInt8(x.data(), K, q, y.data(), N, M, beta);
      std::vector<double> ref(static_cast<size_t>(M * N));
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) {
          double acc = beta * double(y0[m * N + n]);
          for (int64_t k = 0; k < K; ++k) acc += double(x[m * K + k]) * deq[n * K + k];
          ref[m * N + n] = acc;
        }
      EXPECT_LT(RelErr(y, ref), 1e-5) << "M " << M << " beta " << beta;
    }
  }
  cpu::UsePortableInt8ForTesting(false);
  // Rows of subnormal or huge weights quantize within half a step too (no overflow on the way).
  for (float big : {1e-40f, 3e38f}) {
    std::vector<float> row(K, 0.0f);
    row[0] = big, row[1] = -big / 3, row[2] = big / 7;
    cpu::Int8Weight r;
    ASSERT_TRUE(cpu::QuantizeInt8PerRow(row.data(), 1, K, &r)) << big;
    std::vector<float> back(K);
    cpu::DequantizeInt8Rows(r, 0, 1, back.data());
    for (int k = 0; k < 3; ++k) EXPECT_LE(std::fabs(back[k] - row[k]), r.scale[0] * 0.5f + 1e-45f) << big << " " << k;
    EXPECT_EQ(r.q[0], 127) << big;
  }
  // A weight that is not finite has no int8: refused, never cast (which would be undefined).
  for (float bad : {std::nanf(""), std::numeric_limits<float>::infinity()}) {
    w[3 * K + 9] = bad;
    cpu::Int8Weight r;
    EXPECT_FALSE(cpu::QuantizeInt8PerRow(w.data(), N, K, &r)) << bad;
  }
}

TEST(Ops, ShortConvMatchesDefinitionAndCarriesItsTail) {
  std::mt19937 rng(4);
  const int T = 11, C = 5, K = 4;
  auto x = testing::RandomVector(T * C, rng), w = testing::RandomVector(C * K, rng);
  std::vector<double> ref(T * C);
  for (int t = 0; t < T; ++t)
    for (int c = 0; c < C; ++c) {
      double acc = 0;
      for (int i = 0; i < K; ++i) {
        const int s = t - (K - 1) + i;
        if (s >= 0) acc += double(w[c * K + i]) * x[s * C + c];
      }
      ref[t * C + c] = acc / (1 + std::exp(-acc));
    }
  std::vector<float> tail((K - 1) * C, 0.0f), y(T * C);
  cpu::ShortConvSilu(x.data(), C, T, C, w.data(), K, tail.data(), y.data(), C);
  EXPECT_LT(RelErr(y, ref), 1e-6);
  // Token by token (T = 1, the decode path) through the tail gives the same outputs and tail.
  std::vector<float> tail2((K - 1) * C, 0.0f), y2(T * C);
  for (int t = 0; t < T; ++t) cpu::ShortConvSilu(x.data() + t * C, C, 1, C, w.data(), K, tail2.data(), y2.data() + t * C, C);
  EXPECT_LT(RelErr(y2, ref), 1e-6);
  EXPECT_EQ(tail2, tail);
  EXPECT_EQ(std::vector<float>(tail.end() - C, tail.end()), std::vector<float>(x.end() - C, x.end()));
}

TEST(Ops, EmbeddingGather) {
  const std::vector<float> table = {0, 1, 10, 11, 20, 21};
  const std::vector<int32_t> ids = {2, 0, 2};
  std::vector<float> out(6);
  cpu::EmbeddingGather(table.data(), 2, ids.data(), 3, out.data());
  EXPECT_EQ(out, (std::vector<float>{20, 21, 0, 1, 20, 21}));
}

// The counter-based dropout the GPU training path draws (kernels/dropout.h): each element kept with
// probability 1 - p and scaled by 1 / (1 - p), the mask a pure function of (seed, index), and the
// backward passing the gradient through exactly the kept elements.
TEST(Ops, DropoutMaskIsSeededScaledAndSharedWithItsBackward) {
  const int64_t rows = 40, cols = 250, stride = 256;
  const float p = 0.25f;
  std::vector<float> x(rows * stride), out(rows * stride, -7.f), out2(rows * stride, -7.f), other(rows * stride, -7.f);
  for (size_t i = 0; i < x.size(); ++i) x[i] = 1.0f + static_cast<float>(i % 13);
  cpu::Dropout(x.data(), stride, rows, cols, p, 42, out.data(), stride);
  cpu::Dropout(x.data(), stride, rows, cols, p, 42, out2.data(), stride);
  cpu::Dropout(x.data(), stride, rows, cols, p, 43, other.data(), stride);
  EXPECT_EQ(out, out2) << "same seed, same mask";
  EXPECT_NE(out, other) << "another seed, another mask";
  std::vector<float> dx(rows * stride, 1.0f);
  cpu::DropoutBackwardAdd(x.data(), stride, rows, cols, p, 42, dx.data(), stride);
  int64_t kept = 0;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t i = r * stride + c;
      if (out[i] != 0.f) {
        ++kept;
        EXPECT_FLOAT_EQ(out[i], x[i] / (1.0f - p));
        EXPECT_FLOAT_EQ(dx[i], 1.0f + x[i] / (1.0f - p)) << "the gradient passes where the input did";
      } else {
        EXPECT_EQ(dx[i], 1.0f) << "and only there";
      }
    }
    EXPECT_EQ(out[r * stride + cols], -7.f) << "columns past the row are not written";
  }
  EXPECT_NEAR(static_cast<double>(kept) / (rows * cols), 1.0 - p, 0.02);
}

}  // namespace
}  // namespace gla
