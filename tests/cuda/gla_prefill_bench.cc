// Times the fused-recurrent prefill at the GPU issue's anchor shapes (gla-1.3B heads, 16,384
// tokens per call) next to fla's chunk_gla and FlashAttention-2 anchors on the same H100.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <random>
#include <vector>

#include "kernels/gla.h"
#include "tests/cuda/bench_util.h"


int main() {
  const int H = 4, dk = 256, dv = 512, total = 16384;
  struct Anchor {
    int B, T;
    double fla_ms, fa2_ms;
  };
  const Anchor anchors[] = {{8, 2048, 1.03, 0.51}, {4, 4096, 0.98, 0.97}, {2, 8192, 1.05, 1.79}, {1, 16384, 1.18, 3.45}};
  float *q, *k, *v, *g, *o, *pool;
  int32_t *cu, *slots;
  CHECK(cudaMalloc(&q, size_t(total) * H * dk * 4));
  CHECK(cudaMalloc(&k, size_t(total) * H * dk * 4));
  CHECK(cudaMalloc(&g, size_t(total) * H * dk * 4));
  CHECK(cudaMalloc(&v, size_t(total) * H * dv * 4));
  CHECK(cudaMalloc(&o, size_t(total) * H * dv * 4));
  CHECK(cudaMalloc(&pool, size_t(8) * H * dk * dv * 4));
  CHECK(cudaMalloc(&cu, 9 * 4));
  CHECK(cudaMalloc(&slots, 8 * 4));
  {
    std::mt19937 rng(3);
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    std::vector<float> h(size_t(total) * H * dv);
    for (auto& x : h) x = u(rng);
    CHECK(cudaMemcpy(q, h.data(), size_t(total) * H * dk * 4, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(k, h.data() + 7, size_t(total) * H * dk * 4, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(v, h.data(), size_t(total) * H * dv * 4, cudaMemcpyHostToDevice));
    for (auto& x : h) x = -0.05f * (x + 1.0f);
    CHECK(cudaMemcpy(g, h.data(), size_t(total) * H * dk * 4, cudaMemcpyHostToDevice));
    std::vector<int32_t> ids = {0, 1, 2, 3, 4, 5, 6, 7};
    CHECK(cudaMemcpy(slots, ids.data(), 32, cudaMemcpyHostToDevice));
  }
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s. GLA prefill forward, gla-1.3B heads (H=4, dk=256, dv=512), 16,384 tokens per call,\n"
              "fp32 in/out, fused-recurrent form (CUDA cores). Anchors: fla chunk_gla (bf16) and FlashAttention-2.\n\n",
              prop.name);
  std::printf("| B x T | ms | tokens/s | vs fla chunk_gla | vs FlashAttention-2 |\n| --- | --- | --- | --- | --- |\n");
  cudaEvent_t e0, e1;
  CHECK(cudaEventCreate(&e0));
  CHECK(cudaEventCreate(&e1));
  for (const Anchor& a : anchors) {
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
    p.state_base = pool;
    p.slot_stride = int64_t{H} * dk * dv;
    p.slots = slots;
    p.scale = 0.0625f;
    CHECK(gla::cuda::GlaPrefillRecurrent(p, nullptr));
    std::vector<float> ms;
    for (int rep = 0; rep < 5; ++rep) {
      CHECK(cudaEventRecord(e0));
      CHECK(gla::cuda::GlaPrefillRecurrent(p, nullptr));
      CHECK(cudaEventRecord(e1));
      CHECK(cudaEventSynchronize(e1));
      float t;
      CHECK(cudaEventElapsedTime(&t, e0, e1));
      ms.push_back(t);
    }
    std::sort(ms.begin(), ms.end());
    const double t = ms[ms.size() / 2];
    std::printf("| %d x %d | %.2f | %.0f | %.2fx | %.2fx |\n", a.B, a.T, t, total / (t * 1e-3), a.fla_ms / t, a.fa2_ms / t);
  }
  return 0;
}
