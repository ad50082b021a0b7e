// The fine-tuning ops on the GPU (backward of the norms, the gate norm, SwiGLU, the log-sigmoid gate,
// the short conv and the embedding; AdamW; the sum of squares; the fp32 forward variants the
// training pass uses; dropout; the softmax cross-entropy rows; the TF32 projections) against their
// CPU references on fresh random inputs, with odd sizes and strides wider than the rows. Both sides
// compute in fp32 (double where the references do), so the bound is 1e-5 relative
// (||got - ref|| / ||ref||), except for the TF32 GEMMs (10-bit mantissas: 5e-3); the accumulated
// outputs (dw, d_bias, d_table) start from non-zero values to show they add.
#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "kernels/activations.h"
#include "kernels/conv.h"
#include "kernels/cross_entropy.h"
#include "kernels/dropout.h"
#include "kernels/linear.h"
#include "kernels/norm.h"
#include "kernels/optimizer.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/cuda/host_vectors.h"

namespace gla {
namespace {

using testing::DeviceBuffers;

using testing::Random;
using testing::RelErr;

constexpr double kBound = 1e-5;


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
    ASSERT_EQ(cuda::LogSigmoidGateBackward(gp, ps, gb, gd, ps, gdp, ps, gdb, rows, n, ForgetGate{16.f, clamp, -1.f}, nullptr),
              cudaSuccess);
    cpu::LogSigmoidGateBackward(pre.data(), ps, bias.data(), dout.data(), ps, dpre.data(), ps, dbias.data(), rows, n,
                                ForgetGate{16.f, clamp, -1.f});
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

TEST(TrainingOpsCuda, Fp32ForwardVariants) {
  GLA_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(6);
  const int64_t rows = 19, n = 300, s = 304, heads = 3, dv = 64, width = heads * dv, I = 130;
  Dev d;
  // RmsNorm and the gate norm with fp32 output.
  const auto x = Random(rows * s, rng), w = Random(n, rng, 0.5f, 1.5f), z = Random(rows * s, rng, -3.f, 3.f),
             wg = Random(dv, rng, 0.5f, 1.5f);
  std::vector<float> y(rows * s, 0.f), yg(rows * s, 0.f);
  float *gx = d.Put(x), *gw = d.Put(w), *gz = d.Put(z), *gwg = d.Put(wg), *gy = d.Put(y), *gyg = d.Put(yg);
  ASSERT_EQ(cuda::RmsNorm(gx, s, nullptr, gw, gy, s, rows, n, 1e-6f, nullptr), cudaSuccess);
  ASSERT_EQ(cuda::RmsNormSwishGate(gx, s, gz, s, gwg, gyg, s, rows, heads, dv, 1e-6f, nullptr), cudaSuccess);
  cpu::RmsNorm(x.data(), s, w.data(), y.data(), s, rows, n, 1e-6f);
  cpu::RmsNormSwishGate(x.data(), s, z.data(), s, wg.data(), yg.data(), s, rows, heads, dv, 1e-6f);
  EXPECT_LT(RelErr(d.Get(gy, y.size()), y), kBound) << "RmsNorm";
  auto got_g = d.Get(gyg, yg.size());
  for (int64_t r = 0; r < rows; ++r)  // columns past heads * dv are not written
    for (int64_t c = width; c < s; ++c) got_g[r * s + c] = yg[r * s + c];
  EXPECT_LT(RelErr(got_g, yg), kBound) << "RmsNormSwishGate";
  // SwiGLU, the log-sigmoid gate in place (with the clamp), the fp32 embedding gather.
  const auto gu = Random(rows * 2 * I, rng, -4.f, 4.f), bias = Random(n, rng);
  std::vector<float> act(rows * I);
  float *ggu = d.Put(gu), *gact = d.Put(act), *gb = d.Put(bias);
  ASSERT_EQ(cuda::SwiGlu(ggu, 2 * I, gact, I, rows, I, nullptr), cudaSuccess);
  cpu::SwiGlu(gu.data(), 2 * I, act.data(), I, rows, I);
  EXPECT_LT(RelErr(d.Get(gact, act.size()), act), kBound) << "SwiGlu";
  auto gate = Random(rows * s, rng, -30.f, 10.f);
  float* ggate = d.Put(gate);
  ASSERT_EQ(cuda::LogSigmoidGate(ggate, s, gb, rows, n, ForgetGate{16.f, true, -0.5f}, nullptr), cudaSuccess);
  cpu::LogSigmoidGate(gate.data(), s, bias.data(), rows, n, ForgetGate{16.f, true, -0.5f});
  EXPECT_LT(RelErr(d.Get(ggate, gate.size()), gate), kBound) << "LogSigmoidGate";
  const int64_t V = 50, D = 70;
  const auto table = Random(V * D, rng);
  std::vector<int32_t> ids = {3, 49, 0, 3, 17};
  int32_t* gids = nullptr;
  ASSERT_EQ(d.buf.Upload(ids, &gids), cudaSuccess);
  std::vector<float> emb(ids.size() * D);
  float *gt = d.Put(table), *gemb = d.Put(emb);
  ASSERT_EQ(cuda::EmbeddingGather(gt, D, gids, static_cast<int64_t>(ids.size()), gemb, nullptr), cudaSuccess);
  cpu::EmbeddingGather(table.data(), D, ids.data(), static_cast<int64_t>(ids.size()), emb.data());
  EXPECT_EQ(d.Get(gemb, emb.size()), emb) << "EmbeddingGather (a copy: exact)";
}

TEST(TrainingOpsCuda, DropoutDrawsTheReferenceMask) {
  GLA_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(7);
  const int64_t rows = 33, cols = 257, s = 260;
  const float p = 0.3f;
  const uint64_t seed = 0x1234abcdull;
  const auto x = Random(rows * s, rng), dy = Random(rows * s, rng);
  auto out = Random(rows * s, rng), dx = Random(rows * s, rng);
  Dev d;
  float *gx = d.Put(x), *gdy = d.Put(dy), *gout = d.Put(out), *gdx = d.Put(dx);
  ASSERT_EQ(cuda::Dropout(gx, s, rows, cols, p, seed, gout, s, nullptr), cudaSuccess);
  ASSERT_EQ(cuda::DropoutBackwardAdd(gdy, s, rows, cols, p, seed, gdx, s, nullptr), cudaSuccess);
  cpu::Dropout(x.data(), s, rows, cols, p, seed, out.data(), s);
  cpu::DropoutBackwardAdd(dy.data(), s, rows, cols, p, seed, dx.data(), s);
  EXPECT_EQ(d.Get(gout, out.size()), out) << "the same mask, bit for bit";
  EXPECT_LT(RelErr(d.Get(gdx, dx.size()), dx), kBound);
  int64_t kept = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) kept += out[r * s + c] != 0.f;
  EXPECT_NEAR(static_cast<double>(kept) / (rows * cols), 1.0 - p, 0.02) << "keeps 1 - p of the elements";
}

// The references of these two are written out here (plain loops in double): the kernel test binary
// is also built on the GPU machine with nvcc alone, without the BLAS behind cpu::Linear.
TEST(TrainingOpsCuda, SoftmaxCrossEntropyRows) {
  GLA_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(8);
  const int64_t rows = 13, V = 5003;
  auto z = Random(rows * V, rng, -8.f, 8.f);
  std::vector<int32_t> targets(rows);
  for (int64_t r = 0; r < rows; ++r) targets[r] = r == 4 ? -1 : static_cast<int32_t>((r * 997) % V);
  const float scale = 1.0f / 12.0f;
  // cpu::LinearCrossEntropy's per-row step: loss = lse - z[t]; gradient grad_scale (softmax - onehot).
  std::vector<float> dz_ref(rows * V, 0.f);
  double want = 0;
  for (int64_t r = 0; r < rows; ++r) {
    if (targets[r] < 0) continue;
    double mx = -INFINITY, se = 0;
    for (int64_t j = 0; j < V; ++j) mx = std::max<double>(mx, z[r * V + j]);
    for (int64_t j = 0; j < V; ++j) se += std::exp(z[r * V + j] - mx);
    const double lse = mx + std::log(se);
    want += lse - z[r * V + targets[r]];
    for (int64_t j = 0; j < V; ++j) dz_ref[r * V + j] = static_cast<float>(scale * std::exp(z[r * V + j] - lse));
    dz_ref[r * V + targets[r]] -= scale;
  }
  Dev d;
  float* gz = d.Put(z);
  int32_t* gt = nullptr;
  ASSERT_EQ(d.buf.Upload(targets, &gt), cudaSuccess);
  void* sum = nullptr;
  ASSERT_EQ(d.buf.Alloc(sizeof(double), &sum), cudaSuccess);
  ASSERT_EQ(cudaMemset(sum, 0, sizeof(double)), cudaSuccess);
  ASSERT_EQ(cuda::SoftmaxCrossEntropyGrad(gz, V, gt, rows, V, scale, static_cast<double*>(sum), nullptr), cudaSuccess);
  double got = 0;
  ASSERT_EQ(cudaMemcpy(&got, sum, sizeof(double), cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_NEAR(got, want, 1e-5 * want);
  EXPECT_LT(RelErr(d.Get(gz, z.size()), dz_ref), kBound) << "gradient rows (zero for the ignored row)";
}

TEST(TrainingOpsCuda, Tf32Projections) {
  GLA_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(9);
  const int64_t M = 70, N = 96, K = 136, xs = 140, ys = 100, dxs = 144;
  constexpr double kTf32Bound = 5e-3;
  const auto x = Random(M * xs, rng), w = Random(N * K, rng), dy = Random(M * ys, rng);
  auto y = Random(M * ys, rng), dx = Random(M * dxs, rng), dw = Random(N * K, rng);
  Dev d;
  float *gx = d.Put(x), *gw = d.Put(w), *gdy = d.Put(dy), *gy = d.Put(y), *gdx = d.Put(dx), *gdw = d.Put(dw);
  cublasHandle_t h = nullptr;
  ASSERT_EQ(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
  // y = 0.5 x W^T + y;  dx = 2 dy W + dx;  dW += 2 dy^T x
  ASSERT_EQ(cuda::LinearF32(h, gx, xs, gw, N, K, gy, ys, M, 0.5f, 1.f), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cuda::LinearBackwardF32(h, gx, xs, gw, N, K, gdy, ys, gdx, dxs, 1.f, gdw, M, 2.f), CUBLAS_STATUS_SUCCESS);
  cublasDestroy(h);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double acc = 0;
      for (int64_t k = 0; k < K; ++k) acc += double(x[m * xs + k]) * w[n * K + k];
      y[m * ys + n] += static_cast<float>(0.5 * acc);
    }
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < K; ++k) {
      double acc = 0;
      for (int64_t n = 0; n < N; ++n) acc += double(dy[m * ys + n]) * w[n * K + k];
      dx[m * dxs + k] += static_cast<float>(2.0 * acc);
    }
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) {
      double acc = 0;
      for (int64_t m = 0; m < M; ++m) acc += double(dy[m * ys + n]) * x[m * xs + k];
      dw[n * K + k] += static_cast<float>(2.0 * acc);
    }
  EXPECT_LT(RelErr(d.Get(gy, y.size()), y), kTf32Bound) << "y";
  EXPECT_LT(RelErr(d.Get(gdx, dx.size()), dx), kTf32Bound) << "dx";
  EXPECT_LT(RelErr(d.Get(gdw, dw.size()), dw), kTf32Bound) << "dw";
}

}  // namespace
}  // namespace gla
