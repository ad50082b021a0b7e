// What the two persistent decode kernels share (persistent_decode.cu: batch 1 on CUDA cores;
// persistent_decode_batched.cu: batch 2-8 on tensor cores): the sm_90 PTX they are built from
// (mbarrier transactions, bulk asynchronous copies, release/acquire on global memory), the grid
// barrier, the tagged words that replace some of its uses (PersistentDecodeParams::tagged), the gate
// norm of one head, and the step's matrices in the order the weight stream walks
// them.
//
// Block layout in both: warps 0-7 consume, warp 8 produces (kernels/persistent_decode.h).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/persistent_decode.h"

namespace gla::cuda::persistent {

constexpr int kConsumerWarps = 8;
constexpr int kConsumers = kConsumerWarps * 32;
constexpr int kThreads = kConsumers + 32;  // + the producer warp

// ---- PTX wrappers (sm_90: mbarrier transactions, bulk copies, acquire/release) ----

__device__ __forceinline__ unsigned SmemAddr(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// The consumer warps' own barrier (named barrier 1): the producer warp never joins one, so the
// weight stream runs on while the consumers wait.
__device__ __forceinline__ void ConsumerSync() { asm volatile("bar.sync 1, %0;" ::"n"(kConsumers) : "memory"); }

__device__ __forceinline__ void MbarInit(unsigned long long* bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(SmemAddr(bar)), "r"(count) : "memory");
}

__device__ __forceinline__ void MbarExpectTx(unsigned long long* bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(SmemAddr(bar)), "r"(bytes) : "memory");
}

__device__ __forceinline__ void MbarArrive(unsigned long long* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(SmemAddr(bar)) : "memory");
}

__device__ __forceinline__ void MbarWait(unsigned long long* bar, unsigned parity) {
  unsigned done = 0;
  do {
    asm volatile(
        "{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
        : "=r"(done)
        : "r"(SmemAddr(bar)), "r"(parity)
        : "memory");
  } while (done == 0);
}

// Global -> shared, `bytes` (a multiple of 16, 16-byte aligned both sides), completing on `bar`.
// Weights are read once per step: evict them from L2 first (the activations stay).
__device__ __forceinline__ void BulkCopy(void* dst, const void* src, unsigned bytes, unsigned long long* bar,
                                         unsigned long long policy) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], %4;" ::"r"(
          SmemAddr(dst)),
      "l"(src), "r"(bytes), "r"(SmemAddr(bar)), "l"(policy)
      : "memory");
}

__device__ __forceinline__ unsigned long long EvictFirstPolicy() {
  unsigned long long policy;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
  return policy;
}

__device__ __forceinline__ unsigned long long GlobalTimer() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t));
  return t;
}

// The stage barriers' set-up, by thread 0 before the block's first __syncthreads: `full[i]` waits
// for the producer's one arrival (with its transaction bytes), `empty[i]` for every consumer warp.
__device__ __forceinline__ void InitStageBarriers(unsigned long long* full, unsigned long long* empty, int stages) {
  for (int i = 0; i < stages; ++i) {
    MbarInit(&full[i], 1);
    MbarInit(&empty[i], kConsumerWarps);
  }
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}

// Every block's consumers arrive at barrier `index` (1, 2, ...); returns once all G have. With a
// trace buffer, thread 0 records when it arrived and when it left (PersistentDecodeParams::trace) at
// entry `entry` (0: `index`; the batch-1 kernel's tagged exchanges take entries between barriers).
// One counter: thread 0 adds with release semantics (its block's writes ordered before by the
// bar.sync, which is cumulative) and polls with acquire loads (the cheapest construction measured,
// docs/performance.md "What one grid barrier costs").
__device__ __forceinline__ void GridSync(unsigned* counter, unsigned index, unsigned long long* trace,
                                         unsigned entry = 0) {
  ConsumerSync();
  if (threadIdx.x == 0) {
    const unsigned long long arrived = trace != nullptr ? GlobalTimer() : 0;
    asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(counter) : "memory");
    const unsigned target = index * gridDim.x;
    unsigned seen = 0;
    do {
      asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(seen) : "l"(counter) : "memory");
    } while (seen < target);
    if (trace != nullptr) {
      unsigned long long* at = trace + (static_cast<size_t>(entry != 0 ? entry : index) * gridDim.x + blockIdx.x) * 2;
      at[0] = arrived;
      at[1] = GlobalTimer();
    }
  }
  ConsumerSync();
}

__device__ __forceinline__ float WarpSum(float v) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// ---- Tagged exchanges (PersistentDecodeParams::tagged): a value and its exchange's tag in one 64-bit word ----

__device__ __forceinline__ void TaggedStore(unsigned long long* at, float v, unsigned tag) {
  const unsigned long long word = (static_cast<unsigned long long>(tag) << 32) | __float_as_uint(v);
  asm volatile("st.relaxed.gpu.global.b64 [%0], %1;" ::"l"(at), "l"(word) : "memory");
}

__device__ __forceinline__ unsigned long long LoadTaggedWord(const unsigned long long* at) {
  unsigned long long word;
  asm volatile("ld.relaxed.gpu.global.b64 %0, [%1];" : "=l"(word) : "l"(at) : "memory");
  return word;
}

// A tagged word that has not come after this many reloads (seconds; a step waits microseconds) will
// not come: the kernel traps (the launch fails) rather than hang the GPU.
constexpr unsigned kMaxTaggedReloads = 1u << 24;

// out[j] = the value of word at[j] (where valid[j]; others 0) once its tag is `tag`: every load
// issued first, then in rounds every word whose tag has not come reloaded at once (one trip a round,
// not one a word: the first form reloaded them one after another, a dependent L2 trip per late word,
// and made an exchange cost three barriers; H100, 2026-12-07).
template <int N>
__device__ __forceinline__ void LoadTaggedAt(const unsigned long long* src, const int64_t (&at)[N],
                                             const bool (&valid)[N], unsigned tag, float (&out)[N]) {
  unsigned long long word[N];
#pragma unroll
  for (int j = 0; j < N; ++j) word[j] = valid[j] ? LoadTaggedWord(src + at[j]) : static_cast<unsigned long long>(tag) << 32;
  for (unsigned reloads = 0;; ++reloads) {
    bool late = false;
#pragma unroll
    for (int j = 0; j < N; ++j) late |= static_cast<unsigned>(word[j] >> 32) != tag;
    if (!late) break;
    if (reloads == kMaxTaggedReloads) __trap();
#pragma unroll
    for (int j = 0; j < N; ++j)
      if (static_cast<unsigned>(word[j] >> 32) != tag) word[j] = LoadTaggedWord(src + at[j]);
  }
#pragma unroll
  for (int j = 0; j < N; ++j) out[j] = __uint_as_float(static_cast<unsigned>(word[j]));
}

// LoadTaggedAt of words i0 + j * stride, those below n.
template <int N>
__device__ __forceinline__ void LoadTagged(const unsigned long long* src, int i0, int stride, int n, unsigned tag,
                                           float (&out)[N]) {
  int64_t at[N];
  bool valid[N];
#pragma unroll
  for (int j = 0; j < N; ++j) {
    at[j] = i0 + j * stride;
    valid[j] = at[j] < n;
  }
  LoadTaggedAt(src, at, valid, tag, out);
}

// The exchanges' tags (PersistentExchangeTag): layer l, exchange e (0: in_proj's values, 2: x after
// o_proj, 3: act, 4: x after down).
__device__ __forceinline__ unsigned ExchangeTag(const PersistentDecodeParams& p, int l, int e) {
  return PersistentExchangeTag(p.step, p.num_layers, l, e);
}

// ---- The gate norm's input row ----

constexpr int kMaxHeadV = 512;  // dv: the gate norm keeps a head's row in a warp's registers

constexpr int kGateNormPer = kMaxHeadV / 32;  // a lane's values of one head

// One head's o and g values (a lane's: lane + 32 j), loaded apart from their use so a warp can have
// the next head's in flight while it finishes this one (o and g written by other blocks: L2).
struct GateNormHeadValues {
  float v[kGateNormPer], z[kGateNormPer];

  __device__ __forceinline__ void Load(const PersistentDecodeParams& p, int seq, int h) {
    const int lane = threadIdx.x % 32;
    const float* oh = p.o + (static_cast<int64_t>(seq) * p.H + h) * p.dv;
    const float* gh = p.proj + static_cast<int64_t>(seq) * p.P + p.g_off + static_cast<int64_t>(h) * p.dv;
#pragma unroll
    for (int j = 0; j < kGateNormPer; ++j) {
      const int i = lane + 32 * j;
      v[j] = i < p.dv ? __ldcg(oh + i) : 0.f;
      z[j] = i < p.dv && p.output_gate ? __ldcg(gh + i) : 0.f;
    }
  }

  // row[h dv ...] = bf16(RMSNorm(o_h) * g_norm * swish(g_h)); nw: the lane's g_norm values (LoadNorm).
  __device__ __forceinline__ void Finish(const PersistentDecodeParams& p, int h, const float (&nw)[kGateNormPer],
                                         __nv_bfloat16* row) const {
    const int lane = threadIdx.x % 32;
    float ss = 0.f;
#pragma unroll
    for (int j = 0; j < kGateNormPer; ++j) ss += v[j] * v[j];
    const float inv = rsqrtf(WarpSum(ss) / p.dv + p.eps);
#pragma unroll
    for (int j = 0; j < kGateNormPer; ++j) {
      const int i = lane + 32 * j;
      if (i >= p.dv) break;
      float val = v[j] * inv * nw[j];
      if (p.output_gate) val *= z[j] / (1.f + __expf(-z[j]));
      row[h * p.dv + i] = __float2bfloat16(val);
    }
  }

  __device__ __forceinline__ static void LoadNorm(const PersistentDecodeParams& p, const float* g_norm,
                                                  float (&nw)[kGateNormPer]) {
    const int lane = threadIdx.x % 32;
#pragma unroll
    for (int j = 0; j < kGateNormPer; ++j) nw[j] = lane + 32 * j < p.dv ? __ldg(g_norm + lane + 32 * j) : 0.f;
  }
};

// row[h dv ...] = the gate norm of sequence seq's head h, by one warp, in one trip to memory.
__device__ __forceinline__ void GateNormHead(const PersistentDecodeParams& p, int seq, int h, const float* g_norm,
                                             __nv_bfloat16* row) {
  GateNormHeadValues values;
  float nw[kGateNormPer];
  values.Load(p, seq, h);
  GateNormHeadValues::LoadNorm(p, g_norm, nw);
  values.Finish(p, h, nw, row);
}

// ---- The step's matrices ----

// One streamed matrix: rows of row_bytes; gate|up (pair) holds n gate rows, then n up rows.
struct MatrixRef {
  const unsigned char* w = nullptr;  // rows of row_bytes each
  const float* scale = nullptr;      // one-byte rows: a scale per row (gate|up: gate rows', then up rows')
  PersistentWeights kind = PersistentWeights::kBf16;
  int64_t n = 0;  // output rows (gate|up: pairs; the up rows start n rows after the gate rows)
  int k = 0;      // input width
  int row_bytes = 0;  // k weights: 2 k (bf16) or k (one byte)
  bool pair = false;
};

__device__ __forceinline__ MatrixRef MakeMatrixRef(const void* w, const float* scale, PersistentWeights kind,
                                                   int64_t n, int k, bool pair) {
  const int row_bytes = kind == PersistentWeights::kBf16 ? k * static_cast<int>(sizeof(__nv_bfloat16)) : k;
  return MatrixRef{static_cast<const unsigned char*>(w), scale, kind, n, k, row_bytes, pair};
}

// The step's matrices in stream order: per layer in_proj, o_proj, gate|up, down; then lm_head.
__device__ __forceinline__ int MatrixCount(const PersistentDecodeParams& p) {
  return 4 * p.num_layers + (p.logits != nullptr ? 1 : 0);
}

__device__ __forceinline__ MatrixRef MatrixRefAt(const PersistentDecodeParams& p, int i) {
  if (i == 4 * p.num_layers) return MakeMatrixRef(p.lm_head, nullptr, PersistentWeights::kBf16, p.vocab, p.D, false);
  const PersistentDecodeLayer& L = p.layers[i / 4];
  switch (i % 4) {
    case 0: return MakeMatrixRef(L.in_proj, L.in_proj_scale, p.weights, p.P, p.D, false);
    case 1: return MakeMatrixRef(L.o_proj, L.o_proj_scale, p.weights, p.D, p.H * p.dv, false);
    case 2: return MakeMatrixRef(L.gate_up, L.gate_up_scale, p.weights, p.I, p.D, true);
    default: return MakeMatrixRef(L.down, L.down_scale, p.weights, p.D, p.I, false);
  }
}

// Block b's rows of m, [*r0, *r1): every block streams about the same bytes of every matrix, and a
// block owns the same rows of every matrix of one width (the residual rows it adds to).
__device__ __forceinline__ void BlockRows(const MatrixRef& m, int b, int G, int64_t* r0, int64_t* r1) {
  *r0 = m.n * b / G;
  *r1 = m.n * (b + 1) / G;
}

// The launch both kernels take: `blocks` blocks of kThreads, cooperative (every block resident, as
// the grid barrier needs), `smem` bytes of dynamic shared memory. Not copyable: config.attrs points
// into it.
struct CooperativeLaunch {
  cudaLaunchAttribute attr[1];
  cudaLaunchConfig_t config = {};

  CooperativeLaunch(int blocks, size_t smem, cudaStream_t stream) {
    attr[0].id = cudaLaunchAttributeCooperative;
    attr[0].val.cooperative = 1;
    config.gridDim = dim3(static_cast<unsigned>(blocks));
    config.blockDim = dim3(kThreads);
    config.dynamicSmemBytes = smem;
    config.stream = stream;
    config.attrs = attr;
    config.numAttrs = 1;
  }
  CooperativeLaunch(const CooperativeLaunch&) = delete;
  CooperativeLaunch& operator=(const CooperativeLaunch&) = delete;
};

}  // namespace gla::cuda::persistent
