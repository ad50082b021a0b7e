// The row kernels' two forms (kernels/row_form.h: a block a row, a warp a row) give the same bits:
// RMSNorm (bf16 and fp32 out, gathered rows), the gated head norm (with and without the gate), the
// FP8 row quantizer and the made-row quantizer (RMSNorm, SwiGLU, gated head norm). Widths below a
// warp, between warps and above a block, the models' widths, and the largest made row; row counts
// that leave a block's last warps without a row. The block form is the one the CPU references
// check (layers_cuda_test.cc, linear_fp8_cuda_test.cc); equal bits carry that to the warp form.
#include <cuda_bf16.h>
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/linear.h"
#include "kernels/linear_fp8.h"
#include "kernels/norm.h"
#include "kernels/row_form.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/cuda/host_vectors.h"

namespace gla {
namespace {

using cuda::RowForm;
using testing::Dev;
using testing::Random;
using testing::RoundBf16;
using testing::ToBf16;

template <typename T>
void ExpectSameBytes(const std::vector<T>& block, const std::vector<T>& warp, const std::string& what) {
  ASSERT_EQ(block.size(), warp.size());
  for (size_t i = 0; i < block.size(); ++i)
    ASSERT_EQ(0, std::memcmp(&block[i], &warp[i], sizeof(T))) << what << ": first difference at " << i;
}

// Rows of random values with row 0 all zeros (its norm is 0) and row 1 large (squares near 1e8).
std::vector<float> TestRows(int rows, int stride, std::mt19937& rng) {
  auto x = Random(static_cast<size_t>(rows) * stride, rng, -3.f, 3.f);
  for (int k = 0; k < stride; ++k) x[k] = 0.f;
  if (rows > 1)
    for (int k = 0; k < stride; ++k) x[stride + k] *= 3000.f;
  return x;
}

template <typename Out>
void CheckRmsNorm(int rows, int n, std::mt19937& rng) {
  const int xs = n + 3;
  Dev<float> dx(TestRows(rows, xs, rng)), dw(Random(static_cast<size_t>(n), rng, 0.5f, 1.5f));
  const std::vector<int32_t> ids = {rows - 1, 0, rows / 2, rows / 2};
  Dev<int32_t> did(ids);
  for (bool gathered : {false, true}) {
    const int out_rows = gathered ? static_cast<int>(ids.size()) : rows;
    Dev<Out> block(static_cast<size_t>(out_rows) * n), warp(static_cast<size_t>(out_rows) * n);
    const int32_t* row_ids = gathered ? did.p : nullptr;
    GLA_CUDA_OK(cuda::RmsNorm(dx.p, xs, row_ids, dw.p, block.p, n, out_rows, n, 1e-6f, nullptr, RowForm::kBlockPerRow));
    GLA_CUDA_OK(cuda::RmsNorm(dx.p, xs, row_ids, dw.p, warp.p, n, out_rows, n, 1e-6f, nullptr, RowForm::kWarpPerRow));
    ExpectSameBytes(block.Get(), warp.Get(),
                    "RmsNorm rows=" + std::to_string(rows) + " n=" + std::to_string(n) + (gathered ? " gathered" : ""));
  }
}

TEST(RowForms, RmsNormWarpPerRowEqualsBlockPerRowToTheBit) {
  GLA_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(41);
  for (auto [rows, n] : {std::pair{1, 8}, std::pair{3, 100}, std::pair{37, 1024}, std::pair{70, 2048},
                         std::pair{9, 2816}, std::pair{5, 5000}}) {
    CheckRmsNorm<__nv_bfloat16>(rows, n, rng);
    CheckRmsNorm<float>(rows, n, rng);
  }
}

template <typename Out>
void CheckGatedHeadNorm(int rows, int heads, int dv, bool gated, std::mt19937& rng) {
  const int K = heads * dv, xs = K + 4, gs = 2 * K + 1;
  Dev<float> d_o(TestRows(rows, xs, rng)), dgate(Random(static_cast<size_t>(rows) * gs, rng, -4.f, 4.f));
  Dev<float> dw(Random(static_cast<size_t>(dv), rng, 0.5f, 1.5f));
  const float* gate = gated ? dgate.p + 3 : nullptr;
  Dev<Out> block(static_cast<size_t>(rows) * K), warp(static_cast<size_t>(rows) * K);
  GLA_CUDA_OK(cuda::RmsNormSwishGate(d_o.p, xs, gate, gs, dw.p, block.p, K, rows, heads, dv, 1e-6f, nullptr,
                                     RowForm::kBlockPerRow));
  GLA_CUDA_OK(cuda::RmsNormSwishGate(d_o.p, xs, gate, gs, dw.p, warp.p, K, rows, heads, dv, 1e-6f, nullptr,
                                     RowForm::kWarpPerRow));
  ExpectSameBytes(block.Get(), warp.Get(),
                  "RmsNormSwishGate rows=" + std::to_string(rows) + " heads=" + std::to_string(heads) +
                      " dv=" + std::to_string(dv) + (gated ? " gated" : ""));
}

TEST(RowForms, GatedHeadNormWarpPerRowEqualsBlockPerRowToTheBit) {
  GLA_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(42);
  for (auto [rows, heads, dv] : {std::tuple{1, 4, 64}, std::tuple{33, 8, 128}, std::tuple{10, 4, 256},
                                 std::tuple{7, 3, 100}, std::tuple{5, 4, 512}, std::tuple{3, 2, 24}}) {
    for (bool gated : {false, true}) {
      CheckGatedHeadNorm<__nv_bfloat16>(rows, heads, dv, gated, rng);
      CheckGatedHeadNorm<float>(rows, heads, dv, gated, rng);
    }
  }
}

// Codes and scales of both forms, to the bit.
void ExpectSameQuantized(const Dev<uint8_t>& qb, const Dev<float>& sb, const Dev<uint8_t>& qw, const Dev<float>& sw,
                         const std::string& what) {
  ExpectSameBytes(sb.Get(), sw.Get(), what + " scales");
  ExpectSameBytes(qb.Get(), qw.Get(), what + " codes");
}

TEST(RowForms, QuantizeRowsFp8WarpPerRowEqualsBlockPerRowToTheBit) {
  GLA_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(43);
  for (auto [M, K] : {std::pair{1, 8}, std::pair{9, 64}, std::pair{70, 1024}, std::pair{17, 2048},
                      std::pair{5, 5632}}) {
    const int xs = K + 8, qs = K + 16;
    Dev<__nv_bfloat16> dx(ToBf16(TestRows(M, xs, rng)));
    Dev<uint8_t> qb(static_cast<size_t>(M) * qs), qw(static_cast<size_t>(M) * qs);
    Dev<float> sb(M), sw(M);
    GLA_CUDA_OK(cuda::QuantizeRowsFp8(dx.p, xs, M, K, qb.p, qs, sb.p, nullptr, RowForm::kBlockPerRow));
    GLA_CUDA_OK(cuda::QuantizeRowsFp8(dx.p, xs, M, K, qw.p, qs, sw.p, nullptr, RowForm::kWarpPerRow));
    ExpectSameQuantized(qb, sb, qw, sw, "QuantizeRowsFp8 M=" + std::to_string(M) + " K=" + std::to_string(K));
  }
}

void CheckMadeRows(const cuda::OneRowInput& in, int M, int K, const std::string& what) {
  const int qs = K + 16;
  Dev<uint8_t> qb(static_cast<size_t>(M) * qs), qw(static_cast<size_t>(M) * qs);
  Dev<float> sb(M), sw(M);
  GLA_CUDA_OK(cuda::QuantizeMadeRowsFp8(in, M, K, qb.p, qs, sb.p, nullptr, RowForm::kBlockPerRow));
  GLA_CUDA_OK(cuda::QuantizeMadeRowsFp8(in, M, K, qw.p, qs, sw.p, nullptr, RowForm::kWarpPerRow));
  ExpectSameQuantized(qb, sb, qw, sw, what + " M=" + std::to_string(M) + " K=" + std::to_string(K));
}

TEST(RowForms, QuantizeMadeRowsFp8WarpPerRowEqualsBlockPerRowToTheBit) {
  GLA_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(44);
  // K = 16384 (kOneRowMaxK): one warp a block in the warp form; 5632: four; 1024: eight.
  for (auto [M, K] : {std::pair{1, 64}, std::pair{33, 1024}, std::pair{19, 2816}, std::pair{7, 8},
                      std::pair{12, 5632}, std::pair{3, 16384}}) {
    Dev<float> dxf(TestRows(M, K + 4, rng)), dw(Random(static_cast<size_t>(K), rng, 0.5f, 1.5f));
    Dev<__nv_bfloat16> dxb(ToBf16(RoundBf16(Random(static_cast<size_t>(M) * (2 * K + 8), rng, -6.f, 6.f))));
    cuda::OneRowInput in;
    in.kind = cuda::OneRowInput::kRmsNorm;
    in.x = dxf.p;
    in.x_stride = K + 4;
    in.norm_w = dw.p;
    in.eps = 1e-6f;
    CheckMadeRows(in, M, K, "rmsnorm");
    in = {};
    in.kind = cuda::OneRowInput::kSwiGlu;
    in.x = dxb.p;
    in.x_stride = 2 * K + 8;
    CheckMadeRows(in, M, K, "swiglu");
  }
  for (auto [M, heads, dv] : {std::tuple{1, 4, 64}, std::tuple{33, 8, 128}, std::tuple{20, 4, 256},
                              std::tuple{9, 4, 512}}) {
    const int K = heads * dv, xs = K + 4, gs = 3 * K;
    Dev<float> d_o(TestRows(M, xs, rng)), dgate(Random(static_cast<size_t>(M) * gs, rng, -4.f, 4.f));
    Dev<float> dw(Random(static_cast<size_t>(dv), rng, 0.5f, 1.5f));
    for (bool gated : {false, true}) {
      cuda::OneRowInput in;
      in.kind = cuda::OneRowInput::kGatedHeadNorm;
      in.x = d_o.p;
      in.x_stride = xs;
      in.norm_w = dw.p;
      in.eps = 1e-6f;
      in.heads = heads;
      in.head_dim = dv;
      in.gate = gated ? dgate.p + 5 : nullptr;
      in.gate_stride = gs;
      CheckMadeRows(in, M, K, gated ? "gated head norm" : "head norm");
    }
  }
}

}  // namespace
}  // namespace gla
