// The fine-tuning ops on the GPU (backward of the norms, the gate norm, SwiGLU, the log-sigmoid gate,
// the short conv and the embedding; AdamW; the sum of squares) against their CPU references on
// fresh random inputs, with odd sizes and strides wider than the rows. Both sides compute in fp32
// (double where the references do), so the bound is 1e-5 relative (||got - ref|| / ||ref||); the
// accumulated outputs (dw, d_bias, d_table) start from non-zero values to show they add.
#include <cmath>
#include <random>
#include <vector>

#include "kernels/activations.h"
#include "kernels/conv.h"
#include "kernels/norm.h"
#include "kernels/optimizer.h"
#include "tests/cuda/cuda_test_util.h"

namespace gla {
namespace {

using testing::DeviceBuffers;

double RelErr(const std::vector<float>& got, const std::vector<float>& want) {
  EXPECT_EQ(got.size(), want.size());
  return testing::RelErr(got.data(), want.data(), want.size());
}

constexpr double kBound = 1e-5;

std::vector<float> Random(size_t n, std::mt19937& rng, float lo = -1.f, float hi = 1.f) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}

// Device copies of host vectors, downloaded again by Get.
struct Dev {
  DeviceBuffers buf;
  float* Put(const std::vector<float>& h) {
    float* d = nullptr;
    EXPECT_EQ(buf.Upload(h, &d), cudaSuccess);
    return d;
  }
  std::vector<float> Get(const float* d, size_t n) {
    std::vector<float> h(n);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(h.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
  }
};

TEST(TrainingOpsCuda, RmsNormBackward) {
  GLA_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(1);
  const int64_t rows = 37, n = 300, xs = 310, dys = 305, dxs = 320;
  for (bool accumulate : {false, true}) {
    const auto x = Random(rows * xs, rng), w = Random(n, rng, 0.5f, 1.5f), dy = Random(rows * dys, rng);
    auto dx = Random(rows * dxs, rng), dw = Random(n, rng);
    Dev d;
    float *gx = d.Put(x), *gw = d.Put(w), *gdy = d.Put(dy), *gdx = d.Put(dx), *gdw = d.Put(dw);
    ASSERT_EQ(cuda::RmsNormBackward(gx, xs, gw, gdy, dys, gdx, dxs, accumulate, gdw, rows, n, 1e-6f, nullptr),
              cudaSuccess);
    cpu::RmsNormBackward(x.data(), xs, w.data(), dy.data(), dys, dx.data(), dxs, accumulate, dw.data(), rows, n, 1e-6f);
    EXPECT_LT(RelErr(d.Get(gdx, dx.size()), dx), kBound) << "dx, accumulate " << accumulate;
    EXPECT_LT(RelErr(d.Get(gdw, dw.size()), dw), kBound) << "dw";
  }
}

TEST(TrainingOpsCuda, RmsNormSwishGateBackward) {
  GLA_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(2);
  const int64_t rows = 21, heads = 3, dv = 96, width = heads * dv, s = width + 8;
  for (bool gated : {true, false}) {
    const auto o = Random(rows * s, rng), z = Random(rows * s, rng, -3.f, 3.f), w = Random(dv, rng, 0.5f, 1.5f),
               dy = Random(rows * s, rng);
    auto d_o = Random(rows * s, rng), d_z = Random(rows * s, rng), dw = Random(dv, rng);
    Dev d;
    float *go = d.Put(o), *gz = d.Put(z), *gw = d.Put(w), *gdy = d.Put(dy), *gdo = d.Put(d_o), *gdz = d.Put(d_z),
          *gdw = d.Put(dw);
    ASSERT_EQ(cuda::RmsNormSwishGateBackward(go, s, gated ? gz : nullptr, s, gw, gdy, s, gdo, s, gdz, s, gdw, rows,
                                             heads, dv, 1e-5f, nullptr),
              cudaSuccess);
    cpu::RmsNormSwishGateBackward(o.data(), s, gated ? z.data() : nullptr, s, w.data(), dy.data(), s, d_o.data(), s,
                                  d_z.data(), s, dw.data(), rows, heads, dv, 1e-5f);
    EXPECT_LT(RelErr(d.Get(gdo, d_o.size()), d_o), kBound) << "d_o, gated " << gated;
    EXPECT_LT(RelErr(d.Get(gdz, d_z.size()), d_z), kBound) << "d_gate";
    EXPECT_LT(RelErr(d.Get(gdw, dw.size()), dw), kBound) << "dw";
  }
}

TEST(TrainingOpsCuda, SwiGluAndGateBackward) {
  GLA_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(3);
  {
    const int64_t M = 19, I = 130, gs = 2 * I + 4, ds = I + 2, dgs = 2 * I + 6;
    const auto gu = Random(M * gs, rng, -4.f, 4.f), dout = Random(M * ds, rng);
    auto dgu = Random(M * dgs, rng);
    Dev d;
    float *ggu = d.Put(gu), *gd = d.Put(dout), *gdgu = d.Put(dgu);
    ASSERT_EQ(cuda::SwiGluBackward(ggu, gs, gd, ds, gdgu, dgs, M, I, nullptr), cudaSuccess);
    cpu::SwiGluBackward(gu.data(), gs, dout.data(), ds, dgu.data(), dgs, M, I);
    EXPECT_LT(RelErr(d.Get(gdgu, dgu.size()), dgu), kBound) << "SwiGLU";
  }
  for (bool clamp : {false, true}) {
    const int64_t rows = 150, n = 70, ps = 75;  // more rows than one block's run
    const auto pre = Random(rows * ps, rng, -40.f, 10.f), bias = Random(n, rng), dout = Random(rows * ps, rng);
    auto dpre = Random(rows * ps, rng), dbias = Random(n, rng);
    Dev d;
    float *gp = d.Put(pre), *gb = d.Put(bias), *gd = d.Put(dout), *gdp = d.Put(dpre), *gdb = d.Put(dbias);
    ASSERT_EQ(cuda::LogSigmoidGateBackward(gp, ps, gb, gd, ps, gdp, ps, gdb, rows, n, 16.f, clamp, -1.f, nullptr),
              cudaSuccess);
    cpu::LogSigmoidGateBackward(pre.data(), ps, bias.data(), dout.data(), ps, dpre.data(), ps, dbias.data(), rows, n,
                                16.f, clamp, -1.f);
    EXPECT_LT(RelErr(d.Get(gdp, dpre.size()), dpre), kBound) << "d_pre, clamp " << clamp;
    EXPECT_LT(RelErr(d.Get(gdb, dbias.size()), dbias), kBound) << "d_bias";
  }
}

TEST(TrainingOpsCuda, ShortConvAndEmbeddingBackward) {
  GLA_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(4);
  const std::vector<int32_t> cu = {0, 1, 5, 5, 40};  // lengths 1, 4, 0, 35
  const int64_t C = 150, xs = 160, T = cu.back();
  const int K = 4;
  const auto x = Random(T * xs, rng), w = Random(C * K, rng), dy = Random(T * xs, rng);
  auto dx = Random(T * xs, rng), dw = Random(C * K, rng);
  Dev d;
  int32_t* gcu = nullptr;
  ASSERT_EQ(d.buf.Upload(cu, &gcu), cudaSuccess);
  float *gx = d.Put(x), *gw = d.Put(w), *gdy = d.Put(dy), *gdx = d.Put(dx), *gdw = d.Put(dw);
  ASSERT_EQ(cuda::ShortConvSiluBackward(gx, xs, gcu, 4, C, gw, K, gdy, xs, gdx, xs, gdw, nullptr), cudaSuccess);
  for (size_t n = 0; n + 1 < cu.size(); ++n)
    cpu::ShortConvSiluBackward(x.data() + cu[n] * xs, xs, cu[n + 1] - cu[n], C, w.data(), K, nullptr,
                               dy.data() + cu[n] * xs, xs, dx.data() + cu[n] * xs, xs, dw.data());
  const auto got_dx = d.Get(gdx, dx.size());
  double num = 0, den = 0;  // the columns beyond C (stride padding) are not outputs
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < C; ++c) {
      num += std::pow(double(got_dx[t * xs + c]) - dx[t * xs + c], 2);
      den += std::pow(double(dx[t * xs + c]), 2);
    }
  EXPECT_LT(std::sqrt(num / den), kBound) << "dx";
  EXPECT_LT(RelErr(d.Get(gdw, dw.size()), dw), kBound) << "dw";
  EXPECT_EQ(cuda::ShortConvSiluBackward(gx, xs, gcu, 4, C, gw, 10, gdy, xs, gdx, xs, gdw, nullptr),
            cudaErrorInvalidValue)
      << "K > 9";

  const int64_t D = 33, V = 20, n = 50;
  std::vector<int32_t> ids(n);
  for (auto& id : ids) id = static_cast<int32_t>(rng() % V);  // repeated ids: the adds collide
  const auto dout = Random(n * D, rng);
  auto table = Random(V * D, rng);
  int32_t* gids = nullptr;
  ASSERT_EQ(d.buf.Upload(ids, &gids), cudaSuccess);
  float *gdo = d.Put(dout), *gt = d.Put(table);
  ASSERT_EQ(cuda::EmbeddingScatterAdd(gdo, D, gids, n, gt, nullptr), cudaSuccess);
  cpu::EmbeddingScatterAdd(dout.data(), D, ids.data(), n, table.data());
  EXPECT_LT(RelErr(d.Get(gt, table.size()), table), kBound) << "d_table";
}

TEST(TrainingOpsCuda, AdamWAndSumOfSquares) {
  GLA_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(5);
  const int64_t n = 100003;
  auto param = Random(n, rng), m = Random(n, rng, -0.1f, 0.1f), v = Random(n, rng, 0.f, 0.01f);
  const auto grad = Random(n, rng);
  Dev d;
  float *gp = d.Put(param), *gg = d.Put(grad), *gm = d.Put(m), *gv = d.Put(v);
  cpu::AdamWParams p;
  p.lr = 1e-3f;
  p.weight_decay = 0.1f;
  for (int64_t step = 1; step <= 3; ++step) {
    p.step = step;
    ASSERT_EQ(cuda::AdamWStep(gp, gg, gm, gv, n, p, 0.7f, nullptr), cudaSuccess);
    cpu::AdamWStep(param.data(), grad.data(), m.data(), v.data(), n, p, 0.7f);
  }
  EXPECT_LT(RelErr(d.Get(gp, n), param), kBound) << "param";
  EXPECT_LT(RelErr(d.Get(gm, n), m), kBound) << "m";
  EXPECT_LT(RelErr(d.Get(gv, n), v), kBound) << "v";

  void* sum = nullptr;
  ASSERT_EQ(d.buf.Alloc(sizeof(double), &sum), cudaSuccess);
  ASSERT_EQ(cudaMemset(sum, 0, sizeof(double)), cudaSuccess);
  ASSERT_EQ(cuda::SumOfSquares(gg, n, static_cast<double*>(sum), nullptr), cudaSuccess);
  ASSERT_EQ(cuda::SumOfSquares(gm, n, static_cast<double*>(sum), nullptr), cudaSuccess);  // adds
  double got = 0;
  ASSERT_EQ(cudaMemcpy(&got, sum, sizeof(double), cudaMemcpyDeviceToHost), cudaSuccess);
  const double want = cpu::SumOfSquares(grad.data(), n) + cpu::SumOfSquares(m.data(), n);
  EXPECT_NEAR(got, want, 1e-9 * want);
}

}  // namespace
}  // namespace gla
