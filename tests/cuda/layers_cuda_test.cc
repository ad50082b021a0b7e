// The CUDA layer kernels (norms, gate norm, SwiGLU, low-rank gate, embedding gather, short conv,
// cuBLAS projections) against their CPU references on fresh random inputs, at the gla-340M and
// gla-1.3B widths. bf16 outputs are held to 1e-2 relative (bf16 keeps 8 bits: ~4e-3 per value);
// fp32 outputs of bf16 GEMMs are compared with a double-precision GEMM on the same bf16-rounded inputs.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <tuple>
#include <random>
#include <vector>

#include "kernels/activations.h"
#include "kernels/conv.h"
#include "kernels/linear.h"
#include "kernels/linear_fp8.h"
#include "kernels/norm.h"
#include "models/dtype.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/cuda/host_vectors.h"

namespace gla {
namespace {

using testing::Dev;
using testing::FromBf16;
using testing::NaiveLinear;
using testing::Random;
using testing::RelErr;
using testing::RoundBf16;
using testing::ToBf16;

struct Widths {
  int D, H, dv, I, kdpg;
};
class Layers : public ::testing::TestWithParam<Widths> {};

TEST_P(Layers, RmsNormAndGatheredRows) {
  GLA_REQUIRE_CUDA_DEVICE();
  const Widths w = GetParam();
  std::mt19937 rng(11);
  const int rows = 37;
  const auto x = Random(rows * w.D, rng, -3, 3), g = Random(w.D, rng, 0.5f, 1.5f);
  std::vector<float> ref(rows * w.D);
  cpu::RmsNorm(x.data(), w.D, g.data(), ref.data(), w.D, rows, w.D, 1e-6f);
  Dev<float> dx(x), dg(g);
  Dev<__nv_bfloat16> dy(rows * w.D);
  GLA_CUDA_OK(cuda::RmsNorm(dx.p, w.D, nullptr, dg.p, dy.p, w.D, rows, w.D, 1e-6f, nullptr));
  EXPECT_LT(RelErr(FromBf16(dy.Get()), ref), 1e-2);

  // Gathered rows, in a chosen order (the final norm takes only the rows whose logits are wanted).
  const std::vector<int32_t> ids = {36, 0, 5, 5, 20};
  Dev<int32_t> did(ids);
  Dev<__nv_bfloat16> dz(ids.size() * w.D);
  GLA_CUDA_OK(cuda::RmsNorm(dx.p, w.D, did.p, dg.p, dz.p, w.D, ids.size(), w.D, 1e-6f, nullptr));
  std::vector<float> want;
  for (int32_t r : ids) want.insert(want.end(), ref.begin() + r * w.D, ref.begin() + (r + 1) * w.D);
  EXPECT_LT(RelErr(FromBf16(dz.Get()), want), 1e-2);
}

TEST_P(Layers, RmsNormSwishGateWithAndWithoutGate) {
  GLA_REQUIRE_CUDA_DEVICE();
  const Widths w = GetParam();
  std::mt19937 rng(12);
  const int rows = 19, width = w.H * w.dv, gate_stride = width + 7;
  const auto o = Random(rows * width, rng, -2, 2), gate = Random(rows * gate_stride, rng, -4, 4),
             g = Random(w.dv, rng, 0.5f, 1.5f);
  Dev<float> d_o(o), d_gate(gate), d_g(g);
  for (bool with_gate : {true, false}) {
    std::vector<float> ref(rows * width);
    cpu::RmsNormSwishGate(o.data(), width, with_gate ? gate.data() : nullptr, gate_stride, g.data(), ref.data(), width,
                          rows, w.H, w.dv, 1e-5f);
    Dev<__nv_bfloat16> dy(rows * width);
    GLA_CUDA_OK(cuda::RmsNormSwishGate(d_o.p, width, with_gate ? d_gate.p : nullptr, gate_stride, d_g.p, dy.p, width,
                                       rows, w.H, w.dv, 1e-5f, nullptr));
    EXPECT_LT(RelErr(FromBf16(dy.Get()), ref), 1e-2) << "gate " << with_gate;
  }
}

TEST_P(Layers, SwiGlu) {
  GLA_REQUIRE_CUDA_DEVICE();
  const Widths w = GetParam();
  std::mt19937 rng(13);
  for (int rows : {1, 3, 100, 2049}) {
    const auto gu = RoundBf16(Random(rows * 2 * w.I, rng, -5, 5));
    std::vector<float> ref(rows * w.I);
    cpu::SwiGlu(gu.data(), 2 * w.I, ref.data(), w.I, rows, w.I);
    Dev<__nv_bfloat16> dgu(ToBf16(gu)), dout(rows * w.I);
    GLA_CUDA_OK(cuda::SwiGlu(dgu.p, 2 * w.I, dout.p, w.I, rows, w.I, nullptr));
    EXPECT_LT(RelErr(FromBf16(dout.Get()), ref), 1e-2) << rows << " rows";
  }
}

// The 16-byte path (aligned rows, I a multiple of 8) and the scalar one (here: an output that
// starts one value off alignment, and an odd width) make the same bits.
TEST_P(Layers, SwiGluVectorEqualsScalar) {
  GLA_REQUIRE_CUDA_DEVICE();
  const Widths w = GetParam();
  std::mt19937 rng(14);
  const int rows = 33;
  const auto gu = RoundBf16(Random(rows * 2 * w.I, rng, -8, 8));
  Dev<__nv_bfloat16> dgu(ToBf16(gu)), aligned(rows * w.I), shifted(rows * w.I + 1);
  GLA_CUDA_OK(cuda::SwiGlu(dgu.p, 2 * w.I, aligned.p, w.I, rows, w.I, nullptr));
  GLA_CUDA_OK(cuda::SwiGlu(dgu.p, 2 * w.I, shifted.p + 1, w.I, rows, w.I, nullptr));
  const auto a = aligned.Get(), b = shifted.Get();
  ASSERT_EQ(std::memcmp(a.data(), b.data() + 1, a.size() * sizeof(a[0])), 0);
  // An odd width takes the scalar path; it still matches the reference.
  const int I = w.I - 3;
  std::vector<float> ref(rows * I);
  cpu::SwiGlu(gu.data(), 2 * I, ref.data(), I, rows, I);
  Dev<__nv_bfloat16> odd(rows * I);
  GLA_CUDA_OK(cuda::SwiGlu(dgu.p, 2 * I, odd.p, I, rows, I, nullptr));
  EXPECT_LT(RelErr(FromBf16(odd.Get()), ref), 1e-2);
}

TEST_P(Layers, LowRankGateFusedEqualsProjectionThenGate) {
  GLA_REQUIRE_CUDA_DEVICE();
  const Widths w = GetParam();
  std::mt19937 rng(19);
  const int stride = 72;
  for (int rank : {5, 16, 32, 64})
    for (int rows : {1, 7, 300, 4099}) {
      const auto lr = Random(rows * stride, rng, -2, 2), w1 = Random(w.kdpg * rank, rng), bias = Random(w.kdpg, rng);
      for (bool clamp : {false, true}) {
        std::vector<float> ref(rows * w.kdpg, 0.f);
        NaiveLinear(lr.data(), stride, w1.data(), w.kdpg, rank, ref.data(), rows);
        cpu::LogSigmoidGate(ref.data(), w.kdpg, bias.data(), rows, w.kdpg, ForgetGate{16.f, clamp, -0.5f});
        Dev<float> dlr(lr), dw1(w1), db(bias), dout(rows * w.kdpg);
        GLA_CUDA_OK(cuda::LowRankGate(dlr.p, stride, dw1.p, rank, db.p, dout.p, w.kdpg, rows, w.kdpg,
                                      ForgetGate{16.f, clamp, -0.5f}, nullptr));
        EXPECT_LT(RelErr(dout.Get(), ref), 1e-5) << "rank " << rank << ", " << rows << " rows, clamp " << clamp;
      }
    }
  // Without a bias, and n not a multiple of the block (the last block's extra threads idle).
  const int rows = 50, n = w.kdpg - 37, rank = 16;
  const auto lr = Random(rows * stride, rng, -2, 2), w1 = Random(n * rank, rng);
  std::vector<float> ref(rows * n, 0.f);
  NaiveLinear(lr.data(), stride, w1.data(), n, rank, ref.data(), rows);
  cpu::LogSigmoidGate(ref.data(), n, nullptr, rows, n, ForgetGate{16.f, false, 0.f});
  Dev<float> dlr(lr), dw1(w1), dout(rows * n);
  GLA_CUDA_OK(cuda::LowRankGate(dlr.p, stride, dw1.p, rank, nullptr, dout.p, n, rows, n, ForgetGate{16.f, false, 0.f},
                                nullptr));
  EXPECT_LT(RelErr(dout.Get(), ref), 1e-5);
}

TEST_P(Layers, EmbeddingGather) {
  GLA_REQUIRE_CUDA_DEVICE();
  const Widths w = GetParam();
  std::mt19937 rng(15);
  const int V = 300;
  const auto table = RoundBf16(Random(V * w.D, rng));
  const std::vector<int32_t> ids = {0, 299, 17, 17, 5};
  std::vector<float> ref(ids.size() * w.D);
  cpu::EmbeddingGather(table.data(), w.D, ids.data(), ids.size(), ref.data());
  Dev<__nv_bfloat16> dt(ToBf16(table));
  Dev<int32_t> di(ids);
  Dev<float> dout(ids.size() * w.D);
  GLA_CUDA_OK(cuda::EmbeddingGather(dt.p, w.D, di.p, ids.size(), dout.p, nullptr));
  EXPECT_EQ(dout.Get(), ref);  // a copy: exact
}

TEST_P(Layers, LinearBf16AndResidualAdd) {
  GLA_REQUIRE_CUDA_DEVICE();
  const Widths w = GetParam();
  std::mt19937 rng(16);
  cublasHandle_t h;
  ASSERT_EQ(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
  for (int M : {1, 5, 64}) {
    const int K = w.D, N = 2 * w.I, xs = K + 8;
    const auto x = RoundBf16(Random(M * xs, rng)), W = RoundBf16(Random(N * K, rng, -0.05f, 0.05f));
    const auto y0 = Random(M * N, rng);
    std::vector<float> ref = y0;
    NaiveLinear(x.data(), xs, W.data(), N, K, ref.data(), M, 1.0f);
    Dev<__nv_bfloat16> dx(ToBf16(x)), dW(ToBf16(W));
    Dev<float> dy(y0);
    ASSERT_EQ(cuda::LinearBf16(h, dx.p, xs, dW.p, N, K, dy.p, false, N, M, 1.0f), CUBLAS_STATUS_SUCCESS);
    EXPECT_LT(RelErr(dy.Get(), ref), 1e-4) << "M=" << M << " fp32 out, residual";
    std::vector<float> ref2(M * N);
    NaiveLinear(x.data(), xs, W.data(), N, K, ref2.data(), M);
    Dev<__nv_bfloat16> dz(M * N);
    ASSERT_EQ(cuda::LinearBf16(h, dx.p, xs, dW.p, N, K, dz.p, true, N, M), CUBLAS_STATUS_SUCCESS);
    EXPECT_LT(RelErr(FromBf16(dz.Get()), ref2), 1e-2) << "M=" << M << " bf16 out";
  }
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  cublasDestroy(h);
}

// The decode-sized projection kernels at every row count they take (the CUDA-core one to
// kSmallMCudaCores, the tensor-core one to kSmallMTensorCores, LinearSmallM's choice to kSmallM), both output types,
// residual add; odd N (a partial 16-feature tile) and K not a multiple of the 32-wide slices.
TEST_P(Layers, LinearSmallMAtEveryRowCount) {
  GLA_REQUIRE_CUDA_DEVICE();
  const Widths w = GetParam();
  std::mt19937 rng(18);
  using Kernel = cudaError_t (*)(const __nv_bfloat16*, int64_t, const __nv_bfloat16*, int64_t, int64_t, void*, bool,
                                 int64_t, int64_t, float, cudaStream_t);
  const struct {
    const char* name;
    Kernel kernel;
    int max_m;
  } kernels[] = {{"cuda cores", cuda::LinearSmallMCudaCores, cuda::kSmallMCudaCores},
                 {"tensor cores", cuda::LinearSmallMTensorCores, cuda::kSmallMTensorCores},
                 {"LinearSmallM", cuda::LinearSmallM, cuda::kSmallM}};
  for (auto [N, K] : {std::pair{2 * w.I, w.D}, std::pair{w.D, w.I}, std::pair{1000, 64}, std::pair{37, 200}}) {
    const int xs = K + 8;
    const auto W = RoundBf16(Random(static_cast<size_t>(N) * K, rng, -0.05f, 0.05f));
    Dev<__nv_bfloat16> dW(ToBf16(W));
    for (const auto& k : kernels) {
      for (int M = 1; M <= k.max_m; ++M) {
        const auto x = RoundBf16(Random(M * xs, rng));
        const auto y0 = Random(static_cast<size_t>(M) * N, rng);
        std::vector<float> ref = y0;
        NaiveLinear(x.data(), xs, W.data(), N, K, ref.data(), M, 1.0f);
        Dev<__nv_bfloat16> dx(ToBf16(x));
        Dev<float> dy(y0);
        GLA_CUDA_OK(k.kernel(dx.p, xs, dW.p, N, K, dy.p, false, N, M, 1.0f, nullptr));
        EXPECT_LT(RelErr(dy.Get(), ref), 1e-5) << k.name << " N=" << N << " K=" << K << " M=" << M;
        std::vector<float> ref2(static_cast<size_t>(M) * N, 0.f);
        NaiveLinear(x.data(), xs, W.data(), N, K, ref2.data(), M);
        Dev<__nv_bfloat16> dz(static_cast<size_t>(M) * N);
        GLA_CUDA_OK(k.kernel(dx.p, xs, dW.p, N, K, dz.p, true, N, M, 0.0f, nullptr));
        EXPECT_LT(RelErr(FromBf16(dz.Get()), ref2), 1e-2) << k.name << " N=" << N << " K=" << K << " M=" << M << " bf16";
      }
    }
  }
  Dev<__nv_bfloat16> dx(16 * 17), dW(16);
  Dev<float> dy(2 * 17);
  for (const auto& k : kernels) {
    EXPECT_EQ(k.kernel(dx.p, 8, dW.p, 2, 8, dy.p, false, 2, k.max_m + 1, 0.f, nullptr), cudaErrorInvalidValue) << k.name;
    EXPECT_EQ(k.kernel(dx.p, 6, dW.p, 2, 6, dy.p, false, 2, 1, 0.f, nullptr), cudaErrorInvalidValue) << k.name;
  }
  EXPECT_EQ(cudaGetLastError(), cudaSuccess) << "a refusal must not launch";
}

// FP8 and INT8 weights (issue 23): the kernels reading one-byte rows with a scale per row
// (QuantizeFp8E4M3PerRow / cpu::QuantizeInt8PerRow of random weights) against the double-precision
// product of the same dequantized weights, at every row count each takes to 32 (the tensor-core
// form's four 8-row tiles) and, for the tensor-core form, at row counts to kSmallMByteTensorCores
// (256: row blocks of 32; the model shapes at 64 rows only, for the CPU reference's time), residual add and bf16
// output; bad shapes refused unlaunched.
TEST_P(Layers, LinearSmallMByteWeightsAtEveryRowCount) {
  GLA_REQUIRE_CUDA_DEVICE();
  const Widths w = GetParam();
  std::mt19937 rng(19);
  // One signature over both weight types: the codes as bytes and their scales.
  using Kernel = std::function<cudaError_t(const __nv_bfloat16*, int64_t, const uint8_t*, const float*, int64_t,
                                           int64_t, void*, bool, int64_t, int64_t, float)>;
  auto fp8 = [](auto f) -> Kernel {
    return [f](const __nv_bfloat16* x, int64_t xs, const uint8_t* q, const float* s, int64_t N, int64_t K, void* y,
               bool y_bf16, int64_t ys, int64_t M, float beta) {
      return f(x, xs, cuda::Fp8Weight{q, s}, N, K, y, y_bf16, ys, M, beta, nullptr);
    };
  };
  auto int8 = [](auto f) -> Kernel {
    return [f](const __nv_bfloat16* x, int64_t xs, const uint8_t* q, const float* s, int64_t N, int64_t K, void* y,
               bool y_bf16, int64_t ys, int64_t M, float beta) {
      return f(x, xs, cuda::Int8Weight{reinterpret_cast<const int8_t*>(q), s}, N, K, y, y_bf16, ys, M, beta, nullptr);
    };
  };
  const struct {
    const char* name;
    bool int8;
    Kernel kernel;
    int max_m;
  } kernels[] = {{"fp8 cuda cores", false, fp8(cuda::LinearSmallMFp8CudaCores), cuda::kSmallMCudaCores},
                 {"fp8 tensor cores", false, fp8(cuda::LinearSmallMFp8TensorCores), cuda::kSmallMByteTensorCores},
                 {"LinearSmallMFp8", false, fp8(cuda::LinearSmallMFp8), cuda::kSmallM},
                 {"int8 cuda cores", true, int8(cuda::LinearSmallMInt8CudaCores), cuda::kSmallMCudaCores},
                 {"int8 tensor cores", true, int8(cuda::LinearSmallMInt8TensorCores), cuda::kSmallMByteTensorCores},
                 {"LinearSmallMInt8", true, int8(cuda::LinearSmallMInt8), cuda::kSmallM}};
  for (auto [N, K] : {std::pair{2 * w.I, w.D}, std::pair{w.D, w.I}, std::pair{1000, 64}, std::pair{37, 208}}) {
    const int xs = K + 8;
    const auto W = Random(static_cast<size_t>(N) * K, rng, -0.05f, 0.05f);
    const testing::ByteRowsHost hosts[2] = {testing::QuantizeRowsHost(W, N, K, false),
                                            testing::QuantizeRowsHost(W, N, K, true)};
    for (const auto& k : kernels) {
      const testing::ByteRowsHost& h = hosts[k.int8];
      Dev<uint8_t> dq(h.q);
      Dev<float> dscale(h.scale);
      std::vector<int> ms;
      for (int M = 1; M <= std::min(k.max_m, 32); ++M) ms.push_back(M);
      for (int M : {33, 40, 64, 100, 255, 256})
        if (M <= k.max_m && (M == 64 || static_cast<int64_t>(N) * K <= (int64_t{1} << 20))) ms.push_back(M);
      for (int M : ms) {
        const auto x = RoundBf16(Random(M * xs, rng));
        const auto y0 = Random(static_cast<size_t>(M) * N, rng);
        std::vector<float> ref = y0;
        NaiveLinear(x.data(), xs, h.values.data(), N, K, ref.data(), M, 1.0f);
        Dev<__nv_bfloat16> dx(ToBf16(x));
        Dev<float> dy(y0);
        GLA_CUDA_OK(k.kernel(dx.p, xs, dq.p, dscale.p, N, K, dy.p, false, N, M, 1.0f));
        EXPECT_LT(RelErr(dy.Get(), ref), 1e-5) << k.name << " N=" << N << " K=" << K << " M=" << M;
        std::vector<float> ref2(static_cast<size_t>(M) * N, 0.f);
        NaiveLinear(x.data(), xs, h.values.data(), N, K, ref2.data(), M);
        Dev<__nv_bfloat16> dz(static_cast<size_t>(M) * N);
        GLA_CUDA_OK(k.kernel(dx.p, xs, dq.p, dscale.p, N, K, dz.p, true, N, M, 0.0f));
        EXPECT_LT(RelErr(FromBf16(dz.Get()), ref2), 1e-2) << k.name << " N=" << N << " K=" << K << " M=" << M
                                                          << " bf16";
      }
    }
  }
  Dev<__nv_bfloat16> dx(16 * 17);
  Dev<uint8_t> dq(64);
  Dev<float> dy(2 * 17), dscale(2);
  for (const auto& k : kernels) {
    EXPECT_EQ(k.kernel(dx.p, 16, dq.p, dscale.p, 2, 16, dy.p, false, 2, k.max_m + 1, 0.f), cudaErrorInvalidValue)
        << k.name;
    EXPECT_EQ(k.kernel(dx.p, 8, dq.p, dscale.p, 2, 8, dy.p, false, 2, 1, 0.f), cudaErrorInvalidValue) << k.name;  // K % 16
    EXPECT_EQ(k.kernel(dx.p, 16, dq.p, nullptr, 2, 16, dy.p, false, 2, 1, 0.f), cudaErrorInvalidValue) << k.name;
  }
  EXPECT_EQ(cudaGetLastError(), cudaSuccess) << "a refusal must not launch";
}

// The medium-sized projection (17 to 256 rows) with each weight format against the double-precision
// product of the same (dequantized) weights: every token-tile form (32, 64, 128 tokens a block, and
// 128-token blocks side by side above 128 rows), full and partial tiles, K split across a cluster
// (the model shapes; 208 = three and a quarter tiles of 64 under a capped split, the default giving
// each block 256 of K at least) and not (K = 64: one tile), features past N (37, 1000), the
// residual add and bf16 output; the same bits on a second run; the benchmarks' other forms (a
// capped split, 64-feature blocks, FP8 inputs); bad shapes and tunings refused unlaunched. The
// model shapes at two row counts (FP8 inputs: 17) and fp32 output only (the CPU reference's time).
TEST_P(Layers, LinearMediumMEveryFormatAndRowCount) {
  GLA_REQUIRE_CUDA_DEVICE();
  const Widths w = GetParam();
  std::mt19937 rng(23);
  enum Format { kBf16, kFp8, kInt8 };
  for (auto [N, K] : {std::pair{2 * w.I, w.D}, std::pair{w.D, w.I}, std::pair{1000, 64}, std::pair{37, 208}}) {
    const int xs = K + 8;
    const auto W = Random(static_cast<size_t>(N) * K, rng, -0.05f, 0.05f);
    const std::vector<float> Wb = RoundBf16(W);
    const testing::ByteRowsHost hosts[2] = {testing::QuantizeRowsHost(W, N, K, false),
                                            testing::QuantizeRowsHost(W, N, K, true)};
    Dev<__nv_bfloat16> dW(ToBf16(Wb));
    Dev<uint8_t> dq8(hosts[0].q), dqi(hosts[1].q);
    Dev<float> ds8(hosts[0].scale), dsi(hosts[1].scale);
    const bool model_shape = static_cast<int64_t>(N) * K > (int64_t{1} << 20);
    const std::vector<int> ms = model_shape ? std::vector<int>{17, 100}
                                            : std::vector<int>{17, 24, 32, 33, 48, 64, 65, 100, 128, 129, 200, 256};
    for (Format f : {kBf16, kFp8, kInt8}) {
      const char* name = f == kBf16 ? "bf16" : f == kFp8 ? "fp8" : "int8";
      const std::vector<float>& values = f == kBf16 ? Wb : hosts[f == kInt8].values;
      auto run = [&](const __nv_bfloat16* x, void* y, bool y_bf16, int M, float beta,
                     const cuda::MediumMTuning& tuning = {}) {
        if (f == kBf16) return cuda::LinearMediumM(x, xs, dW.p, N, K, y, y_bf16, N, M, beta, nullptr, tuning);
        if (f == kFp8) return cuda::LinearMediumMFp8(x, xs, cuda::Fp8Weight{dq8.p, ds8.p}, N, K, y, y_bf16, N, M, beta,
                                                     nullptr, tuning);
        return cuda::LinearMediumMInt8(x, xs, cuda::Int8Weight{reinterpret_cast<const int8_t*>(dqi.p), dsi.p}, N, K, y,
                                       y_bf16, N, M, beta, nullptr, tuning);
      };
      for (int M : ms) {
        const auto x = RoundBf16(Random(M * xs, rng));
        const auto y0 = Random(static_cast<size_t>(M) * N, rng);
        std::vector<float> ref = y0;
        NaiveLinear(x.data(), xs, values.data(), N, K, ref.data(), M, 1.0f);
        Dev<__nv_bfloat16> dx(ToBf16(x));
        Dev<float> dy(y0), dy2(y0);
        GLA_CUDA_OK(run(dx.p, dy.p, false, M, 1.0f));
        const auto got = dy.Get();
        EXPECT_LT(RelErr(got, ref), 1e-5) << name << " N=" << N << " K=" << K << " M=" << M;
        GLA_CUDA_OK(run(dx.p, dy2.p, false, M, 1.0f));
        const auto again = dy2.Get();
        EXPECT_EQ(0, std::memcmp(got.data(), again.data(), got.size() * sizeof(float)))
            << name << " N=" << N << " K=" << K << " M=" << M << ": a second run changed bits";
        // The benchmarks' other forms (MediumMTuning), on the small shapes: K split over at most 2
        // blocks, and 64 features a block at M <= 32 (with and without the cap).
        std::vector<cuda::MediumMTuning> forms;
        if (!model_shape) forms.push_back({2, false});
        if (!model_shape && M <= 32) forms.insert(forms.end(), {{0, true}, {3, true}});
        for (const cuda::MediumMTuning& form : forms) {
          Dev<float> dyf(y0);
          GLA_CUDA_OK(run(dx.p, dyf.p, false, M, 1.0f, form));
          EXPECT_LT(RelErr(dyf.Get(), ref), 1e-5) << name << " N=" << N << " K=" << K << " M=" << M
                                                  << " max_split=" << form.max_split << " narrow=" << form.narrow_features;
        }
        if (f == kFp8 && (!model_shape || M <= 64)) {
          // FP8 inputs (the rows the FP8 GEMM path quantizes) against the product of their values.
          std::vector<float> xk(static_cast<size_t>(M) * K);
          for (int m = 0; m < M; ++m)
            std::copy_n(x.begin() + static_cast<size_t>(m) * xs, K, xk.begin() + static_cast<size_t>(m) * K);
          const testing::ByteRowsHost xq = testing::QuantizeRowsHost(xk, M, K, false);
          std::vector<float> ref8 = y0;
          NaiveLinear(xq.values.data(), K, values.data(), N, K, ref8.data(), M, 1.0f);
          Dev<uint8_t> dxq(xq.q);
          Dev<float> dxs(xq.scale), dy8(y0);
          GLA_CUDA_OK(cuda::LinearMediumMFp8Inputs({dxq.p, dxs.p, K}, cuda::Fp8Weight{dq8.p, ds8.p}, N, K, dy8.p, false,
                                                   N, M, 1.0f, nullptr));
          // Each mma's sum goes to fp32 registers: measured 2.7e-8 to 8.0e-8 on every shape here
          // (H100, 2026-12-06), the same bound as the bf16-input forms'.
          const double err8 = RelErr(dy8.Get(), ref8);
          std::printf("[ measure ] medium-M FP8 inputs N=%d K=%d M=%d: rel err %.2e\n", N, K, M, err8);
          EXPECT_LT(err8, 1e-5) << "fp8 inputs N=" << N << " K=" << K << " M=" << M;
        }
        if (model_shape) continue;  // bf16 output: the small shapes (the reference's time)
        std::vector<float> ref2(static_cast<size_t>(M) * N, 0.f);
        NaiveLinear(x.data(), xs, values.data(), N, K, ref2.data(), M);
        Dev<__nv_bfloat16> dz(static_cast<size_t>(M) * N);
        GLA_CUDA_OK(run(dx.p, dz.p, true, M, 0.0f));
        EXPECT_LT(RelErr(FromBf16(dz.Get()), ref2), 1e-2) << name << " N=" << N << " K=" << K << " M=" << M << " bf16";
      }
    }
  }
  Dev<__nv_bfloat16> dx(16 * 300), dW(64);
  Dev<uint8_t> dq(64);
  Dev<float> dy(2 * 300), dscale(2);
  const cuda::Fp8Weight fp8{dq.p, dscale.p};
  EXPECT_EQ(cuda::LinearMediumM(dx.p, 16, dW.p, 2, 16, dy.p, false, 2, 0, 0.f, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(cuda::LinearMediumM(dx.p, 16, dW.p, 2, 16, dy.p, false, 2, cuda::kMediumMMaxRows + 1, 0.f, nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(cuda::LinearMediumM(dx.p, 6, dW.p, 2, 6, dy.p, false, 2, 17, 0.f, nullptr), cudaErrorInvalidValue);  // K % 8
  EXPECT_EQ(cuda::LinearMediumM(dx.p, 16, dW.p, 2, 16, dy.p, false, 1, 17, 0.f, nullptr), cudaErrorInvalidValue);  // y_stride
  for (int split : {-1, 9})  // the cluster's size: 0 (chosen) to 8
    EXPECT_EQ(cuda::LinearMediumM(dx.p, 16, dW.p, 2, 16, dy.p, false, 2, 17, 0.f, nullptr, {split, false}),
              cudaErrorInvalidValue);
  {  // a trace buffer without room for every block: refused unlaunched (N = 2, K = 16, M = 17: one block)
    Dev<uint64_t> trace(cuda::kMediumMTraceFields);
    cuda::MediumMTuning traced;
    traced.trace = trace.p;
    EXPECT_EQ(cuda::LinearMediumM(dx.p, 16, dW.p, 2, 16, dy.p, false, 2, 17, 0.f, nullptr, traced),
              cudaErrorInvalidValue);
    traced.trace_blocks = 1;
    GLA_CUDA_OK(cuda::LinearMediumM(dx.p, 16, dW.p, 2, 16, dy.p, false, 2, 17, 0.f, nullptr, traced));
    EXPECT_NE(trace.Get()[0], 0u) << "the block stamped its start";
  }
  EXPECT_EQ(cuda::LinearMediumMFp8(dx.p, 8, fp8, 2, 8, dy.p, false, 2, 17, 0.f, nullptr), cudaErrorInvalidValue);  // K % 16
  {  // FP8 inputs: a row stride that is a multiple of 16 bytes and at least K, the split form's tunings only
    const cuda::Fp8Input xq{dq.p, dscale.p, 16};
    EXPECT_EQ(cuda::LinearMediumMFp8Inputs({dq.p, dscale.p, 8}, fp8, 2, 16, dy.p, false, 2, 1, 0.f, nullptr),
              cudaErrorInvalidValue);
    EXPECT_EQ(cuda::LinearMediumMFp8Inputs({dq.p, dscale.p, 24}, fp8, 2, 16, dy.p, false, 2, 1, 0.f, nullptr),
              cudaErrorInvalidValue);
    EXPECT_EQ(cuda::LinearMediumMFp8Inputs({dq.p, nullptr, 16}, fp8, 2, 16, dy.p, false, 2, 1, 0.f, nullptr),
              cudaErrorInvalidValue);
    EXPECT_EQ(cuda::LinearMediumMFp8Inputs(xq, fp8, 2, 16, dy.p, false, 2, 0, 0.f, nullptr), cudaErrorInvalidValue);
    EXPECT_EQ(cuda::LinearMediumMFp8Inputs(xq, fp8, 2, 16, dy.p, false, 2, 1, 0.f, nullptr, {0, true, nullptr}),
              cudaErrorInvalidValue);
  }
  EXPECT_EQ(cuda::LinearMediumMFp8(dx.p, 16, cuda::Fp8Weight{dq.p, nullptr}, 2, 16, dy.p, false, 2, 17, 0.f, nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(cuda::LinearMediumMInt8(dx.p, 16, cuda::Int8Weight{nullptr, dscale.p}, 2, 16, dy.p, false, 2, 17, 0.f,
                                    nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess) << "a refusal must not launch";
}

// The matrix of a larger INT8 step in bf16: bf16(scale[n] * q[n, k]) to the bit, rows of both model
// widths and an odd row count; bad shapes refused unlaunched.
TEST_P(Layers, DequantizeInt8ToBf16IsTheRoundedProduct) {
  GLA_REQUIRE_CUDA_DEVICE();
  const Widths w = GetParam();
  std::mt19937 rng(41);
  for (auto [N, K] : {std::pair{2 * w.I, w.D}, std::pair{w.D, w.I}, std::pair{37, 208}}) {
    const testing::ByteRowsHost h = testing::QuantizeRowsHost(Random(static_cast<size_t>(N) * K, rng), N, K, true);
    Dev<uint8_t> dq(h.q);
    Dev<float> dscale(h.scale);
    Dev<__nv_bfloat16> out(static_cast<size_t>(N) * K);
    GLA_CUDA_OK(cuda::DequantizeInt8ToBf16({reinterpret_cast<const int8_t*>(dq.p), dscale.p}, N, K, out.p, nullptr));
    const auto got = out.Get();
    const auto want = ToBf16(h.values);  // scale * code in fp32, rounded to nearest even
    EXPECT_EQ(0, std::memcmp(got.data(), want.data(), got.size() * sizeof(got[0]))) << "N=" << N << " K=" << K;
  }
  Dev<uint8_t> dq(64);
  Dev<float> dscale(2);
  Dev<__nv_bfloat16> out(64);
  const cuda::Int8Weight iw{reinterpret_cast<const int8_t*>(dq.p), dscale.p};
  EXPECT_EQ(cuda::DequantizeInt8ToBf16(iw, 2, 24, out.p, nullptr), cudaErrorInvalidValue) << "K % 16";
  EXPECT_EQ(cuda::DequantizeInt8ToBf16({iw.q, nullptr}, 2, 16, out.p, nullptr), cudaErrorInvalidValue) << "no scales";
  EXPECT_EQ(cudaGetLastError(), cudaSuccess) << "a refusal must not launch";
}

// The one-row projection that makes its input itself equals, to the bit, the two kernels it
// replaces in a batch-1 decode step: RmsNorm (of a chosen row) then the CUDA-core projection, and
// SwiGlu then the projection; bf16, FP8 and INT8 weights, both output types, the residual add; bad
// shapes refused unlaunched.
TEST_P(Layers, LinearOneRowStagedEqualsTheKernelsItReplaces) {
  GLA_REQUIRE_CUDA_DEVICE();
  const Widths w = GetParam();
  std::mt19937 rng(19);
  const int rows = 5;
  const auto x = Random(rows * w.D, rng, -3, 3), g = Random(w.D, rng, 0.5f, 1.5f);
  const auto gu = RoundBf16(Random(2 * w.I, rng, -5, 5));
  Dev<float> dx(x), dg(g);
  Dev<__nv_bfloat16> dgu(ToBf16(gu));
  const std::vector<int32_t> row = {3};
  Dev<int32_t> drow(row);
  for (auto [N, K, swiglu] : {std::tuple{2 * w.I, w.D, false}, std::tuple{w.D, w.I, true}, std::tuple{1000, w.D, false}}) {
    const auto W = RoundBf16(Random(static_cast<size_t>(N) * K, rng, -0.05f, 0.05f));
    const testing::ByteRowsHost W8 = testing::QuantizeRowsHost(W, N, K, false), Wi8 = testing::QuantizeRowsHost(W, N, K, true);
    Dev<__nv_bfloat16> dW(ToBf16(W)), staged(K);
    Dev<uint8_t> dq(W8.q), dqi(Wi8.q);
    Dev<float> dscale(W8.scale), dscalei(Wi8.scale);
    const cuda::Fp8Weight fw{dq.p, dscale.p};
    const cuda::Int8Weight iw{reinterpret_cast<const int8_t*>(dqi.p), dscalei.p};
    cuda::OneRowInput in;
    if (swiglu) {
      in.kind = cuda::OneRowInput::kSwiGlu;
      in.x = dgu.p;
      GLA_CUDA_OK(cuda::SwiGlu(dgu.p, 2 * K, staged.p, K, 1, K, nullptr));
    } else {
      in.x = dx.p;
      in.x_stride = w.D;
      in.row_id = drow.p;
      in.norm_w = dg.p;
      in.eps = 1e-6f;
      GLA_CUDA_OK(cuda::RmsNorm(dx.p, w.D, drow.p, dg.p, staged.p, K, 1, K, 1e-6f, nullptr));
    }
    enum Weights { kBf16, kFp8, kInt8 };
    for (auto [out_bf16, weights] : {std::pair{false, kBf16}, std::pair{true, kBf16}, std::pair{false, kFp8},
                                     std::pair{true, kFp8}, std::pair{false, kInt8}, std::pair{true, kInt8}}) {
      const float beta = out_bf16 ? 0.f : 1.f;
      const auto y0 = Random(N, rng);
      Dev<float> want32(y0), got32(y0);
      Dev<__nv_bfloat16> want16(N), got16(N);
      void* want = out_bf16 ? static_cast<void*>(want16.p) : want32.p;
      void* got = out_bf16 ? static_cast<void*>(got16.p) : got32.p;
      if (weights == kFp8) {
        GLA_CUDA_OK(cuda::LinearSmallMFp8CudaCores(staged.p, K, fw, N, K, want, out_bf16, N, 1, beta, nullptr));
        GLA_CUDA_OK(cuda::LinearOneRowStagedFp8(in, fw, N, K, got, out_bf16, beta, nullptr));
      } else if (weights == kInt8) {
        GLA_CUDA_OK(cuda::LinearSmallMInt8CudaCores(staged.p, K, iw, N, K, want, out_bf16, N, 1, beta, nullptr));
        GLA_CUDA_OK(cuda::LinearOneRowStagedInt8(in, iw, N, K, got, out_bf16, beta, nullptr));
      } else {
        GLA_CUDA_OK(cuda::LinearSmallMCudaCores(staged.p, K, dW.p, N, K, want, out_bf16, N, 1, beta, nullptr));
        GLA_CUDA_OK(cuda::LinearOneRowStaged(in, dW.p, N, K, got, out_bf16, beta, nullptr));
      }
      const std::string what = std::string(weights == kFp8 ? "fp8" : weights == kInt8 ? "int8" : "bf16") +
                               " weights, N=" + std::to_string(N) +
                               " K=" + std::to_string(K) + (swiglu ? " swiglu" : " norm");
      if (out_bf16) {
        const auto a = want16.Get(), b = got16.Get();
        EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(a[0]))) << what << ", bf16 out";
      } else {
        EXPECT_EQ(want32.Get(), got32.Get()) << what;
      }
    }
  }
  Dev<__nv_bfloat16> dW(16 * 8);
  Dev<float> dy(16);
  cuda::OneRowInput in;
  in.x = dx.p;
  EXPECT_EQ(cuda::LinearOneRowStaged(in, dW.p, 16, 8, dy.p, false, 0.f, nullptr), cudaErrorInvalidValue) << "no norm";
  in.norm_w = dg.p;
  EXPECT_EQ(cuda::LinearOneRowStaged(in, dW.p, 16, 6, dy.p, false, 0.f, nullptr), cudaErrorInvalidValue) << "K % 8";
  EXPECT_EQ(cuda::LinearOneRowStaged(in, dW.p, 16, cuda::kOneRowMaxK + 8, dy.p, false, 0.f, nullptr),
            cudaErrorInvalidValue)
      << "K too large";
  Dev<uint8_t> dq(16 * 24);
  EXPECT_EQ(cuda::LinearOneRowStagedFp8(in, {dq.p, dg.p}, 16, 24, dy.p, false, 0.f, nullptr), cudaErrorInvalidValue)
      << "fp8: K % 16";
  EXPECT_EQ(cuda::LinearOneRowStagedFp8(in, {dq.p, nullptr}, 16, 16, dy.p, false, 0.f, nullptr), cudaErrorInvalidValue)
      << "fp8: no scales";
  EXPECT_EQ(cuda::LinearOneRowStagedInt8(in, {reinterpret_cast<const int8_t*>(dq.p), dg.p}, 16, 24, dy.p, false, 0.f,
                                         nullptr),
            cudaErrorInvalidValue)
      << "int8: K % 16";
  in.kind = cuda::OneRowInput::kGatedHeadNorm;  // QuantizeMadeRowsFp8's alone
  EXPECT_EQ(cuda::LinearOneRowStaged(in, dW.p, 16, 8, dy.p, false, 0.f, nullptr), cudaErrorInvalidValue)
      << "a gated head norm row";
  EXPECT_EQ(cudaGetLastError(), cudaSuccess) << "a refusal must not launch";
}

INSTANTIATE_TEST_SUITE_P(ModelWidths, Layers,
                         ::testing::Values(Widths{1024, 4, 256, 2816, 512},    // gla-340M
                                           Widths{2048, 4, 512, 5632, 1024}),  // gla-1.3B
                         [](const auto& info) { return info.param.D == 1024 ? "gla340M" : "gla1_3B"; });

// Short conv over a packed step: three sequences (T = 1, 5, 40) continuing from random tails in
// their slots, against the CPU reference run per sequence; the tails must roll forward the same.
TEST(ShortConv, PackedSequencesWithTailsInSlots) {
  GLA_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(17);
  const int C = 96, K = 4, x_stride = 100, y_stride = 96;
  const std::vector<int> T = {1, 5, 40};
  const std::vector<int32_t> slots = {2, 0, 3};
  const int64_t slot_stride = 1000, tail_offset = 123;  // tails sit inside a larger state
  std::vector<int32_t> cu = {0};
  for (int t : T) cu.push_back(cu.back() + t);
  const int rows = cu.back();
  const auto x = Random(rows * x_stride, rng), w = Random(C * K, rng);
  auto states = Random(4 * slot_stride, rng);
  std::vector<float> ref_y(rows * y_stride, 0.f), ref_states = states;
  for (size_t s = 0; s < T.size(); ++s)
    cpu::ShortConvSilu(x.data() + cu[s] * x_stride, x_stride, T[s], C, w.data(), K,
                       ref_states.data() + slots[s] * slot_stride + tail_offset, ref_y.data() + cu[s] * y_stride,
                       y_stride);
  Dev<float> dx(x), dw(w), dst(states), dy(rows * y_stride);
  Dev<int32_t> dcu(cu), dslots(slots);
  GLA_CUDA_OK(cuda::ShortConvSilu(dx.p, x_stride, dcu.p, T.size(), rows, C, dw.p, K,
                                  CudaStateSlots{dst.p, slot_stride, false}.At(tail_offset), dslots.p, dy.p, y_stride,
                                  nullptr));
  EXPECT_LT(RelErr(dy.Get(), ref_y), 1e-5);
  EXPECT_LT(RelErr(dst.Get(), ref_states), 1e-6);
}

}  // namespace
}  // namespace gla
