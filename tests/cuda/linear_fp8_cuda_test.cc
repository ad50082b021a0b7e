// FP8 weights on the GPU beyond the decode-sized kernels (issue 23): the inputs' per-row FP8
// quantizer against the CPU quantizer (to the bit), and the FP8 tensor-core GEMM with both scale
// vectors against the double product of the dequantized operands. (The decode-sized FP8 kernels are
// tested beside their bf16 forms in layers_cuda_test.cc.)
#include <cuda_bf16.h>
#include <gtest/gtest.h>

#include <cstring>
#include <tuple>
#include <random>
#include <vector>

#include "kernels/activations.h"
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

// The projection shapes of gla-340M and gla-1.3B ([N, K]: in-proj, o-proj, gate|up, down) and odd
// ones (K a multiple of 16 only; N = 36: fp32 rows a multiple of 16 bytes, bf16 rows not, which the
// GEMM must refuse).
const std::vector<std::pair<int, int>> kShapes = {{3080, 1024}, {1024, 1024}, {5632, 1024}, {1024, 2816},
                                                  {6160, 2048}, {2048, 2048}, {11264, 2048}, {2048, 5632},
                                                  {1000, 64},   {36, 208}};

TEST(QuantizeRowsFp8, EqualsTheCpuQuantizerToTheBit) {
  GLA_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(23);
  for (auto [M, K] : {std::pair{1, 64}, std::pair{17, 1024}, std::pair{130, 2816}, std::pair{5, 8}}) {
    const int xs = K + 24, qs = K + 16 - K % 16 + 16;
    auto x = RoundBf16(Random(static_cast<size_t>(M) * xs, rng, -4.f, 4.f));
    for (int k = 0; k < K; ++k) x[k] = 0.f;  // row 0 all zeros: scale 0, codes 0
    if (M > 2)  // row 2 tiny: its scale is an fp32 subnormal (no flush to zero on either side)
      for (int k = 0; k < K; ++k) x[2 * xs + k] = RoundBf16({x[2 * xs + k] * 1e-36f})[0];
    Dev<__nv_bfloat16> dx(ToBf16(x));
    Dev<uint8_t> dq(static_cast<size_t>(M) * qs);
    Dev<float> dscale(M);
    GLA_CUDA_OK(cuda::QuantizeRowsFp8(dx.p, xs, M, K, dq.p, qs, dscale.p, nullptr));
    const auto q = dq.Get();
    const auto scale = dscale.Get();
    for (int m = 0; m < M; ++m) {
      std::vector<uint8_t> want_q(K);
      float want_scale = 0.f;
      ASSERT_TRUE(QuantizeFp8E4M3PerRow(x.data() + static_cast<size_t>(m) * xs, 1, K, want_q.data(), &want_scale));
      ASSERT_EQ(0, std::memcmp(&want_scale, &scale[m], sizeof(float))) << "M=" << M << " K=" << K << " row " << m;
      ASSERT_EQ(0, std::memcmp(want_q.data(), q.data() + static_cast<size_t>(m) * qs, K)) << "M=" << M << " K=" << K
                                                                                          << " row " << m;
    }
  }
  Dev<__nv_bfloat16> dx(64);
  Dev<uint8_t> dq(64);
  Dev<float> dscale(4);
  EXPECT_EQ(cuda::QuantizeRowsFp8(dx.p, 16, 2, 12, dq.p, 16, dscale.p, nullptr), cudaErrorInvalidValue) << "K % 8";
  EXPECT_EQ(cuda::QuantizeRowsFp8(dx.p, 8, 2, 16, dq.p, 16, dscale.p, nullptr), cudaErrorInvalidValue) << "stride < K";
  EXPECT_EQ(cuda::QuantizeRowsFp8(dx.p, 16, 2, 16, dq.p, 16, nullptr, nullptr), cudaErrorInvalidValue) << "no scales";
  EXPECT_EQ(cuda::QuantizeRowsFp8(dx.p + 1, 16, 2, 16, dq.p, 16, dscale.p, nullptr), cudaErrorInvalidValue)
      << "misaligned";
  EXPECT_EQ(cudaGetLastError(), cudaSuccess) << "a refusal must not launch";
}

// The rows made in the quantizing kernel (RMSNorm of fp32 rows, SwiGLU of bf16 [gate | up] rows, the
// gated head norm) against the two kernels it replaces (cuda::RmsNorm, cuda::SwiGlu or
// cuda::RmsNormSwishGate, then QuantizeRowsFp8): the same
// codes and scales to the bit, at the model widths and small odd ones; bad inputs refused unlaunched.
// QuantizeMadeRowsFp8(in) against QuantizeRowsFp8 of `made` (the bf16 rows the separate kernel
// made from the same input): codes and scales to the bit.
void ExpectMadeRowsQuantizeAs(const __nv_bfloat16* made, const cuda::OneRowInput& in, int M, int K, const char* what) {
  const int qs = K + 16 - K % 16 + 16;
  Dev<uint8_t> want_q(static_cast<size_t>(M) * qs), got_q(static_cast<size_t>(M) * qs);
  Dev<float> want_s(M), got_s(M);
  GLA_CUDA_OK(cuda::QuantizeRowsFp8(made, K, M, K, want_q.p, qs, want_s.p, nullptr));
  GLA_CUDA_OK(cuda::QuantizeMadeRowsFp8(in, M, K, got_q.p, qs, got_s.p, nullptr));
  const auto wq = want_q.Get(), gq = got_q.Get();
  const auto ws = want_s.Get(), gs = got_s.Get();
  for (int m = 0; m < M; ++m) {
    ASSERT_EQ(0, std::memcmp(&ws[m], &gs[m], sizeof(float))) << what << " M=" << M << " K=" << K << " row " << m;
    ASSERT_EQ(0, std::memcmp(wq.data() + static_cast<size_t>(m) * qs, gq.data() + static_cast<size_t>(m) * qs, K))
        << what << " M=" << M << " K=" << K << " row " << m;
  }
}

TEST(QuantizeMadeRowsFp8, EqualsTheNormOrSwiGluThenQuantizeRowsFp8ToTheBit) {
  GLA_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(29);
  for (auto [M, K] : {std::pair{1, 64}, std::pair{33, 1024}, std::pair{130, 2816}, std::pair{7, 8},
                      std::pair{40, 5632}}) {
    for (bool swiglu : {false, true}) {
      const int xs = swiglu ? 2 * K + 8 : K + 4;  // in floats (RMSNorm) or bf16 values (SwiGLU)
      cuda::OneRowInput in;
      auto x = Random(static_cast<size_t>(M) * xs, rng, -3.f, 3.f);
      if (!swiglu)
        for (int k = 0; k < K; ++k) x[k] = 0.f;  // row 0 all zeros: its norm is 0, scale 0, codes 0
      Dev<float> dxf(x);
      Dev<__nv_bfloat16> dxb(ToBf16(RoundBf16(x)));
      Dev<float> dw(Random(static_cast<size_t>(K), rng, 0.5f, 1.5f));
      Dev<__nv_bfloat16> made(static_cast<size_t>(M) * K);  // the bf16 rows of the two-kernel path
      if (swiglu) {
        in.kind = cuda::OneRowInput::kSwiGlu;
        in.x = dxb.p;
        GLA_CUDA_OK(cuda::SwiGlu(dxb.p, xs, made.p, K, M, K, nullptr));
      } else {
        in.kind = cuda::OneRowInput::kRmsNorm;
        in.x = dxf.p;
        in.norm_w = dw.p;
        in.eps = 1e-6f;
        GLA_CUDA_OK(cuda::RmsNorm(dxf.p, xs, nullptr, dw.p, made.p, K, M, K, 1e-6f, nullptr));
      }
      in.x_stride = xs;
      ExpectMadeRowsQuantizeAs(made.p, in, M, K, swiglu ? "swiglu" : "rmsnorm");
    }
  }
  // The gated head norm (o_proj's input): heads of 64, 128 and 256 values, with and without the
  // output gate, against cuda::RmsNormSwishGate then QuantizeRowsFp8.
  for (auto [M, heads, dv] : {std::tuple{1, 4, 64}, std::tuple{33, 8, 128}, std::tuple{70, 4, 256}}) {
    const int K = heads * dv, xs = K + 4, gs = 3 * K, qs = K + 16;
    for (bool gated : {false, true}) {
      auto o = Random(static_cast<size_t>(M) * xs, rng, -2.f, 2.f);
      for (int k = 0; k < dv; ++k) o[k] = 0.f;  // row 0's first head all zeros
      Dev<float> d_o(o), dgate(Random(static_cast<size_t>(M) * gs, rng, -4.f, 4.f));
      Dev<float> dw(Random(static_cast<size_t>(dv), rng, 0.5f, 1.5f));
      Dev<__nv_bfloat16> made(static_cast<size_t>(M) * K);
      const float* gate = gated ? dgate.p + 5 : nullptr;  // the gate's columns start inside its rows
      GLA_CUDA_OK(cuda::RmsNormSwishGate(d_o.p, xs, gate, gs, dw.p, made.p, K, M, heads, dv, 1e-6f, nullptr));
      cuda::OneRowInput in;
      in.kind = cuda::OneRowInput::kGatedHeadNorm;
      in.x = d_o.p;
      in.x_stride = xs;
      in.norm_w = dw.p;
      in.eps = 1e-6f;
      in.heads = heads;
      in.head_dim = dv;
      in.gate = gate;
      in.gate_stride = gs;
      ExpectMadeRowsQuantizeAs(made.p, in, M, K, gated ? "gated head norm" : "head norm");
      in.heads = heads + 1;  // heads x head_dim must be K
      Dev<uint8_t> q(static_cast<size_t>(M) * qs);
      Dev<float> scale(M);
      EXPECT_EQ(cuda::QuantizeMadeRowsFp8(in, M, K, q.p, qs, scale.p, nullptr), cudaErrorInvalidValue);
    }
  }

  Dev<float> dx(64), dw(16);
  Dev<uint8_t> dq(64);
  Dev<float> dscale(4);
  cuda::OneRowInput in;
  in.x = dx.p;
  in.x_stride = 16;
  in.norm_w = dw.p;
  EXPECT_EQ(cuda::QuantizeMadeRowsFp8(in, 2, 12, dq.p, 16, dscale.p, nullptr), cudaErrorInvalidValue) << "K % 8";
  EXPECT_EQ(cuda::QuantizeMadeRowsFp8(in, 2, 16, dq.p, 16, nullptr, nullptr), cudaErrorInvalidValue) << "no scales";
  in.x_stride = 8;
  EXPECT_EQ(cuda::QuantizeMadeRowsFp8(in, 2, 16, dq.p, 16, dscale.p, nullptr), cudaErrorInvalidValue) << "stride < K";
  in.x_stride = 16;
  in.kind = cuda::OneRowInput::kSwiGlu;
  EXPECT_EQ(cuda::QuantizeMadeRowsFp8(in, 2, 16, dq.p, 16, dscale.p, nullptr), cudaErrorInvalidValue)
      << "SwiGLU rows need 2K values";
  in.kind = cuda::OneRowInput::kRmsNorm;
  in.norm_w = nullptr;
  EXPECT_EQ(cuda::QuantizeMadeRowsFp8(in, 2, 16, dq.p, 16, dscale.p, nullptr), cudaErrorInvalidValue) << "no norm weights";
  in.norm_w = dw.p;
  const int32_t* row0 = reinterpret_cast<const int32_t*>(dw.p);
  in.row_id = row0;
  EXPECT_EQ(cuda::QuantizeMadeRowsFp8(in, 2, 16, dq.p, 16, dscale.p, nullptr), cudaErrorInvalidValue) << "row ids";
  EXPECT_EQ(cudaGetLastError(), cudaSuccess) << "a refusal must not launch";
}

// y = (x_scale w_scale^T) o (xq wq^T) + beta y against the same product in double of the
// dequantized operands (the GPU's own quantized inputs, read back): what is left is the tensor
// cores' accumulation. Hopper's FP8 MMA accumulates in reduced precision between the promotions
// cuBLASLt does in its full-precision mode, hence 2e-4 and not fp32's 1e-6 (measured on an H100,
// 2026-12-06: up to 1.05e-4 at K = 2048 and 2816).
TEST(LinearFp8Gemm, EqualsTheDoubleProductOfTheDequantizedOperands) {
  GLA_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(29);
  Dev<char> workspace(32u << 20);
  cuda::LinearFp8Gemm gemm;
  const cublasStatus_t init = gemm.Init(workspace.p, 32u << 20);
  ASSERT_EQ(init, CUBLAS_STATUS_SUCCESS) << "cuBLASLt " << cublasLtGetVersion();
  for (auto [N, K] : kShapes) {
    const testing::ByteRowsHost W =
        testing::QuantizeRowsHost(Random(static_cast<size_t>(N) * K, rng, -0.05f, 0.05f), N, K, /*int8=*/false);
    const std::vector<float>& wdeq = W.values;
    Dev<uint8_t> dwq(W.q);
    Dev<float> dws(W.scale);
    const cuda::Fp8Weight fw{dwq.p, dws.p};
    // Large matrices at one row count only: the double reference's time on the GPU machine's CPU.
    for (int M : static_cast<int64_t>(N) * K >= (8 << 20) ? std::vector<int>{17} : std::vector<int>{17, 48, 100}) {
      const int xs = K + 16, qs = K;
      const auto x = RoundBf16(Random(static_cast<size_t>(M) * xs, rng, -2.f, 2.f));
      Dev<__nv_bfloat16> dx(ToBf16(x));
      Dev<uint8_t> dxq(static_cast<size_t>(M) * qs);
      Dev<float> dxs(M);
      GLA_CUDA_OK(cuda::QuantizeRowsFp8(dx.p, xs, M, K, dxq.p, qs, dxs.p, nullptr));
      const auto xq = dxq.Get();
      const auto xscale = dxs.Get();
      std::vector<float> xdeq(static_cast<size_t>(M) * K);
      for (int m = 0; m < M; ++m)
        for (int k = 0; k < K; ++k) xdeq[m * K + k] = xscale[m] * Float8E4M3ToFloat(xq[m * qs + k]);
      const cuda::Fp8Input in{dxq.p, dxs.p, qs};
      // fp32 output with the residual added (a row stride wider than N), then bf16 output.
      const int ys = (N + 4 + 7) / 8 * 8;
      const auto y0 = Random(static_cast<size_t>(M) * ys, rng);
      std::vector<float> product(static_cast<size_t>(M) * N, 0.f), ref(product.size());
      NaiveLinear(xdeq.data(), K, wdeq.data(), N, K, product.data(), M);
      for (int m = 0; m < M; ++m)
        for (int n = 0; n < N; ++n) ref[m * N + n] = product[m * N + n] + y0[m * ys + n];
      Dev<float> dy(y0);
      ASSERT_EQ(gemm.Run(in, fw, N, K, dy.p, false, ys, M, 1.0f, nullptr), CUBLAS_STATUS_SUCCESS)
          << "N=" << N << " K=" << K << " M=" << M;
      const auto y = dy.Get();
      std::vector<float> got(static_cast<size_t>(M) * N);
      for (int m = 0; m < M; ++m)
        for (int n = 0; n < N; ++n) got[m * N + n] = y[m * ys + n];
      const double err = RelErr(got, ref);
      std::printf("[ measure ] FP8 GEMM N=%d K=%d M=%d: rel err vs double %.3e\n", N, K, M, err);
      EXPECT_LT(err, 2e-4) << "N=" << N << " K=" << K << " M=" << M;
      const int zs = (N + 7) / 8 * 8;
      Dev<__nv_bfloat16> dz(static_cast<size_t>(M) * zs);
      if (N % 8 != 0) {  // bf16 rows of N values are not 16 bytes each: refused, nothing run
        EXPECT_EQ(gemm.Run(in, fw, N, K, dz.p, true, zs, M, 0.0f, nullptr), CUBLAS_STATUS_INVALID_VALUE) << "N=" << N;
        continue;
      }
      ASSERT_EQ(gemm.Run(in, fw, N, K, dz.p, true, zs, M, 0.0f, nullptr), CUBLAS_STATUS_SUCCESS);
      const auto z = FromBf16(dz.Get());
      for (int m = 0; m < M; ++m)
        for (int n = 0; n < N; ++n) got[m * N + n] = z[m * zs + n];
      EXPECT_LT(RelErr(got, product), 1e-2) << "N=" << N << " K=" << K << " M=" << M << " bf16";
    }
  }
  // A plan per shape, made once: running a shape again adds none.
  const int plans = gemm.plans();
  {
    const auto [N, K] = kShapes.back();
    Dev<uint8_t> wq(static_cast<size_t>(N) * K), xq(17 * K);
    const int ys = (N + 4 + 7) / 8 * 8;
    Dev<float> ws(N), xsc(17), y(17 * ys);
    ASSERT_EQ(gemm.Run({xq.p, xsc.p, K}, {wq.p, ws.p}, N, K, y.p, false, ys, 17, 1.0f, nullptr), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(gemm.plans(), plans);
    // Prepare makes the plan a Run of that shape then finds (what a graph capture relies on).
    ASSERT_EQ(gemm.Prepare({xq.p, xsc.p, K}, {wq.p, ws.p}, N, K, y.p, false, ys, 16), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(gemm.plans(), plans + 1);
    ASSERT_EQ(gemm.Run({xq.p, xsc.p, K}, {wq.p, ws.p}, N, K, y.p, false, ys, 16, 1.0f, nullptr), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(gemm.plans(), plans + 1);
    EXPECT_EQ(gemm.Run({xq.p, xsc.p, K}, {wq.p, ws.p}, N, 24, y.p, false, ys, 17, 1.0f, nullptr),
              CUBLAS_STATUS_INVALID_VALUE)
        << "K % 16";
    EXPECT_EQ(gemm.Run({xq.p, xsc.p, K}, {wq.p, ws.p}, N + 1, K, y.p, false, ys, 17, 1.0f, nullptr),
              CUBLAS_STATUS_INVALID_VALUE)
        << "N % 4 (cuBLASLt has no FP8 algorithm for fp32 rows of 37 values)";
    EXPECT_EQ(gemm.Run({xq.p, nullptr, K}, {wq.p, ws.p}, N, K, y.p, false, ys, 17, 1.0f, nullptr),
              CUBLAS_STATUS_INVALID_VALUE)
        << "no input scales";
    EXPECT_EQ(gemm.Run({xq.p, xsc.p, K}, {wq.p, ws.p}, N, K, y.p, false, N + 2, 17, 1.0f, nullptr),
              CUBLAS_STATUS_INVALID_VALUE)
        << "output rows not 16-byte aligned";
    EXPECT_EQ(gemm.plans(), plans + 1) << "a refusal makes no plan";
  }
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

}  // namespace
}  // namespace gla
