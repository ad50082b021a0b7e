// What timing cuBLASLt's algorithms buys over cublasGemmEx's default (cuda::TunedBf16Gemm,
// kernels/linear_bf16_tuned.h) at the bf16 projections of gla-1.3B and gla-340M, for the row
// counts the engine runs them at: decode batches 32-256 (where cuBLAS streamed the weights at
// 52-54% of the copy rate, docs/performance.md) and prompts of 512 and 4,096 tokens. Each shape's
// weights rotate through copies filling three times the L2 (as a step reads them, from HBM). Per
// row: the floor (max of bytes / copy bandwidth and FLOPs / bf16 GEMM peak, both measured in this
// run), the default, the heuristic's first algorithm, the fastest (its tile, stages, split-K), and
// a model step's sum over 24 layers. Each time is one pass over the copies captured in a CUDA graph
// (TunedBf16Gemm::Tune's own timing). GLA_BENCH_OUT=DIR: DIR/gemm-tuning.json.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "kernels/linear.h"
#include "kernels/linear_bf16_tuned.h"
#include "tests/cuda/bench_report.h"
#include "tests/cuda/bench_util.h"
#include "tests/cuda/device_ceilings.h"

namespace {

using gla::cuda::Bf16GemmShape;
using gla::cuda::GemmCandidateTime;

struct Projection {
  const char* name;
  int64_t N, K;
  bool y_bf16, accumulate;  // as the engine calls it: gate_up writes bf16; o_proj and down add to the residual
};

struct Model {
  const char* name;
  int64_t D, I, P, Vd;
};

constexpr int kLayers = 24;  // both presets

#define CHECK_BLAS(x)                                                              \
  do {                                                                             \
    cublasStatus_t s = (x);                                                        \
    if (s != CUBLAS_STATUS_SUCCESS) {                                              \
      std::fprintf(stderr, "%s:%d: %s: cuBLAS status %d\n", __FILE__, __LINE__, #x, \
                   static_cast<int>(s));                                           \
      std::exit(1);                                                                \
    }                                                                              \
  } while (0)

}  // namespace

int main() {
  const gla::bench::DeviceCeilings ceilings = gla::bench::MeasureDeviceCeilings();
  gla::bench::BenchReport report("gemm-tuning", ceilings);
  report.PrintHeader();
  cudaDeviceProp prop{};
  CHECK(cudaGetDeviceProperties(&prop, 0));
  const size_t l2 = static_cast<size_t>(prop.l2CacheSize);

  // One pool for every shape's weight copies: random bf16 values (constant ones would draw less
  // power than a model's and flatter the clocks).
  const size_t pool_bytes = size_t{768} << 20;
  char* pool;
  CHECK(cudaMalloc(&pool, pool_bytes));
  {
    std::mt19937 rng(7);
    std::normal_distribution<float> n(0.f, 0.02f);
    std::vector<__nv_bfloat16> chunk(size_t{16} << 20);
    for (auto& v : chunk) v = __float2bfloat16(n(rng));
    const size_t chunk_bytes = chunk.size() * sizeof(__nv_bfloat16);
    for (size_t off = 0; off < pool_bytes; off += chunk_bytes)
      CHECK(cudaMemcpy(pool + off, chunk.data(), std::min(chunk_bytes, pool_bytes - off), cudaMemcpyHostToDevice));
  }
  const int64_t max_rows = 4096, max_width = 11264;
  __nv_bfloat16* x;
  void* y;
  CHECK(cudaMalloc(&x, size_t(max_rows) * max_width * 2));
  CHECK(cudaMemcpy(x, pool, size_t(max_rows) * max_width * 2, cudaMemcpyDeviceToDevice));
  CHECK(cudaMalloc(&y, size_t(max_rows) * max_width * 4));
  CHECK(cudaMemset(y, 0, size_t(max_rows) * max_width * 4));

  cudaStream_t stream;
  CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cublasHandle_t cublas;
  CHECK_BLAS(cublasCreate(&cublas));
  CHECK_BLAS(cublasSetStream(cublas, stream));
  // The engine's own workspace size (engine/model/cuda_model.cc), shared by both handles.
  const size_t ws_bytes = size_t{32} << 20;
  void* ws;
  CHECK(cudaMalloc(&ws, ws_bytes));
  CHECK_BLAS(cublasSetWorkspace(cublas, ws, ws_bytes));
  gla::cuda::TunedBf16Gemm tuned;
  CHECK_BLAS(tuned.Init(ws, ws_bytes));

  const Model models[] = {{"gla-1.3B", 2048, 5632, 6160, 2048}, {"gla-340M", 1024, 2816, 3088, 1024}};
  const int64_t row_counts[] = {32, 64, 128, 256, 512, 4096};
  std::printf("\n%-9s %-8s %-12s %5s %8s %9s %6s %9s %9s %6s %7s  %s\n", "model", "proj", "N x K", "rows", "floor_us",
              "default", "of_fl", "heur_1st", "tuned", "of_fl", "speedup", "chosen (cuBLASLt config)");
  for (const Model& m : models) {
    const Projection projections[] = {{"in_proj", m.P, m.D, false, false},
                                      {"o_proj", m.D, m.Vd, false, true},
                                      {"gate_up", 2 * m.I, m.D, true, false},
                                      {"down", m.D, m.I, false, true}};
    for (const int64_t rows : row_counts) {
      double step_default = 0, step_tuned = 0, step_floor = 0;
      for (const Projection& p : projections) {
        const size_t w_bytes = size_t(p.N) * p.K * 2;
        const size_t stride = (w_bytes + 255) / 256 * 256;
        const int copies = static_cast<int>(std::min<size_t>(pool_bytes / stride, std::max<size_t>(kLayers, 3 * l2 / w_bytes + 1)));
        std::vector<const __nv_bfloat16*> weights(copies);
        for (int c = 0; c < copies; ++c) weights[c] = reinterpret_cast<const __nv_bfloat16*>(pool + size_t(c) * stride);
        const Bf16GemmShape shape{p.N, p.K, p.K, p.N, p.y_bf16, p.accumulate};
        std::vector<GemmCandidateTime> times;
        CHECK_BLAS(tuned.Tune(cublas, shape, rows, x, weights.data(), copies, y, stream, &times));
        double def = 0, first = 0, best = 1e30;
        std::string chosen;
        for (const auto& t : times) {
          if (t.name == "cublasGemmEx default") def = t.us;
          else if (first == 0) first = t.us;
          if (t.chosen) {
            best = t.us;
            chosen = t.name;
          }
        }
        const double y_bytes = (p.y_bf16 ? 2.0 : 4.0) * (p.accumulate ? 2 : 1);
        const double bytes = double(w_bytes) + double(rows) * p.K * 2 + double(rows) * p.N * y_bytes;
        const double floor_us = 1e6 * std::max(ceilings.BytesSeconds(bytes), ceilings.FlopsSeconds(2.0 * rows * p.N * p.K));
        step_default += def;
        step_tuned += best;
        step_floor += floor_us;
        const std::string nk = std::to_string(p.N) + "x" + std::to_string(p.K);
        std::printf("%-9s %-8s %-12s %5lld %8.2f %9.2f %5.0f%% %9.2f %9.2f %5.0f%% %6.2fx  %s (%zu timed)\n", m.name,
                    p.name, nk.c_str(), static_cast<long long>(rows), floor_us, def, 100 * floor_us / def, first, best,
                    100 * floor_us / best, def / best, chosen.c_str(), times.size());
        report.AddRow()
            .Str("model", m.name)
            .Str("projection", p.name)
            .Num("N", double(p.N))
            .Num("K", double(p.K))
            .Num("rows", double(rows))
            .Num("floor_us", floor_us)
            .Num("default_us", def)
            .Num("heuristic_first_us", first)
            .Num("tuned_us", best)
            .Num("candidates", double(times.size()))
            .Str("chosen", chosen);
      }
      std::printf("%-9s %-8s %-12s %5lld %8.3f %9.3f %5.0f%% %9s %9.3f %5.0f%% %6.2fx  (ms: four projections x %d layers)\n",
                  m.name, "step", "", static_cast<long long>(rows), kLayers * step_floor / 1e3,
                  kLayers * step_default / 1e3, 100 * step_floor / step_default, "", kLayers * step_tuned / 1e3,
                  100 * step_floor / step_tuned, step_default / step_tuned, kLayers);
    }
  }

  return report.WriteJsonIfAsked() ? 0 : 1;
}
