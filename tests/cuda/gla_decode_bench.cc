// Times the CUDA decode step (one layer) at the anchor shapes of the GPU issue and prints a
// table: time, achieved state bandwidth, ratio to the copy bandwidth measured in the same run (the
// floor; tests/cuda/device_ceilings.h), and the ratio to fla's fused_recurrent_gla anchor (an H100,
// 2026-11-22, gla-1.3B heads). GLA_BENCH_OUT=DIR: the table also goes to DIR/gla-decode.json.
// States rotate through a pool larger than L2 so no launch reads from cache. Each shape runs with
// fp32 and with bf16 states (--state_dtype bf16: half the bytes; the floor is its own bytes), the
// latter also with slots only 4-value aligned (the kernel's 4-columns-a-thread form, 8-byte accesses,
// against its 16-byte one).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "kernels/gla.h"
#include "models/dtype.h"
#include "tests/cuda/bench_report.h"
#include "tests/cuda/bench_util.h"
#include "tests/cuda/device_ceilings.h"


namespace {

float Median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Result {
  float us_stream, us_graph;
};

Result TimeDecode(int B, int H, int dk, int dv, bool bf16, bool narrow) {
  const int64_t state_floats = int64_t{H} * dk * dv;
  const int64_t slot_values = state_floats + (narrow ? 4 : 0);  // narrow: slots 4-value, not 8-value, aligned
  const int64_t set_bytes = B * slot_values * (bf16 ? 2 : 4);
  const int sets = static_cast<int>(std::max<int64_t>(2, (int64_t{400} << 20) / set_bytes + 1));  // > 8x L2
  char* pool;
  float *q, *k, *v, *g, *o;
  int32_t* slots;
  CHECK(cudaMalloc(&pool, sets * set_bytes));
  CHECK(cudaMalloc(&q, size_t(B) * H * dk * 4));
  CHECK(cudaMalloc(&k, size_t(B) * H * dk * 4));
  CHECK(cudaMalloc(&g, size_t(B) * H * dk * 4));
  CHECK(cudaMalloc(&v, size_t(B) * H * dv * 4));
  CHECK(cudaMalloc(&o, size_t(B) * H * dv * 4));
  CHECK(cudaMalloc(&slots, size_t(sets) * B * 4));
  {
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    std::vector<float> host(size_t(B) * H * std::max(dk, dv));
    for (auto& x : host) x = u(rng);
    CHECK(cudaMemcpy(q, host.data(), size_t(B) * H * dk * 4, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(k, host.data(), size_t(B) * H * dk * 4, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(v, host.data(), size_t(B) * H * dv * 4, cudaMemcpyHostToDevice));
    for (auto& x : host) x = -0.05f * std::fabs(x);
    CHECK(cudaMemcpy(g, host.data(), size_t(B) * H * dk * 4, cudaMemcpyHostToDevice));
    std::vector<float> st(size_t(slot_values) * B);
    for (auto& x : st) x = u(rng);
    std::vector<uint16_t> st16(st.size());
    for (size_t i = 0; i < st.size(); ++i) st16[i] = gla::FloatToBFloat16(st[i]);
    const void* src = bf16 ? static_cast<const void*>(st16.data()) : st.data();
    for (int s = 0; s < sets; ++s) CHECK(cudaMemcpy(pool + s * set_bytes, src, set_bytes, cudaMemcpyHostToDevice));
    std::vector<int32_t> ids(size_t(sets) * B);
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i);
    CHECK(cudaMemcpy(slots, ids.data(), ids.size() * 4, cudaMemcpyHostToDevice));
  }
  auto params = [&](int set) {
    gla::GlaDecodeCudaParams p;
    p.N = B;
    p.H = H;
    p.Hkv = H;
    p.dk = dk;
    p.dv = dv;
    p.q = q;
    p.q_stride = int64_t{H} * dk;
    p.k = k;
    p.g = g;
    p.k_stride = p.g_stride = int64_t{H} * dk;
    p.v = v;
    p.v_stride = int64_t{H} * dv;
    p.o = o;
    p.o_stride = int64_t{H} * dv;
    p.state = {pool, slot_values, bf16};
    p.slots = slots + set * B;
    p.scale = 0.0625f;
    return p;
  };
  cudaStream_t stream;
  CHECK(cudaStreamCreate(&stream));
  constexpr int kLaunches = 100;
  for (int i = 0; i < 20; ++i) CHECK(gla::cuda::GlaDecodeStep(params(i % sets), stream));  // warm-up
  cudaEvent_t e0, e1;
  CHECK(cudaEventCreate(&e0));
  CHECK(cudaEventCreate(&e1));
  std::vector<float> stream_us;
  for (int rep = 0; rep < 7; ++rep) {  // back-to-back launches on a stream
    CHECK(cudaEventRecord(e0, stream));
    for (int i = 0; i < kLaunches; ++i) CHECK(gla::cuda::GlaDecodeStep(params(i % sets), stream));
    CHECK(cudaEventRecord(e1, stream));
    CHECK(cudaEventSynchronize(e1));
    float ms;
    CHECK(cudaEventElapsedTime(&ms, e0, e1));
    stream_us.push_back(1e3f * ms / kLaunches);
  }
  // The same launches captured once, as the engine does for decode steps (bench_util.h).
  const double graph_us = GraphLaunchUs(
      [&](int i, cudaStream_t s) { CHECK(gla::cuda::GlaDecodeStep(params(i % sets), s)); }, kLaunches, stream);
  for (void* ptr : {(void*)pool, (void*)q, (void*)k, (void*)v, (void*)g, (void*)o, (void*)slots}) CHECK(cudaFree(ptr));
  CHECK(cudaStreamDestroy(stream));
  return {Median(stream_us), static_cast<float>(graph_us)};
}

}  // namespace

int main() {
  gla::bench::BenchReport report("gla-decode", gla::bench::MeasureDeviceCeilings());
  report.PrintHeader();
  const double copy_bw = report.ceilings().copy_bytes_per_s;
  std::printf("GLA decode step, one layer, states read and written once, fp32 activations\n\n");
  std::printf("| heads (H, dk, dv) | states | B | stream us | graph us | state GB/s | of copy BW | floor us | fla anchor us | "
              "vs fla |\n");
  std::printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
  struct Case {
    const char* name;
    int H, dk, dv, B;
    double anchor_us;  // fla fused_recurrent_gla, same H100, 2026-11-22 (0: none)
  };
  const Case cases[] = {{"gla-1.3B (4, 256, 512)", 4, 256, 512, 1, 194}, {"gla-1.3B (4, 256, 512)", 4, 256, 512, 16, 183},
                        {"gla-1.3B (4, 256, 512)", 4, 256, 512, 64, 215}, {"gla-1.3B (4, 256, 512)", 4, 256, 512, 256, 499},
                        {"gla-340M (4, 128, 256)", 4, 128, 256, 1, 0},    {"gla-340M (4, 128, 256)", 4, 128, 256, 64, 0},
                        {"gla-340M (4, 128, 256)", 4, 128, 256, 256, 0}};
  for (const Case& c : cases) {
    for (int variant = 0; variant < 3; ++variant) {
      const bool bf16 = variant > 0, narrow = variant == 2;
      const char* states = variant == 0 ? "f32" : variant == 1 ? "bf16" : "bf16, 4-aligned";
      const Result r = TimeDecode(c.B, c.H, c.dk, c.dv, bf16, narrow);
      const double bytes = 2.0 * c.B * c.H * c.dk * c.dv * (bf16 ? 2 : 4);  // state read + write
      const double best = std::min(r.us_stream, r.us_graph);
      const double floor_us = bytes / copy_bw * 1e6;
      char anchor[64] = "-", vs[64] = "-";
      if (c.anchor_us > 0) {
        std::snprintf(anchor, sizeof anchor, "%.0f", c.anchor_us);
        std::snprintf(vs, sizeof vs, "%.1fx faster", c.anchor_us / best);
      }
      std::printf("| %s | %s | %d | %.2f | %.2f | %.0f | %.0f%% | %.2f | %s | %s |\n", c.name, states, c.B, r.us_stream,
                  r.us_graph, bytes / (best * 1e-6) / 1e9, 100.0 * bytes / (best * 1e-6) / copy_bw, floor_us, anchor, vs);
      report.AddRow()
          .Str("heads", c.name)
          .Str("states", states)
          .Num("B", c.B)
          .Num("stream_us", r.us_stream)
          .Num("graph_us", r.us_graph)
          .Num("floor_us", floor_us)
          .Num("of_floor", floor_us / best)
          .Num("fla_anchor_us", c.anchor_us);
    }
  }
  return report.WriteJsonIfAsked() ? 0 : 1;
}
