// The persistent decode kernels alone (kernels/persistent_decode.h: batch 1, and the batched kernel
// at 2-8 sequences) on random weights of the gla-340M and gla-1.3B shapes: time per step against the
// floor (weights once + every sequence's state read and written, over the copy bandwidth measured in
// the same run), then one traced step: per kind of operation, the time a block spends in it, at the
// grid barrier after it, and how far apart the blocks arrive there (where the step's time goes that
// is not the weight stream).
//
// --in_flight 0,2,3: each batch with the producer's weight tiles in flight capped at each value
// (PersistentDecodeParams::tiles_in_flight; 0: the whole ring; values past the ring are skipped);
// --tile_bytes 0,16384: and with each cap on a tile's bytes (PersistentDecodeParams::tile_bytes).
// --early_state 0,1: and with each block's first state item's loads issued after in_proj (0) or
// before it (1, the engine's: PersistentDecodeParams::early_state_loads).
// --tagged 0,1,2,3: and with x and act exchanged through grid barriers (0) or as tagged words (1:
// PersistentDecodeParams::tagged, every batch; 2: in_proj's values too, tagged_proj, batch 1 only, the
// engine's; 3: in_proj's values alone, x and act through barriers, batch 1 only; skipped where the
// shapes do not allow it).
// --blocks 0,66: and with each grid size (0: one block per SM, the engine's; fewer blocks make a grid
// barrier cheaper, fewer atomics on its counter, and each block's share of the stream larger).
//
//   persistent_decode_bench [--steps 50] [--batches 1,2,4,8] [--in_flight 1] [--tile_bytes 0] [--blocks 0]
//                           [--early_state 1] [--tagged 0]
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "kernels/persistent_decode.h"
#include "tests/cuda/bench_report.h"
#include "tests/cuda/bench_util.h"
#include "tests/cuda/device_ceilings.h"

namespace {

struct Shape {
  const char* name;
  int layers, D, I, H, dk, dv, rank, vocab;
};

__global__ void FillBf16(__nv_bfloat16* p, size_t n, float scale, unsigned seed) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n; i += size_t{gridDim.x} * blockDim.x) {
    unsigned h = static_cast<unsigned>(i) * 2654435761u ^ seed;
    h ^= h >> 13, h *= 0x5bd1e995u, h ^= h >> 15;
    p[i] = __float2bfloat16(scale * (static_cast<float>(h & 0xffff) / 32768.f - 1.f));
  }
}

__global__ void FillF32(float* p, size_t n, float scale, float offset, unsigned seed) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n; i += size_t{gridDim.x} * blockDim.x) {
    unsigned h = static_cast<unsigned>(i) * 2246822519u ^ seed;
    h ^= h >> 13, h *= 0x5bd1e995u, h ^= h >> 15;
    p[i] = offset + scale * (static_cast<float>(h & 0xffff) / 32768.f - 1.f);
  }
}

// The device buffers of the shape being timed, freed when its runs are done (Run's end): the second
// shape's runs would otherwise share the GPU with the first's weights, and every traced row's buffer.
std::vector<void*>& ShapeBuffers() {
  static std::vector<void*> buffers;
  return buffers;
}

template <typename T>
T* Alloc(size_t n) {
  T* p = nullptr;
  CHECK(cudaMalloc(&p, n * sizeof(T)));
  ShapeBuffers().push_back(p);
  return p;
}

void FreeShapeBuffers() {
  CHECK(cudaDeviceSynchronize());
  for (void* p : ShapeBuffers()) CHECK(cudaFree(p));
  ShapeBuffers().clear();
}

void RunBatch(const Shape& sh, const gla::cuda::PersistentDecodeParams& p, int steps,
              const gla::bench::DeviceCeilings& ceil, gla::bench::BenchReport& report, int blocks, double weight_bytes,
              size_t state_floats);

void Run(const Shape& sh, int steps, const std::vector<int>& batches, const std::vector<int>& in_flight,
         const std::vector<int>& tile_bytes, const std::vector<int>& grids, const std::vector<int>& early,
         const std::vector<int>& tagged, const gla::bench::DeviceCeilings& ceil,
         gla::bench::BenchReport& report, int sms) {
  const int max_batch = *std::max_element(batches.begin(), batches.end());
  const int P = 2 * sh.H * sh.dk + 2 * sh.H * sh.dv + sh.rank;  // q | k | v | g | gate low rank
  const size_t in_proj = size_t(P) * sh.D, o_proj = size_t(sh.D) * sh.H * sh.dv, gate_up = size_t(2) * sh.I * sh.D,
               down = size_t(sh.D) * sh.I, head = size_t(sh.vocab) * sh.D;
  const size_t per_layer = in_proj + o_proj + gate_up + down;
  const size_t state_floats = size_t(sh.layers) * sh.H * sh.dk * sh.dv;
  __nv_bfloat16* w = Alloc<__nv_bfloat16>(per_layer * sh.layers + head);
  FillBf16<<<1024, 256>>>(w, per_layer * sh.layers + head, 0.03f, 1);
  const size_t small_per_layer = 3 * size_t(sh.D) + sh.dv + size_t(sh.H) * sh.dk * (sh.rank + 1);
  float* f = Alloc<float>(small_per_layer * sh.layers + sh.D);
  FillF32<<<256, 256>>>(f, small_per_layer * sh.layers + sh.D, 0.1f, 1.f, 2);  // norms ~1
  float* state = Alloc<float>(state_floats * max_batch);  // a slot per sequence
  FillF32<<<1024, 256>>>(state, state_floats * max_batch, 0.01f, 0.f, 3);
  std::vector<gla::cuda::PersistentDecodeLayer> layers(sh.layers);
  for (int l = 0; l < sh.layers; ++l) {
    __nv_bfloat16* lw = w + l * per_layer;
    float* lf = f + l * small_per_layer;
    auto& L = layers[l];
    L.attn_norm = lf;
    L.mlp_norm = lf + sh.D;
    L.g_norm = lf + 2 * sh.D;
    L.gk1 = lf + 2 * sh.D + sh.dv;  // values ~1: gates near logsigmoid(rank) / 16
    L.gk1_bias = nullptr;
    L.in_proj = lw;
    L.o_proj = lw + in_proj;
    L.gate_up = lw + in_proj + o_proj;
    L.down = lw + in_proj + o_proj + gate_up;
    L.state_offset = int64_t(l) * sh.H * sh.dk * sh.dv;
  }
  auto* d_layers = Alloc<gla::cuda::PersistentDecodeLayer>(sh.layers);
  CHECK(cudaMemcpy(d_layers, layers.data(), layers.size() * sizeof(layers[0]), cudaMemcpyHostToDevice));
  std::vector<int32_t> slot_ids(max_batch);
  for (int i = 0; i < max_batch; ++i) slot_ids[i] = i;
  int32_t* slots = Alloc<int32_t>(max_batch);
  CHECK(cudaMemcpy(slots, slot_ids.data(), max_batch * sizeof(int32_t), cudaMemcpyHostToDevice));
  unsigned* barrier = Alloc<unsigned>(1);
  float* x = Alloc<float>(size_t(sh.D) * max_batch);
  FillF32<<<8, 256>>>(x, size_t(sh.D) * max_batch, 1.f, 0.f, 4);

  gla::cuda::PersistentDecodeParams p;
  p.layers = d_layers;
  p.num_layers = sh.layers;
  p.D = sh.D, p.I = sh.I, p.P = P;
  p.q_off = 0, p.k_off = sh.H * sh.dk, p.v_off = 2 * sh.H * sh.dk, p.g_off = p.v_off + sh.H * sh.dv;
  p.r_off = p.g_off + sh.H * sh.dv;
  p.H = p.Hkv = sh.H, p.dk = sh.dk, p.dv = sh.dv, p.rank = sh.rank;
  p.scale = 1.f / std::sqrt(float(sh.dk));
  p.gate_inv_normalizer = 1.f / 16;
  p.final_norm = f + small_per_layer * sh.layers;
  p.lm_head = w + per_layer * sh.layers;
  p.vocab = sh.vocab;
  p.state.base = state;
  p.state.slot_stride = int64_t(state_floats);
  p.slots = slots;
  p.x = x;
  p.proj = Alloc<float>(size_t(P) * max_batch);
  p.o = Alloc<float>(size_t(sh.H) * sh.dv * max_batch);
  p.o_sumsq = Alloc<float>(size_t(sh.H) * (sh.dv / 16) * max_batch);
  p.act = Alloc<__nv_bfloat16>(size_t(sh.I) * max_batch);
  p.logits = Alloc<float>(size_t(sh.vocab) * max_batch);
  p.barrier = barrier;
  const size_t words = size_t(max_batch) * (sh.D + sh.I) + P;  // PersistentTaggedWords at the largest batch
  unsigned long long* tagged_words = Alloc<unsigned long long>(words);
  CHECK(cudaMemset(tagged_words, 0, words * sizeof(unsigned long long)));
  for (const int tg : tagged)
  for (const int grid : grids)
    for (const int batch : batches)
      for (const int bytes : tile_bytes)
        for (const int n : in_flight)
          for (const int e : early) {
            if (tg >= 2 && batch > 1) continue;  // the batched kernel's tagged form is level 1's (no tagged_proj)
            p.blocks = grid == 0 || grid > sms ? sms : grid;  // more blocks than SMs cannot all be resident
            p.tagged = nullptr;
            p.tagged_proj = tg >= 2;
            p.tagged_residual = tg != 3;
            if (tg != 0) {
              if (!gla::cuda::PersistentTaggedExchangeSupported(p)) {
                std::printf("%-9s batch %d blocks %d: tagged exchanges skipped, the shapes do not allow them\n", sh.name,
                            batch, p.blocks);
                continue;
              }
              p.tagged = tagged_words;
            }
            p.batch = batch;
            p.tiles_in_flight = n;
            p.tile_bytes = bytes;
            p.early_state_loads = e != 0;
            if (n > gla::cuda::PersistentDecodeStages(p)) {  // past the ring: the kernel refuses it
              std::printf("%-9s batch %d in flight %d: skipped, the ring has %d stages\n", sh.name, batch, n,
                          gla::cuda::PersistentDecodeStages(p));
              continue;
            }
            RunBatch(sh, p, steps, ceil, report, p.blocks, double(per_layer * sh.layers + head) * 2, state_floats);
          }
  FreeShapeBuffers();
}

// How a row's exchanges went: barriers, or which values as tagged words.
const char* TaggedLabel(const gla::cuda::PersistentDecodeParams& p) {
  if (p.tagged == nullptr) return "";
  return !p.tagged_proj ? " tagged" : p.tagged_residual ? " tagged+proj" : " tagged proj only";
}

// One batch size: the timed steps, then one traced step.
void RunBatch(const Shape& sh, const gla::cuda::PersistentDecodeParams& p, int steps,
              const gla::bench::DeviceCeilings& ceil, gla::bench::BenchReport& report, int blocks, double weight_bytes,
              size_t state_floats) {
  if (!gla::cuda::PersistentDecodeShapesSupported(p)) {
    std::printf("%s batch %d blocks %d: shapes not supported\n", sh.name, p.batch, blocks);
    return;
  }
  unsigned* barrier = p.barrier;
  if (p.tagged != nullptr)  // words past what earlier runs' steps wrote: zeroed (PersistentTaggedWords)
    CHECK(cudaMemset(p.tagged, 0, size_t(gla::cuda::PersistentTaggedWords(p)) * sizeof(*p.tagged)));
  const double bytes = weight_bytes + 2.0 * state_floats * 4 * p.batch;
  const double floor_us = ceil.BytesSeconds(bytes) * 1e6;
  cudaEvent_t t0, t1;
  CHECK(cudaEventCreate(&t0));
  CHECK(cudaEventCreate(&t1));
  auto step = [&](const gla::cuda::PersistentDecodeParams& q) {
    static unsigned launches = 0;  // every launch its own step number (the tagged exchanges' tags)
    gla::cuda::PersistentDecodeParams r = q;
    r.step = ++launches;
    CHECK(cudaMemsetAsync(barrier, 0, sizeof(unsigned)));
    CHECK(gla::cuda::PersistentDecodeStep(r, nullptr));
  };
  for (int i = 0; i < 3; ++i) step(p);
  CHECK(cudaEventRecord(t0));
  for (int i = 0; i < steps; ++i) step(p);
  CHECK(cudaEventRecord(t1));
  CHECK(cudaEventSynchronize(t1));
  float ms = 0;
  CHECK(cudaEventElapsedTime(&ms, t0, t1));
  const double us = 1e3 * ms / steps;
  std::printf(
      "%-9s batch %d in flight %d tile %5d blocks %3d%s%s %9.1f us/step  floor %7.1f us  %5.1f%% of floor  (%.2f GB/step)\n",
      sh.name, p.batch, p.tiles_in_flight, p.tile_bytes, blocks, p.early_state_loads ? " early" : "",
      TaggedLabel(p), us, floor_us, 100 * floor_us / us,
      bytes / 1e9);
  report.AddRow()
      .Str("shape", sh.name)
      .Num("batch", p.batch)
      .Num("tiles_in_flight", p.tiles_in_flight)
      .Num("tile_bytes", p.tile_bytes)
      .Num("blocks", blocks)
      .Num("early_state_loads", p.early_state_loads ? 1 : 0)
      .Num("tagged_exchange", p.tagged == nullptr ? 0 : !p.tagged_proj ? 1 : p.tagged_residual ? 2 : 3)
      .Num("us_per_step", us)
      .Num("floor_us", floor_us)
      .Num("of_floor", floor_us / us);
  // One traced step.
  const int entries = 5 * sh.layers + 2;
  unsigned long long* trace = Alloc<unsigned long long>(size_t(entries) * blocks * 2);
  gla::cuda::PersistentDecodeParams q = p;
  q.trace = trace;
  step(q);
  CHECK(cudaDeviceSynchronize());
  std::vector<unsigned long long> t(size_t(entries) * blocks * 2);
  CHECK(cudaMemcpy(t.data(), trace, t.size() * sizeof(t[0]), cudaMemcpyDeviceToHost));
  auto at = [&](int e, int b, int k) { return double(t[(size_t(e) * blocks + b) * 2 + k]); };
  const char* kinds[] = {"in_proj (+norm)", "state update", "o_proj (+gate norm)", "gate|up (+norm)", "down (+act)"};
  double total_work[5] = {}, total_wait[5] = {}, total_skew[5] = {};
  for (int l = 0; l < sh.layers; ++l)
    for (int k = 0; k < 5; ++k) {
      const int e = 5 * l + k + 1;
      double lo = 1e300, hi = 0;
      for (int b = 0; b < blocks; ++b) {
        total_work[k] += at(e, b, 0) - at(e - 1, b, 1);
        total_wait[k] += at(e, b, 1) - at(e, b, 0);
        lo = std::min(lo, at(e, b, 0));
        hi = std::max(hi, at(e, b, 0));
      }
      total_skew[k] += hi - lo;
    }
  double start = 1e300, end = 0, head_ns = 0;
  for (int b = 0; b < blocks; ++b) {
    start = std::min(start, at(0, b, 0));
    end = std::max(end, at(entries - 1, b, 0));
    head_ns += at(entries - 1, b, 0) - at(entries - 2, b, 1);
  }
  std::printf("%-9s batch %d in flight %d tile %5d blocks %3d%s%s traced step %.1f us: per operation, summed over "
              "%d layers, mean over blocks\n",
              sh.name, p.batch, p.tiles_in_flight, p.tile_bytes, blocks, p.early_state_loads ? " early" : "",
              TaggedLabel(p), (end - start) / 1e3, sh.layers);
  std::printf("  %-22s %10s %12s %14s\n", "operation", "work us", "barrier us", "arrival spread");
  for (int k = 0; k < 5; ++k)
    std::printf("  %-22s %10.1f %12.1f %14.1f\n", kinds[k], total_work[k] / blocks / 1e3, total_wait[k] / blocks / 1e3,
                total_skew[k] / 1e3);
  std::printf("  %-22s %10.1f\n", "final norm + lm_head", head_ns / blocks / 1e3);
}

}  // namespace

int main(int argc, char** argv) {
  int steps = 50;
  std::vector<int> batches = {1}, in_flight = {1}, tile_bytes = {0}, grids = {0}, early = {1}, tagged = {0};  // the engine's
  auto usage = [] {
    std::fprintf(stderr,
                 "usage: persistent_decode_bench [--steps N (1-100000)] [--batches 1,2,4,8 (each 1-%d)] "
                 "[--in_flight 0,2,3 (each 0-16)] [--tile_bytes 0,65536 (each 0 or 2048-98304, whole KiB)] "
                 "[--blocks 0,66 (each 0-1024; 0: one per SM)] [--early_state 0,1] [--tagged 0,1,2,3]\n",
                 gla::cuda::kPersistentMaxBatch);
    return 2;
  };
  // A comma-separated list of integers in [lo, hi]; false (and `out` unspecified) for anything else.
  auto parse_list = [](const char* s, int lo, int hi, std::vector<int>& out) {
    out.clear();
    while (*s != '\0') {
      char* end = nullptr;
      const long v = std::strtol(s, &end, 10);
      if (end == s || v < lo || v > hi || (*end != ',' && *end != '\0')) return false;
      out.push_back(static_cast<int>(v));
      s = *end == ',' ? end + 1 : end;
    }
    return !out.empty();
  };
  for (int i = 1; i < argc; i += 2) {
    const std::string f = argv[i];
    if (i + 1 >= argc) return usage();
    if (f == "--steps") {
      if ((steps = std::atoi(argv[i + 1])) < 1 || steps > 100000) return usage();
    } else if (f == "--batches") {
      if (!parse_list(argv[i + 1], 1, gla::cuda::kPersistentMaxBatch, batches)) return usage();
    } else if (f == "--in_flight") {
      if (!parse_list(argv[i + 1], 0, gla::cuda::kPersistentMaxTilesInFlight, in_flight)) return usage();
    } else if (f == "--tile_bytes") {
      if (!parse_list(argv[i + 1], 0, gla::cuda::kPersistentMaxTileBytes, tile_bytes)) return usage();
      for (const int b : tile_bytes)
        if (!gla::cuda::PersistentTileBytesValid(b)) return usage();
    } else if (f == "--tagged") {
      if (!parse_list(argv[i + 1], 0, 3, tagged)) return usage();
    } else if (f == "--early_state") {
      if (!parse_list(argv[i + 1], 0, 1, early)) return usage();
    } else if (f == "--blocks") {
      if (!parse_list(argv[i + 1], 0, gla::cuda::kPersistentMaxBlocks, grids)) return usage();
    } else {
      return usage();
    }
  }
  const int sms = gla::cuda::PersistentDecodeBlocks(0);
  if (sms == 0) {
    std::printf("persistent_decode_bench: skipped: this device cannot run the persistent kernel (needs Hopper)\n");
    return 0;
  }
  gla::bench::BenchReport report("persistent_decode", gla::bench::MeasureDeviceCeilings());
  report.PrintHeader();
  const Shape shapes[] = {{"gla-340M", 24, 1024, 2816, 4, 128, 256, 16, 32000},
                          {"gla-1.3B", 24, 2048, 5632, 4, 256, 512, 16, 32000}};
  for (const Shape& sh : shapes) Run(sh, steps, batches, in_flight, tile_bytes, grids, early, tagged, report.ceilings(), report, sms);
  return 0;
}
