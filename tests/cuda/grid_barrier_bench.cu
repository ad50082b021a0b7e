// What one grid-wide barrier costs a persistent kernel (issue 19: the batch-1 persistent decode
// kernel spends 120 of them a step, 1.5-2 us each, 22-38% of its time), for the ways one can be
// built from release/acquire operations on global memory, next to the floor a barrier cannot beat:
// the L2 round trip (a dependent chain of L2 loads measured in the same run), since every block must
// make its arrival visible in L2 and see everyone else's there.
//
// One block per SM (cooperative launch, as the persistent kernel), 256 threads that synchronise.
// Between barriers every block stores 64 floats to L2 and after each barrier checks what a
// neighbour stored before it (so a barrier that fails to order memory shows up as errors, not as a
// fast time). Each variant runs idle and under load: 256 more threads per block stream a 2 GiB
// buffer from HBM all along (the persistent kernel's weight stream runs through its barriers).
//
// Variants:
//   counter-acquire  thread 0: red.release.gpu.add on one counter, then ld.acquire.gpu polls until
//                    it reaches index * G (the persistent kernel's GridSync as of 2026-12-04)
//   counter-relaxed  the same arrival, relaxed polls, one fence.acq_rel.gpu after the last
//   last-arriver     atom.add.acq_rel returns the count; the last block stores the barrier's index
//                    to a flag with release semantics, the others poll that flag (relaxed + fence)
//   flags-all-read   no atomics: each block stores index to its own 128-byte flag (release); warp 0
//                    polls every block's flag (one lane per block) until all have it (relaxed + fence)
//   flags-packed     no atomics: each block stores index to its own word of one packed array
//                    (release); threads 0 .. G-1 each poll one block's word at once (acquire), so a
//                    poll round is a handful of 128-byte lines
//
// Then what the persistent kernel does at most of its barriers: every block writes its share of a
// vector of --exchange floats (1.3B's residual stream: 2,048) and every block reads all of it after
// (the next operation's input row). Exchange variants, each checking every value it reads:
//   exchange counter-acquire / exchange flags-packed  the share stored with st.global.cg, the barrier
//                    above, then all 256 threads load the whole vector (ld.global.cg)
//   exchange tagged  no barrier: each value travels with its tag in one 64-bit word (value bits, the
//                    exchange's index; st.relaxed.gpu), and readers load the whole vector with
//                    ld.relaxed.gpu, reloading any word whose tag is not yet this exchange's (NCCL's
//                    low-latency protocol): the synchronisation and the data in one trip. Two
//                    buffers alternate, so a block writing exchange i + 1 never overwrites what a
//                    slower one still waits on (it has read all of exchange i, so everyone wrote it).
//
//   grid_barrier_bench [--barriers 4096] [--exchange 2048]
#include <cuda_runtime.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "tests/cuda/bench_report.h"
#include "tests/cuda/bench_util.h"
#include "tests/cuda/device_ceilings.h"

namespace {

enum Kind { kCounterAcquire, kCounterRelaxed, kLastArriver, kFlagsAllRead, kFlagsPacked, kKinds };
const char* const kKindNames[kKinds] = {"counter-acquire", "counter-relaxed", "last-arriver", "flags-all-read",
                                        "flags-packed"};

constexpr int kThreads = 256;  // the threads that synchronise; under load as many more stream
constexpr int kPayload = 64;    // floats a block stores between barriers
constexpr int kFlagStride = 32;  // unsigned: one 128-byte line per block's flag

struct Sync {
  unsigned* counter;
  unsigned* flags;  // [G * kFlagStride]; flags-packed: [G]
  float* data;      // [2][G][kPayload]
  unsigned* errors;
  float* vec;                     // the exchanged vector, [2][exchange]
  unsigned long long* tagged;     // the same as tagged words, [2][exchange]
};

__device__ __forceinline__ unsigned LoadRelaxed(const unsigned* p) {
  unsigned v;
  asm volatile("ld.relaxed.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ unsigned LoadAcquire(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ void FenceAcqRel() { asm volatile("fence.acq_rel.gpu;" ::: "memory"); }

// The synchronising threads only (the streaming ones never join).
__device__ __forceinline__ void SyncThreads() { asm volatile("bar.sync 1, %0;" ::"n"(kThreads) : "memory"); }

template <int K>
__device__ __forceinline__ void Barrier(const Sync& s, unsigned index) {
  SyncThreads();  // the block's stores happen before thread 0's release (cumulative through bar.sync)
  const unsigned G = gridDim.x;
  if constexpr (K == kCounterAcquire || K == kCounterRelaxed) {
    if (threadIdx.x == 0) {
      asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(s.counter) : "memory");
      if constexpr (K == kCounterAcquire) {
        while (LoadAcquire(s.counter) < index * G) {
        }
      } else {
        while (LoadRelaxed(s.counter) < index * G) {
        }
        FenceAcqRel();
      }
    }
  } else if constexpr (K == kLastArriver) {
    if (threadIdx.x == 0) {
      unsigned old;
      asm volatile("atom.acq_rel.gpu.global.add.u32 %0, [%1], 1;" : "=r"(old) : "l"(s.counter) : "memory");
      if (old == index * G - 1) {
        asm volatile("st.release.gpu.global.u32 [%0], %1;" ::"l"(s.flags), "r"(index) : "memory");
      } else {
        while (LoadRelaxed(s.flags) < index) {
        }
        FenceAcqRel();
      }
    }
  } else if constexpr (K == kFlagsPacked) {
    if (threadIdx.x == 0)
      asm volatile("st.release.gpu.global.u32 [%0], %1;" ::"l"(s.flags + blockIdx.x), "r"(index) : "memory");
    for (unsigned j = threadIdx.x; j < G; j += kThreads)
      while (LoadAcquire(s.flags + j) < index) {
      }
  } else {
    if (threadIdx.x < 32) {
      if (threadIdx.x == 0)
        asm volatile("st.release.gpu.global.u32 [%0], %1;" ::"l"(s.flags + blockIdx.x * kFlagStride), "r"(index)
                     : "memory");
      bool all = false;
      while (!all) {
        bool mine = true;
        for (unsigned j = threadIdx.x; j < G; j += 32) mine &= LoadRelaxed(s.flags + j * kFlagStride) >= index;
        all = __all_sync(0xffffffffu, mine);
      }
      FenceAcqRel();
    }
  }
  SyncThreads();
}

// Reads `n` uint4 of `src` over and over until *done (shared) is set; the sum keeps the loads.
__device__ void Stream(const uint4* src, size_t n, const volatile int* done, unsigned* sink) {
  const size_t stride = size_t{gridDim.x} * kThreads;
  size_t i = size_t{blockIdx.x} * kThreads + (threadIdx.x - kThreads);
  unsigned acc = 0;
  while (!*done) {
    uint4 v[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) v[u] = __ldcs(src + (i + u * stride) % n);
#pragma unroll
    for (int u = 0; u < 4; ++u) acc ^= v[u].x ^ v[u].w;
    i = (i + 4 * stride) % n;
  }
  if (acc == 0x9e3779b9u) *sink = acc;
}

// Both loops' first lines: under load the threads past kThreads stream (Stream) until the
// synchronising ones are done (StopStreaming); returns whether this thread is a synchronising one.
template <bool kLoaded>
__device__ __forceinline__ bool Synchronising(int& done, const Sync& s, const uint4* load, size_t load_n) {
  if (threadIdx.x == 0) done = 0;
  __syncthreads();
  if (kLoaded && threadIdx.x >= kThreads) {
    Stream(load, load_n, &done, s.errors + 1);
    return false;
  }
  return true;
}

__device__ __forceinline__ void StopStreaming(int& done) {
  SyncThreads();
  if (threadIdx.x == 0) *static_cast<volatile int*>(&done) = 1;
}

template <int K, bool kLoaded>
__global__ void __launch_bounds__(2 * kThreads, 1) BarrierLoop(Sync s, int barriers, const uint4* load, size_t load_n) {
  __shared__ int done;
  if (!Synchronising<kLoaded>(done, s, load, load_n)) return;
  const unsigned G = gridDim.x, b = blockIdx.x;
  for (int i = 1; i <= barriers; ++i) {
    float* out = s.data + (static_cast<size_t>(i % 2) * G + b) * kPayload;
    if (threadIdx.x < kPayload) __stcg(out + threadIdx.x, static_cast<float>(i) + threadIdx.x);
    Barrier<K>(s, static_cast<unsigned>(i));
    const unsigned nb = (b + 1 + static_cast<unsigned>(i) % (G - 1)) % G;  // another block
    const float* in = s.data + (static_cast<size_t>(i % 2) * G + nb) * kPayload;
    if (threadIdx.x < kPayload && __ldcg(in + threadIdx.x) != static_cast<float>(i) + threadIdx.x)
      atomicAdd(s.errors, 1u);
    // The next barrier's stores go to the other half: a block still reading this half is never
    // overwritten before everyone has passed the next barrier.
  }
  StopStreaming(done);
}

// The exchanges: K a barrier kind (the share stored plainly, the barrier, the vector read), or
// kKinds for the tagged words. Each value is index + its position (exact in fp32 for these sizes).
constexpr int kTagged = kKinds;

__device__ __forceinline__ float Expected(unsigned index, int j) { return static_cast<float>(index) + j; }

template <int K, bool kLoaded>
__global__ void __launch_bounds__(2 * kThreads, 1)
    ExchangeLoop(Sync s, int exchanges, int n, const uint4* load, size_t load_n) {
  __shared__ int done;
  if (!Synchronising<kLoaded>(done, s, load, load_n)) return;
  const int G = static_cast<int>(gridDim.x), b = static_cast<int>(blockIdx.x);
  const int j0 = static_cast<int>(int64_t{n} * b / G), j1 = static_cast<int>(int64_t{n} * (b + 1) / G);
  unsigned bad = 0;
  float sum = 0.f;  // keeps the reads
  for (int i = 1; i <= exchanges; ++i) {
    const unsigned index = static_cast<unsigned>(i);
    if constexpr (K == kTagged) {
      unsigned long long* buf = s.tagged + static_cast<size_t>(i % 2) * n;
      for (int j = j0 + static_cast<int>(threadIdx.x); j < j1; j += kThreads) {
        const unsigned long long word =
            (static_cast<unsigned long long>(index) << 32) | __float_as_uint(Expected(index, j));
        asm volatile("st.relaxed.gpu.global.b64 [%0], %1;" ::"l"(buf + j), "l"(word) : "memory");
      }
      // Eight words a thread in flight at once, then only those not yet tagged loaded again.
      constexpr int kPer = 8;
      for (int base = 0; base < n; base += kPer * kThreads) {
        unsigned long long word[kPer];
        auto load = [&](int u) {
          const int j = base + u * kThreads + static_cast<int>(threadIdx.x);
          if (j < n) asm volatile("ld.relaxed.gpu.global.b64 %0, [%1];" : "=l"(word[u]) : "l"(buf + j) : "memory");
          else word[u] = static_cast<unsigned long long>(index) << 32;
        };
#pragma unroll
        for (int u = 0; u < kPer; ++u) load(u);
        for (bool ready = false; !ready;) {
          ready = true;
#pragma unroll
          for (int u = 0; u < kPer; ++u)
            if (static_cast<unsigned>(word[u] >> 32) != index) {
              ready = false;
              load(u);
            }
        }
#pragma unroll
        for (int u = 0; u < kPer; ++u) {
          const int j = base + u * kThreads + static_cast<int>(threadIdx.x);
          if (j >= n) continue;
          const float v = __uint_as_float(static_cast<unsigned>(word[u]));
          bad += v != Expected(index, j);
          sum += v;
        }
      }
      SyncThreads();  // the block's row complete (the kernel's input row in shared memory)
    } else {
      float* buf = s.vec + static_cast<size_t>(i % 2) * n;
      for (int j = j0 + static_cast<int>(threadIdx.x); j < j1; j += kThreads) __stcg(buf + j, Expected(index, j));
      Barrier<K>(s, index);
#pragma unroll 8  // the loads in flight together, as the tagged reads'
      for (int j = static_cast<int>(threadIdx.x); j < n; j += kThreads) {
        const float v = __ldcg(buf + j);
        bad += v != Expected(index, j);
        sum += v;
      }
      SyncThreads();
    }
  }
  if (bad != 0) atomicAdd(s.errors, bad);
  if (sum == -1.f) s.errors[1] = 1;
  StopStreaming(done);
}

// One thread follows a random cycle of 128-byte lines in a buffer that fits L2: the L2 round trip.
__global__ void Chase(const unsigned* next, int steps, unsigned* sink) {
  unsigned i = 0;
  for (int k = 0; k < steps; ++k) i = __ldcg(next + i);
  *sink = i;
}

// exchange 0: BarrierLoop; else ExchangeLoop over a vector of that many floats.
template <int K, bool kLoaded>
double TimeBarriers(const Sync& s, int G, int barriers, const uint4* load, size_t load_n, cudaStream_t stream,
                    int exchange = 0) {
  int n = barriers, width = exchange;
  void* args[] = {const_cast<Sync*>(&s), &n, &load, &load_n};
  void* exchange_args[] = {const_cast<Sync*>(&s), &n, &width, &load, &load_n};
  cudaEvent_t a, z;
  CHECK(cudaEventCreate(&a));
  CHECK(cudaEventCreate(&z));
  double best = 1e30;
  for (int rep = 0; rep < 5; ++rep) {
    CHECK(cudaMemsetAsync(s.counter, 0, sizeof(unsigned), stream));
    CHECK(cudaMemsetAsync(s.flags, 0, sizeof(unsigned) * G * kFlagStride, stream));
    if (exchange > 0) CHECK(cudaMemsetAsync(s.tagged, 0, sizeof(unsigned long long) * 2 * exchange, stream));
    CHECK(cudaEventRecord(a, stream));
    if (exchange > 0)
      CHECK(cudaLaunchCooperativeKernel(reinterpret_cast<void*>(ExchangeLoop<K, kLoaded>), G,
                                        kLoaded ? 2 * kThreads : kThreads, exchange_args, 0, stream));
    else
      CHECK(cudaLaunchCooperativeKernel(reinterpret_cast<void*>(BarrierLoop<K, kLoaded>), G,
                                        kLoaded ? 2 * kThreads : kThreads, args, 0, stream));
    CHECK(cudaEventRecord(z, stream));
    CHECK(cudaEventSynchronize(z));
    float ms = 0;
    CHECK(cudaEventElapsedTime(&ms, a, z));
    best = std::min(best, double{ms} * 1e3);
  }
  CHECK(cudaEventDestroy(a));
  CHECK(cudaEventDestroy(z));
  return best;  // us
}

template <int K, bool kLoaded>
void Measure(const Sync& s, int G, int barriers, const uint4* load, size_t load_n, cudaStream_t stream, double l2_us,
             gla::bench::BenchReport& report) {
  CHECK(cudaMemset(s.errors, 0, sizeof(unsigned)));
  const int few = 64;
  const double t_few = TimeBarriers<K, kLoaded>(s, G, few, load, load_n, stream);
  const double t_many = TimeBarriers<K, kLoaded>(s, G, barriers, load, load_n, stream);
  const double per = (t_many - t_few) / (barriers - few);
  unsigned errors = 0;
  CHECK(cudaMemcpy(&errors, s.errors, sizeof errors, cudaMemcpyDeviceToHost));
  const char* load_name = kLoaded ? "HBM stream" : "idle";
  std::printf("| %-16s | %-10s | %5d | %8.3f | %6.2f | %u |\n", kKindNames[K], load_name, G, per, per / l2_us, errors);
  report.AddRow()
      .Str("variant", kKindNames[K])
      .Str("load", load_name)
      .Num("blocks", G)
      .Num("us_per_barrier", per)
      .Num("l2_round_trips", per / l2_us)
      .Num("ordering_errors", errors);
}

// One exchange of `exchange` floats (see ExchangeLoop), idle and under load.
template <int K>
void MeasureExchange(const Sync& s, int G, int barriers, int exchange, const uint4* load, size_t load_n,
                     cudaStream_t stream, double l2_us, gla::bench::BenchReport& report) {
  const std::string name = std::string("exchange ") + (K == kTagged ? "tagged" : kKindNames[K]);
  for (const bool loaded : {false, true}) {
    CHECK(cudaMemset(s.errors, 0, sizeof(unsigned)));
    const int few = 64;
    auto time = [&](int n) {
      return loaded ? TimeBarriers<K, true>(s, G, n, load, load_n, stream, exchange)
                    : TimeBarriers<K, false>(s, G, n, load, load_n, stream, exchange);
    };
    const double per = (time(barriers) - time(few)) / (barriers - few);
    unsigned errors = 0;
    CHECK(cudaMemcpy(&errors, s.errors, sizeof errors, cudaMemcpyDeviceToHost));
    const char* load_name = loaded ? "HBM stream" : "idle";
    std::printf("| %-16s | %-10s | %5d | %8.3f | %6.2f | %u |\n", name.c_str(), load_name, G, per, per / l2_us,
                errors);
    report.AddRow()
        .Str("variant", name)
        .Str("load", load_name)
        .Num("blocks", G)
        .Num("floats", exchange)
        .Num("us_per_barrier", per)
        .Num("l2_round_trips", per / l2_us)
        .Num("ordering_errors", errors);
  }
}

template <int K>
void MeasureBoth(const Sync& s, int G, int barriers, const uint4* load, size_t load_n, cudaStream_t stream,
                 double l2_us, gla::bench::BenchReport& report) {
  Measure<K, false>(s, G, barriers, load, load_n, stream, l2_us, report);
  Measure<K, true>(s, G, barriers, load, load_n, stream, l2_us, report);
}

}  // namespace

int main(int argc, char** argv) {
  int barriers = 4096, exchange = 2048;
  // A whole decimal number in [lo, hi], or false (overflow, trailing text, out of range).
  auto parse = [](const char* s, long lo, long hi, int* out) {
    char* end = nullptr;
    errno = 0;
    const long v = std::strtol(s, &end, 10);
    if (end == s || *end != '\0' || errno != 0 || v < lo || v > hi) return false;
    *out = static_cast<int>(v);
    return true;
  };
  for (int i = 1; i < argc; ++i) {
    const bool has_value = i + 1 < argc;
    if (std::strcmp(argv[i], "--barriers") == 0 && has_value && parse(argv[i + 1], 128, 1000000, &barriers)) {
      ++i;
    } else if (std::strcmp(argv[i], "--exchange") == 0 && has_value && parse(argv[i + 1], 1, 65536, &exchange)) {
      ++i;
    } else {
      std::fprintf(stderr, "usage: grid_barrier_bench [--barriers N (128-1000000)] [--exchange FLOATS (1-65536)]\n");
      return 2;
    }
  }
  gla::bench::BenchReport report("grid_barrier_bench", gla::bench::MeasureDeviceCeilings());
  report.PrintHeader();
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  int per_sm = 0;
  CHECK(
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, BarrierLoop<kCounterAcquire, true>, 2 * kThreads, 0));
  if (!prop.cooperativeLaunch || per_sm < 1) {
    std::fprintf(stderr, "grid_barrier_bench: no cooperative launch on this device\n");
    return 1;
  }
  const int G = prop.multiProcessorCount;
  cudaStream_t stream;
  CHECK(cudaStreamCreate(&stream));

  // The L2 round trip: 16 MiB of 128-byte lines in one random cycle, 200k dependent loads.
  const int lines = (16 << 20) / 128, steps = 200000;
  std::vector<unsigned> order(lines), next(static_cast<size_t>(lines) * 32, 0);
  std::iota(order.begin(), order.end(), 0u);
  std::shuffle(order.begin() + 1, order.end(), std::mt19937(7));
  for (int i = 0; i < lines; ++i) next[order[i] * 32u] = order[(i + 1) % lines] * 32u;
  unsigned *d_next, *sink;
  CHECK(cudaMalloc(&d_next, next.size() * sizeof(unsigned)));
  CHECK(cudaMalloc(&sink, sizeof(unsigned)));
  CHECK(cudaMemcpy(d_next, next.data(), next.size() * sizeof(unsigned), cudaMemcpyHostToDevice));
  Chase<<<1, 1, 0, stream>>>(d_next, lines, sink);  // warm: every line into L2
  cudaEvent_t a, z;
  CHECK(cudaEventCreate(&a));
  CHECK(cudaEventCreate(&z));
  double l2_us = 1e30;
  for (int rep = 0; rep < 3; ++rep) {
    CHECK(cudaEventRecord(a, stream));
    Chase<<<1, 1, 0, stream>>>(d_next, steps, sink);
    CHECK(cudaEventRecord(z, stream));
    CHECK(cudaEventSynchronize(z));
    float ms = 0;
    CHECK(cudaEventElapsedTime(&ms, a, z));
    l2_us = std::min(l2_us, double{ms} * 1e3 / steps);
  }
  std::printf("# L2 round trip (one thread, dependent ld.global.cg over 16 MiB): %.3f us\n", l2_us);
  report.AddRow().Str("variant", "l2-round-trip").Num("us", l2_us);

  Sync s{};
  CHECK(cudaMalloc(&s.counter, sizeof(unsigned)));
  CHECK(cudaMalloc(&s.flags, sizeof(unsigned) * G * kFlagStride));
  CHECK(cudaMalloc(&s.data, sizeof(float) * 2 * G * kPayload));
  CHECK(cudaMalloc(&s.errors, 2 * sizeof(unsigned)));
  CHECK(cudaMalloc(&s.vec, sizeof(float) * 2 * exchange));
  CHECK(cudaMalloc(&s.tagged, sizeof(unsigned long long) * 2 * exchange));
  const size_t load_n = (size_t{2} << 30) / sizeof(uint4);
  uint4* load = nullptr;
  CHECK(cudaMalloc(&load, load_n * sizeof(uint4)));
  CHECK(cudaMemset(load, 1, load_n * sizeof(uint4)));
  std::printf("| variant | load | blocks | us per barrier | L2 round trips | ordering errors |\n"
              "| --- | --- | --- | --- | --- | --- |\n");
  MeasureBoth<kCounterAcquire>(s, G, barriers, load, load_n, stream, l2_us, report);
  MeasureBoth<kCounterRelaxed>(s, G, barriers, load, load_n, stream, l2_us, report);
  MeasureBoth<kLastArriver>(s, G, barriers, load, load_n, stream, l2_us, report);
  MeasureBoth<kFlagsAllRead>(s, G, barriers, load, load_n, stream, l2_us, report);
  MeasureBoth<kFlagsPacked>(s, G, barriers, load, load_n, stream, l2_us, report);
  std::printf("\nExchanges of %d floats (each block writes its share, every block reads them all):\n\n"
              "| variant | load | blocks | us per exchange | L2 round trips | wrong values |\n"
              "| --- | --- | --- | --- | --- | --- |\n",
              exchange);
  MeasureExchange<kCounterAcquire>(s, G, barriers, exchange, load, load_n, stream, l2_us, report);
  MeasureExchange<kFlagsPacked>(s, G, barriers, exchange, load, load_n, stream, l2_us, report);
  MeasureExchange<kTagged>(s, G, barriers, exchange, load, load_n, stream, l2_us, report);
  report.WriteJsonIfAsked();
  return 0;
}
