// cuda::TunedBf16Gemm (kernels/linear_bf16_tuned.h): the cuBLASLt algorithm it keeps, at the row
// count it was timed at (other counts take the default), against the double-free float product (the
// bounds of LinearBf16's own test: 1e-4 with fp32 output and the residual added, 1e-2 with bf16
// output); the fallback for shapes never tuned and operands the cuBLASLt path does not take;
// refusals that change nothing; the same bits twice; and a run captured in a CUDA graph.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "kernels/linear.h"
#include "kernels/linear_bf16_tuned.h"
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

constexpr size_t kWorkspace = 32u << 20;

// A cuBLAS handle and the tuner sharing one workspace on one stream, as the engine holds them.
struct Gemms {
  cublasHandle_t cublas = nullptr;
  cudaStream_t stream = nullptr;
  Dev<char> workspace{kWorkspace};
  cuda::TunedBf16Gemm tuned;
  Gemms() {
    EXPECT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
    EXPECT_EQ(cublasCreate(&cublas), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(cublasSetStream(cublas, stream), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(cublasSetWorkspace(cublas, workspace.p, kWorkspace), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(tuned.Init(workspace.p, kWorkspace), CUBLAS_STATUS_SUCCESS);
  }
  ~Gemms() {
    cublasDestroy(cublas);
    cudaStreamDestroy(stream);
  }
};

// The engine's four projection forms at gla-340M's widths (and a wider x row stride): fp32 output
// without (in_proj) and with the residual (o_proj, down), bf16 output (gate_up).
TEST(TunedBf16Gemm, TheKeptAlgorithmEqualsTheProductAndOtherRowCountsTakeTheDefault) {
  GLA_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(31);
  Gemms g;
  const struct {
    int N, K;
    bool y_bf16, accumulate;
  } shapes[] = {{3088, 1024, false, false}, {1024, 1024, false, true}, {5632, 1024, true, false}, {1024, 2816, false, true}};
  for (const auto& s : shapes) {
    const int xs = s.K + 8, ys = s.N + 8;
    // Two distinct matrices, as Tune is given every layer's.
    const auto W0 = RoundBf16(Random(size_t(s.N) * s.K, rng, -0.05f, 0.05f));
    const auto W1 = RoundBf16(Random(size_t(s.N) * s.K, rng, -0.05f, 0.05f));
    Dev<__nv_bfloat16> dW0(ToBf16(W0)), dW1(ToBf16(W1));
    const __nv_bfloat16* weights[] = {dW0.p, dW1.p};
    const int timed_rows = 64;
    const auto x = RoundBf16(Random(size_t(timed_rows) * xs, rng));
    Dev<__nv_bfloat16> dx(ToBf16(x));
    Dev<char> scratch(size_t(timed_rows) * ys * 4);
    const cuda::Bf16GemmShape shape{s.N, s.K, xs, ys, s.y_bf16, s.accumulate};
    std::vector<cuda::GemmCandidateTime> times;
    // Without the default as a candidate, so that a cuBLASLt algorithm is what runs below.
    ASSERT_EQ(g.tuned.Tune(g.cublas, shape, timed_rows, dx.p, weights, 2, scratch.p, g.stream, &times,
                           /*time_default=*/false),
              CUBLAS_STATUS_SUCCESS);
    ASSERT_FALSE(times.empty());
    int chosen = 0;
    for (const auto& t : times) {
      EXPECT_GT(t.us, 0.0) << t.name;
      chosen += t.chosen;
      EXPECT_NE(t.name, "cublasGemmEx default");
    }
    EXPECT_EQ(chosen, 1);
    EXPECT_TRUE(g.tuned.TunedAt(shape, 64));
    EXPECT_FALSE(g.tuned.TunedAt(shape, 40));
    for (int M : {64, 40}) {  // the timed row count, then another (the default runs it)
      const float beta = s.accumulate ? 1.f : 0.f;
      std::vector<float> ref(size_t(M) * s.N, 0.f);
      const auto y0 = Random(size_t(M) * ys, rng);
      if (s.accumulate)
        for (int m = 0; m < M; ++m)
          for (int n = 0; n < s.N; ++n) ref[size_t(m) * s.N + n] = y0[size_t(m) * ys + n];
      NaiveLinear(x.data(), xs, W1.data(), s.N, s.K, ref.data(), M, beta);
      const int64_t runs = g.tuned.tuned_runs();
      std::vector<float> got(ref.size());
      if (s.y_bf16) {
        Dev<__nv_bfloat16> dy(size_t(M) * ys);
        ASSERT_EQ(g.tuned.Run(g.cublas, dx.p, xs, dW1.p, s.N, s.K, dy.p, true, ys, M, beta, g.stream),
                  CUBLAS_STATUS_SUCCESS);
        ASSERT_EQ(cudaStreamSynchronize(g.stream), cudaSuccess);
        const auto y = FromBf16(dy.Get());
        for (int m = 0; m < M; ++m)
          for (int n = 0; n < s.N; ++n) got[size_t(m) * s.N + n] = y[size_t(m) * ys + n];
        EXPECT_LT(RelErr(got, ref), 1e-2) << "N=" << s.N << " K=" << s.K << " M=" << M << " bf16";
      } else {
        Dev<float> dy(y0);
        ASSERT_EQ(g.tuned.Run(g.cublas, dx.p, xs, dW1.p, s.N, s.K, dy.p, false, ys, M, beta, g.stream),
                  CUBLAS_STATUS_SUCCESS);
        ASSERT_EQ(cudaStreamSynchronize(g.stream), cudaSuccess);
        const auto y = dy.Get();
        for (int m = 0; m < M; ++m)
          for (int n = 0; n < s.N; ++n) got[size_t(m) * s.N + n] = y[size_t(m) * ys + n];
        EXPECT_LT(RelErr(got, ref), 1e-4) << "N=" << s.N << " K=" << s.K << " M=" << M << " fp32";
        // The same bits a second time (the kept algorithm is deterministic at a row count).
        Dev<float> dy2(y0);
        ASSERT_EQ(g.tuned.Run(g.cublas, dx.p, xs, dW1.p, s.N, s.K, dy2.p, false, ys, M, beta, g.stream),
                  CUBLAS_STATUS_SUCCESS);
        ASSERT_EQ(cudaStreamSynchronize(g.stream), cudaSuccess);
        EXPECT_EQ(dy2.Get(), y) << "N=" << s.N << " M=" << M;
      }
      // The kept algorithm at the timed row count; the default at the other.
      EXPECT_EQ(g.tuned.tuned_runs() - runs, M == timed_rows ? (s.y_bf16 ? 1 : 2) : 0) << "N=" << s.N << " M=" << M;
      std::printf("[ measure ] tuned GEMM N=%d K=%d M=%d: %s (%zu candidates)\n", s.N, s.K, M,
                  g.tuned.tuned_runs() > runs ? "cuBLASLt's kept algorithm" : "fallback", times.size());
    }
  }
}

TEST(TunedBf16Gemm, FallsBackWhereNothingWasTunedOrTheOperandsDoNotFit) {
  GLA_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(37);
  Gemms g;
  const int N = 1024, K = 1024, M = 32;
  const auto W = RoundBf16(Random(size_t(N) * K, rng, -0.05f, 0.05f));
  const auto x = RoundBf16(Random(size_t(M + 1) * K, rng));
  Dev<__nv_bfloat16> dW(ToBf16(W)), dx(ToBf16(x));
  Dev<float> dy(size_t(M) * N);
  std::vector<float> ref(size_t(M) * N);
  NaiveLinear(x.data(), K, W.data(), N, K, ref.data(), M);
  // Never tuned: the default, correct.
  ASSERT_EQ(g.tuned.Run(g.cublas, dx.p, K, dW.p, N, K, dy.p, false, N, M, 0.f, g.stream), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cudaStreamSynchronize(g.stream), cudaSuccess);
  EXPECT_LT(RelErr(dy.Get(), ref), 1e-4);
  EXPECT_EQ(g.tuned.tuned_runs(), 0);
  // Tuned, then called with an input that is not 16-byte aligned (one row of K + 1 values in):
  // the default takes it, correct.
  const __nv_bfloat16* weights[] = {dW.p};
  const cuda::Bf16GemmShape shape{N, K, K, N, false, false};
  ASSERT_EQ(g.tuned.Tune(g.cublas, shape, M, dx.p, weights, 1, dy.p, g.stream, nullptr, false), CUBLAS_STATUS_SUCCESS);
  std::vector<float> shifted_x(x.begin() + 1, x.end());
  std::vector<float> ref1(size_t(M) * N);
  NaiveLinear(shifted_x.data(), K, W.data(), N, K, ref1.data(), M);
  ASSERT_EQ(g.tuned.Run(g.cublas, dx.p + 1, K, dW.p, N, K, dy.p, false, N, M, 0.f, g.stream), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cudaStreamSynchronize(g.stream), cudaSuccess);
  EXPECT_LT(RelErr(dy.Get(), ref1), 1e-4);
  EXPECT_EQ(g.tuned.tuned_runs(), 0);
}

TEST(TunedBf16Gemm, RefusesWhatItCannotTimeAndKeepsNothing) {
  GLA_REQUIRE_CUDA_DEVICE();
  Gemms g;
  Dev<__nv_bfloat16> w(size_t(64) * 64 + 8), x(size_t(32) * 64 + 8);
  Dev<float> y(size_t(32) * 64);
  const __nv_bfloat16* weights[] = {w.p};
  const __nv_bfloat16* misaligned[] = {w.p + 1};
  const cuda::Bf16GemmShape shape{64, 64, 64, 64, false, false};
  cuda::TunedBf16Gemm never_initialized;
  EXPECT_EQ(never_initialized.Tune(g.cublas, shape, 32, x.p, weights, 1, y.p, g.stream), CUBLAS_STATUS_NOT_INITIALIZED);
  EXPECT_EQ(g.tuned.Tune(g.cublas, shape, 32, x.p, misaligned, 1, y.p, g.stream), CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(g.tuned.Tune(g.cublas, shape, 32, x.p + 1, weights, 1, y.p, g.stream), CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(g.tuned.Tune(g.cublas, shape, 0, x.p, weights, 1, y.p, g.stream), CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(g.tuned.Tune(g.cublas, shape, 32, x.p, weights, 0, y.p, g.stream), CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(g.tuned.Tune(g.cublas, shape, 32, x.p, weights, 1, y.p, nullptr), CUBLAS_STATUS_INVALID_VALUE);
  cudaStream_t other = nullptr;  // the fallback handle's stream is g.stream: its passes would not be captured
  ASSERT_EQ(cudaStreamCreateWithFlags(&other, cudaStreamNonBlocking), cudaSuccess);
  EXPECT_EQ(g.tuned.Tune(g.cublas, shape, 32, x.p, weights, 1, y.p, other), CUBLAS_STATUS_INVALID_VALUE);
  cudaStreamDestroy(other);
  const cuda::Bf16GemmShape odd_n{60, 64, 64, 60, false, false};  // rows of 60 bf16 values: not 16-byte multiples
  EXPECT_EQ(g.tuned.Tune(g.cublas, odd_n, 32, x.p, weights, 1, y.p, g.stream), CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(g.tuned.plans(), 0);
  EXPECT_FALSE(g.tuned.TunedAt(shape, 32));
  // Tuning a row count again replaces its plan rather than adding one; another count adds one.
  ASSERT_EQ(g.tuned.Tune(g.cublas, shape, 32, x.p, weights, 1, y.p, g.stream), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(g.tuned.Tune(g.cublas, shape, 32, x.p, weights, 1, y.p, g.stream), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(g.tuned.plans(), 1);
  ASSERT_EQ(g.tuned.Tune(g.cublas, shape, 24, x.p, weights, 1, y.p, g.stream), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(g.tuned.plans(), 2);
  cuda::TunedBf16Gemm twice;
  ASSERT_EQ(twice.Init(g.workspace.p, kWorkspace), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(twice.Init(g.workspace.p, kWorkspace), CUBLAS_STATUS_INVALID_VALUE);
}

// The engine captures decode steps into CUDA graphs: the kept algorithm must run inside one.
TEST(TunedBf16Gemm, RunsInsideACapturedGraph) {
  GLA_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(41);
  Gemms g;
  const int N = 2048, K = 1024, M = 128;
  const auto W = RoundBf16(Random(size_t(N) * K, rng, -0.05f, 0.05f));
  const auto x = RoundBf16(Random(size_t(M) * K, rng));
  Dev<__nv_bfloat16> dW(ToBf16(W)), dx(ToBf16(x));
  Dev<float> dy(size_t(M) * N);
  const __nv_bfloat16* weights[] = {dW.p};
  const cuda::Bf16GemmShape shape{N, K, K, N, false, false};
  ASSERT_EQ(g.tuned.Tune(g.cublas, shape, M, dx.p, weights, 1, dy.p, g.stream, nullptr, false), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cudaMemsetAsync(dy.p, 0, size_t(M) * N * sizeof(float), g.stream), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(g.stream), cudaSuccess);
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamBeginCapture(g.stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  const cublasStatus_t ran = g.tuned.Run(g.cublas, dx.p, K, dW.p, N, K, dy.p, false, N, M, 0.f, g.stream);
  ASSERT_EQ(cudaStreamEndCapture(g.stream, &graph), cudaSuccess);
  ASSERT_EQ(ran, CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(g.tuned.tuned_runs(), 1);
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, g.stream), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(g.stream), cudaSuccess);
  std::vector<float> ref(size_t(M) * N);
  NaiveLinear(x.data(), K, W.data(), N, K, ref.data(), M);
  EXPECT_LT(RelErr(dy.Get(), ref), 1e-4);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
}

}  // namespace
}  // namespace gla
