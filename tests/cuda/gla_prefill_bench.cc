// Times the GLA prefill kernels at the GPU issue's anchor shapes (16,384 tokens per call as
// B8 x T2048 ... B1 x T16384) next to fla's chunk_gla and FlashAttention-2 forward anchors measured
// on the same H100: the fused-recurrent form (CUDA cores) at gla-1.3B heads, then the tensor-core
// chunkwise form (GlaPrefillChunk) at gla-1.3B and gla-340M heads. fp32 in/out, states in slots.
// Floors from the device's ceilings measured in the same run (tests/cuda/device_ceilings.h): the
// chunk algorithm's FLOPs / bf16 GEMM peak, and its compulsory bytes (q k g v read, o written,
// fp32) / copy bandwidth; the larger bounds. GLA_BENCH_OUT=DIR: DIR/gla-prefill.json.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "kernels/gla.h"
#include "tests/cuda/bench_report.h"
#include "tests/cuda/bench_util.h"
#include "tests/cuda/device_ceilings.h"

namespace {

struct Anchor {
  int B, T;
  double fla_ms, fa2_ms;  // gla-1.3B hidden size (fla chunk_gla fwd bf16; FlashAttention-2 causal fwd)
};
const Anchor kAnchors[] = {{8, 2048, 1.03, 0.51}, {4, 4096, 0.98, 0.97}, {2, 8192, 1.05, 1.79}, {1, 16384, 1.18, 3.45}};
constexpr int kTotal = 16384;

using Kernel = cudaError_t (*)(const gla::GlaPrefillCudaParams&, cudaStream_t);

// Median of `reps` timed calls after two warm-ups (bench_util.h).
double TimeMs(Kernel kernel, const gla::GlaPrefillCudaParams& p, int reps, cudaEvent_t e0, cudaEvent_t e1) {
  return MedianMs([&] { CHECK(kernel(p, nullptr)); }, reps, e0, e1);
}

}  // namespace

int main(int argc, char** argv) {
  // `gla_prefill_bench chunk` skips the (slow) fused-recurrent table.
  const bool profile = argc > 1 && std::string(argv[1]) == "profile";  // one call per shape (for ncu)
  // `gla_prefill_bench plans` adds a sweep of the chunkwise kernel's plan (segments, prep clusters).
  const bool plan_sweep = argc > 1 && std::string(argv[1]) == "plans";
  const bool chunk_only = profile || plan_sweep || (argc > 1 && std::string(argv[1]) == "chunk");
  const int H = 4, dk_max = 256, dv_max = 512, total = kTotal;
  float *q, *k, *v, *g, *o, *pool;
  int32_t *cu, *slots;
  CHECK(cudaMalloc(&q, size_t(total) * H * dk_max * 4));
  CHECK(cudaMalloc(&k, size_t(total) * H * dk_max * 4));
  CHECK(cudaMalloc(&g, size_t(total) * H * dk_max * 4));
  CHECK(cudaMalloc(&v, size_t(total) * H * dv_max * 4));
  CHECK(cudaMalloc(&o, size_t(total) * H * dv_max * 4));
  CHECK(cudaMalloc(&pool, size_t(8) * H * dk_max * dv_max * 4));
  CHECK(cudaMemset(pool, 0, size_t(8) * H * dk_max * dv_max * 4));
  CHECK(cudaMalloc(&cu, 9 * 4));
  CHECK(cudaMalloc(&slots, 8 * 4));
  {
    std::mt19937 rng(3);
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    std::vector<float> h(size_t(total) * H * dv_max);
    for (auto& x : h) x = u(rng);
    CHECK(cudaMemcpy(q, h.data(), size_t(total) * H * dk_max * 4, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(k, h.data() + 7, size_t(total) * H * dk_max * 4, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(v, h.data(), size_t(total) * H * dv_max * 4, cudaMemcpyHostToDevice));
    for (auto& x : h) x = -0.05f * (x + 1.0f);
    CHECK(cudaMemcpy(g, h.data(), size_t(total) * H * dk_max * 4, cudaMemcpyHostToDevice));
    std::vector<int32_t> ids = {0, 1, 2, 3, 4, 5, 6, 7};
    CHECK(cudaMemcpy(slots, ids.data(), 32, cudaMemcpyHostToDevice));
  }
  gla::bench::BenchReport report("gla-prefill", gla::bench::MeasureDeviceCeilings());
  const gla::bench::DeviceCeilings& ceil = report.ceilings();
  cudaEvent_t e0, e1;
  CHECK(cudaEventCreate(&e0));
  CHECK(cudaEventCreate(&e1));

  auto params = [&](const Anchor& a, int dk, int dv) {
    std::vector<int32_t> cuh(a.B + 1);
    for (int i = 0; i <= a.B; ++i) cuh[i] = i * a.T;
    CHECK(cudaMemcpy(cu, cuh.data(), (a.B + 1) * 4, cudaMemcpyHostToDevice));
    gla::GlaPrefillCudaParams p;
    p.num_seqs = a.B;
    p.H = p.Hkv = H;
    p.dk = dk;
    p.dv = dv;
    p.q = q;
    p.k = k;
    p.g = g;
    p.q_stride = p.k_stride = p.g_stride = int64_t{H} * dk;
    p.v = v;
    p.v_stride = int64_t{H} * dv;
    p.o = o;
    p.o_stride = int64_t{H} * dv;
    p.cu_seqlens = cu;
    p.state = {pool, int64_t{H} * dk * dv, false};
    p.slots = slots;
    p.scale = 1.0f / std::sqrt(float(dk));
    p.total_tokens = a.B * a.T;
    return p;
  };

  report.PrintHeader();
  std::printf("GLA prefill forward, 16,384 tokens per call, fp32 in/out, states in slots.\n"
              "Anchors (an H100, gla-1.3B hidden size): fla chunk_gla forward (bf16) and FlashAttention-2 causal forward.\n\n");

  if (!chunk_only) std::printf("fused-recurrent form (GlaPrefillRecurrent, CUDA cores), gla-1.3B heads (H=4, dk=256, dv=512):\n\n");
  if (!chunk_only) std::printf("| B x T | ms | tokens/s | vs fla chunk_gla | vs FlashAttention-2 |\n| --- | --- | --- | --- | --- |\n");
  for (const Anchor& a : kAnchors) {
    if (chunk_only) break;
    const auto p = params(a, 256, 512);
    const double t = TimeMs(gla::cuda::GlaPrefillRecurrent, p, 3, e0, e1);
    std::printf("| %d x %d | %.2f | %.0f | %.2fx | %.2fx |\n", a.B, a.T, t, total / (t * 1e-3), a.fla_ms / t, a.fa2_ms / t);
  }

  // Chunkwise form. FLOPs counted as the chunk algorithm's useful work per token and head:
  // 2 dk dv (inter-chunk o) + 2 dk dv (state update) + C/2 * 2 (dk + dv) (causal intra-chunk A and A V).
  struct Shape {
    const char* name;
    int dk, dv;
  };
  const Shape shapes[] = {{"gla-1.3B heads (H=4, dk=256, dv=512)", 256, 512}, {"gla-340M heads (H=4, dk=128, dv=256)", 128, 256}};
  size_t ws_bytes = 0;
  for (const Shape& s : shapes)
    for (const Anchor& a : kAnchors) ws_bytes = std::max(ws_bytes, gla::cuda::GlaPrefillChunkWorkspaceBytes(params(a, s.dk, s.dv), total));
  void* ws = nullptr;
  CHECK(cudaMalloc(&ws, ws_bytes));
  std::printf("\nchunkwise form (GlaPrefillChunk, bf16 mma.sync, fp32 state; workspace %.1f MB):\n\n", ws_bytes / 1e6);
  std::printf("| shape | B x T | ms | TFLOP/s | floor ms | of floor | vs fla chunk_gla (1.3B anchor) | vs FlashAttention-2 (1.3B anchor) |\n"
              "| --- | --- | --- | --- | --- | --- | --- | --- |\n");
  for (const Shape& s : shapes)
    for (const Anchor& a : kAnchors) {
      auto p = params(a, s.dk, s.dv);
      p.workspace = ws;
      p.workspace_bytes = ws_bytes;
      if (profile) {
        CHECK(gla::cuda::GlaPrefillChunk(p, nullptr));
        CHECK(cudaDeviceSynchronize());
        continue;
      }
      const double t = TimeMs(gla::cuda::GlaPrefillChunk, p, 11, e0, e1);
      const double flops = double(total) * H * (4.0 * s.dk * s.dv + 64.0 * (s.dk + s.dv));
      const double bytes = 4.0 * total * H * (3.0 * s.dk + 2.0 * s.dv);
      const double floor_ms = std::max(ceil.FlopsSeconds(flops), ceil.BytesSeconds(bytes)) * 1e3;
      std::printf("| %s | %d x %d | %.3f | %.1f | %.3f | %.0f%% | %.2fx | %.2fx |\n", s.name, a.B, a.T, t,
                  flops / (t * 1e-3) / 1e12, floor_ms, 100.0 * floor_ms / t, a.fla_ms / t, a.fa2_ms / t);
      report.AddRow()
          .Str("shape", s.name)
          .Num("B", a.B)
          .Num("T", a.T)
          .Num("chunk_ms", t)
          .Num("floor_ms", floor_ms)
          .Num("of_floor", floor_ms / t)
          .Num("fla_anchor_ms", a.fla_ms)
          .Num("fa2_anchor_ms", a.fa2_ms);
    }
  CHECK(cudaFree(ws));
  if (plan_sweep) {
    // The chunkwise kernel's plan swept (GlaPrefillCudaParams::plan_*) at the shapes the engine runs
    // (one prompt of 512 / 1,024 / 4,096 tokens) and the anchors': segments per sequence x the prep
    // kernel in one block per (chunk, head) or in clusters of dk / 64 blocks. "auto" is the plan's
    // own choice, what the engine runs.
    const Anchor plan_shapes[] = {{1, 512, 0, 0}, {1, 1024, 0, 0}, {1, 4096, 0, 0}, {4, 4096, 0, 0}, {1, 16384, 0, 0}};
    const int segment_counts[] = {1, 2, 4, 8, 16, 32};
    std::printf("\nchunkwise plans, ms (median of 11): cut into k segments, prep whole / in clusters\n\n| shape | B x T | auto |");
    for (int k : segment_counts) std::printf(" k=%d whole | k=%d split |", k, k);
    std::printf("\n| --- | --- | --- |");
    for (size_t i = 0; i < std::size(segment_counts); ++i) std::printf(" --- | --- |");
    std::printf("\n");
    for (const Shape& s : shapes)
      for (const Anchor& a : plan_shapes) {
        auto p = params(a, s.dk, s.dv);
        p.total_tokens = a.B * a.T;
        size_t bytes = 0;
        for (int k : segment_counts) {
          p.plan_segments = k;
          bytes = std::max(bytes, gla::cuda::GlaPrefillChunkWorkspaceBytes(p, p.total_tokens));
        }
        p.plan_segments = 0;
        bytes = std::max(bytes, gla::cuda::GlaPrefillChunkWorkspaceBytes(p, p.total_tokens));
        CHECK(cudaMalloc(&p.workspace, bytes));
        p.workspace_bytes = bytes;
        auto time_plan = [&](int k, int split) {
          p.plan_segments = k;
          p.plan_split_prep = split;
          const double t = TimeMs(gla::cuda::GlaPrefillChunk, p, 11, e0, e1);
          report.AddRow()
              .Str("table", "plans")
              .Str("shape", s.name)
              .Num("B", a.B)
              .Num("T", a.T)
              .Num("segments", k)
              .Num("split_prep", split)
              .Num("chunk_ms", t);
          return t;
        };
        p.plan_segments = p.plan_split_prep = 0;
        const gla::cuda::GlaChunkPlanInfo own = gla::cuda::GlaPrefillChunkPlan(p, p.total_tokens);
        char own_name[64];
        if (own.segment_tokens > 0)
          std::snprintf(own_name, sizeof own_name, "%lld-token segments, %s", static_cast<long long>(own.segment_tokens),
                        own.split_prep ? "split" : "whole");
        else
          std::snprintf(own_name, sizeof own_name, "uncut, %s", own.split_prep ? "split" : "whole");
        std::printf("| %s | %d x %d | %.3f (%s) |", s.name, a.B, a.T, time_plan(0, 0), own_name);
        for (int k : segment_counts) std::printf(" %.3f | %.3f |", time_plan(k, 1), time_plan(k, 2));
        std::printf("\n");
        CHECK(cudaFree(p.workspace));
      }
  }
  for (void* ptr : {(void*)q, (void*)k, (void*)v, (void*)g, (void*)o, (void*)pool, (void*)cu, (void*)slots}) CHECK(cudaFree(ptr));
  std::printf("\nThe anchors were timed on an H100 (issue 4): a ratio to them is not one of the same run "
              "(tests/cuda/fla_gla_anchor.py times fla on this device).\n");
  return report.WriteJsonIfAsked() ? 0 : 1;
}
