// The batch-1 decode step as one persistent kernel: see kernels/persistent_decode.h for the plan.
//
// Block layout: warps 0-7 consume, warp 8's first lane produces. The producer walks the same
// sequence of weight tiles as the consumers (TileCursor and ForEachTile, both from BlockRows) and
// keeps a ring of stages (6 x 32 KiB, or fewer larger ones: Ring) of tiles in flight: stage `full`
// barriers (mbarrier, transaction bytes) say a tile has landed, `empty` barriers (one arrival per
// consumer warp) say it may be reused.
// A tile is tile_rows consecutive output rows of one matrix (for gate|up, tile_rows gate rows and
// the matching up rows); a block owns rows [n b / G, n (b + 1) / G) of every matrix, so every
// block streams about the same bytes.
//
// With PersistentDecodeParams::tagged, x after o_proj and down and act after gate|up travel as
// tagged words instead (TaggedStore / LoadTagged): no grid barrier there.
//
// Cross-block data (x, proj, o, act) is read with ld.global.cg (L2, never a stale L1 line) after a
// grid barrier: the consumers' thread 0 adds to one device counter with release semantics and
// waits with acquire loads until every block has arrived; the block's other consumers wait at a
// named barrier (the producer warp never joins one, so the weight stream runs through barriers).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/bf16_dot.cuh"
#include "kernels/cuda/persistent_common.cuh"
#include "kernels/cuda/persistent_decode_batched.h"
#include "kernels/cuda/persistent_state.cuh"
#include "kernels/persistent_decode.h"

namespace gla::cuda {

namespace {

using namespace persistent;  // NOLINT: the shared PTX wrappers, GridSync and MatrixRef

constexpr int kMaxStages = 6;
constexpr int kStageBytes = 32 * 1024;  // the kernel's own tiles (PersistentDecodeParams::tile_bytes 0)
constexpr int kRingBytes = kMaxStages * kStageBytes;  // cut into stages of a larger cap's bytes
constexpr int kMaxTileRows = 32;  // matrix rows in one tile (gate and up rows counted apart)
constexpr int kMaxRow = 8192;     // bf16 elements of an operation's input row (D, H dv, I)
constexpr int kMaxOwnRows = 64;   // rows of the residual stream a block owns (D / blocks)
constexpr int kTaggedRowPer = 8;  // tagged exchanges: x's values a consumer thread takes (D <= 2,048)

struct Shared {
  alignas(128) unsigned char ring[kRingBytes];  // Ring's stages
  alignas(16) uint4 row[kMaxRow / 8];  // the operation's input row, bf16
  float partial[2][kMaxTileRows][kConsumerWarps];  // per tile (double-buffered): rows x warp parts
  StateScratch state;
  float warp_sums[kConsumerWarps];
  // The block's rows of x (o_proj and down both write rows [D b / G, D (b + 1) / G)): the residual
  // added from here, not read back from memory (a round trip per tile on the critical path).
  float x_own[kMaxOwnRows];
  unsigned long long arrived;  // trace: when thread 0's block wrote its words of a tagged exchange
  float staged_r[kMaxRank];    // tagged_proj: the gate's rank values (UpdateStaged)
  alignas(16) float staged_v[kStateCols];  // tagged_proj: the item's values of v
  unsigned long long full[kMaxStages], empty[kMaxStages];
};

static_assert(sizeof(Shared) <= 227 * 1024, "the block's shared memory fits sm_90's opt-in limit");

// The ring's stages: kMaxStages of kStageBytes, or, for a tile cap above kStageBytes, as many of
// the cap's bytes as the ring holds (whole KiB: 128-byte aligned).
struct Ring {
  int stage_bytes = kStageBytes, stages = kMaxStages;

  __host__ __device__ static Ring For(int tile_bytes) {
    Ring r;
    if (tile_bytes > kStageBytes) {
      r.stage_bytes = tile_bytes;
      r.stages = kRingBytes / tile_bytes;
    }
    return r;
  }
  __device__ __forceinline__ unsigned char* Stage(Shared& s, int slot) const { return s.ring + slot * stage_bytes; }
};

// Sum over the consumers, in a fixed order; every consumer gets it.
__device__ __forceinline__ float ConsumerSum(Shared& s, float v) {
  v = WarpSum(v);
  if (threadIdx.x % 32 == 0) s.warp_sums[threadIdx.x / 32] = v;
  ConsumerSync();
  float total = 0.f;
#pragma unroll
  for (int w = 0; w < kConsumerWarps; ++w) total += s.warp_sums[w];
  return total;
}


// ---- The weight stream ----

// A streamed matrix with its tile size (rows or pairs of gate|up rows that fill a stage).
struct Matrix : MatrixRef {
  int tile_rows = 1;  // rows (pairs) per full tile
};

// cap: PersistentDecodeParams::tile_bytes (0: a stage).
__device__ __forceinline__ Matrix MakeMatrix(const MatrixRef& ref, int cap) {
  Matrix m;
  static_cast<MatrixRef&>(m) = ref;
  const int unit = (m.pair ? 2 : 1) * m.row_bytes;
  const int bytes = cap > 0 ? cap : kStageBytes;  // at most a stage (Ring::For)
  while (2 * m.tile_rows * unit <= bytes && 2 * m.tile_rows * (m.pair ? 2 : 1) <= kMaxTileRows) m.tile_rows *= 2;
  return m;
}

__device__ __forceinline__ int TileRowsAt(const Matrix& m, int64_t r, int64_t r1) {
  return static_cast<int>(r1 - r < m.tile_rows ? r1 - r : m.tile_rows);
}

// f(first row, rows) for each of block b's tiles of m, in order.
template <class F>
__device__ __forceinline__ void ForEachTile(const Matrix& m, int b, int G, F&& f) {
  int64_t r0, r1;
  BlockRows(m, b, G, &r0, &r1);
  for (int64_t r = r0; r < r1; r += m.tile_rows) f(r, TileRowsAt(m, r, r1));
}

__device__ __forceinline__ Matrix MatrixAt(const PersistentDecodeParams& p, int i) {
  return MakeMatrix(MatrixRefAt(p, i), p.tile_bytes);
}

// Block b's tiles of the whole step, one after the other (the order Consume takes them in).
struct TileCursor {
  int i = -1, count = 0;
  Matrix m;
  int64_t r = 0, r1 = 0;
  int rows = 0;
  bool done = false;

  __device__ __forceinline__ void Next(const PersistentDecodeParams& p, int b, int G) {
    r += rows;
    while (r >= r1) {
      if (++i >= count) {
        done = true;
        return;
      }
      m = MatrixAt(p, i);
      BlockRows(m, b, G, &r, &r1);
    }
    rows = TileRowsAt(m, r, r1);
  }
  __device__ __forceinline__ unsigned Bytes() const {
    return static_cast<unsigned>(rows) * static_cast<unsigned>(m.row_bytes);
  }
};

__device__ void Produce(const PersistentDecodeParams& p, Shared& s, int b, int G) {
  const unsigned long long policy = EvictFirstPolicy();
  const Ring ring = Ring::For(p.tile_bytes);
  const unsigned stages = static_cast<unsigned>(ring.stages);
  TileCursor copy;
  copy.count = MatrixCount(p);
  copy.Next(p, b, G);
  for (unsigned tile = 0; !copy.done; ++tile, copy.Next(p, b, G)) {
    const int slot = static_cast<int>(tile % stages);
    const unsigned ahead = static_cast<unsigned>(p.tiles_in_flight);
    if (ahead > 0 && tile >= ahead)  // tile - ahead landed (its phase's parity: the consumers' wait)
      MbarWait(&s.full[(tile - ahead) % stages], ((tile - ahead) / stages) & 1);
    if (tile >= stages) MbarWait(&s.empty[slot], ((tile / stages) - 1) & 1);
    const Matrix& m = copy.m;
    const unsigned bytes = copy.Bytes();
    unsigned char* stage = ring.Stage(s, slot);
    MbarExpectTx(&s.full[slot], m.pair ? 2 * bytes : bytes);
    BulkCopy(stage, m.w + copy.r * m.row_bytes, bytes, &s.full[slot], policy);
    if (m.pair)
      BulkCopy(stage + m.tile_rows * m.row_bytes, m.w + (m.n + copy.r) * m.row_bytes, bytes, &s.full[slot], policy);
  }
}

// A warp's dot product of one streamed row (16-byte chunks [lo, hi) of it, lane by lane) with the
// input row: chunk c is 8 bf16 weights against input chunk c, or 16 one-byte weights against input
// chunks 2c and 2c + 1.
template <PersistentWeights K>
__device__ __forceinline__ float RowDot(const uint4* wr, const uint4* row, int lo, int hi, int lane) {
  auto chunk_dot = [&](int c, float acc) {
    if constexpr (K == PersistentWeights::kFp8) return Fp8Dot16(wr[c], row[2 * c], row[2 * c + 1], acc);
    else if constexpr (K == PersistentWeights::kInt8) return Int8Dot16(wr[c], row[2 * c], row[2 * c + 1], acc);
    else return Bf16Dot8(wr[c], row[c], acc);
  };
  float a0 = 0.f, a1 = 0.f;
  int c = lo + lane;
  for (; c + 32 < hi; c += 64) {
    a0 = chunk_dot(c, a0);
    a1 = chunk_dot(c + 32, a1);
  }
  if (c < hi) a0 = chunk_dot(c, a0);
  return WarpSum(a0 + a1);
}

// The consumers' side of one matrix: each tile's rows against s.row, then epilogue(row, value,
// up value) by thread t < rows for the tile's row t (gate|up: the gate row's value and the up row's).
template <class Epilogue>
__device__ __forceinline__ void Consume(Shared& s, const Ring& ring, const Matrix& m, int b, int G, unsigned& tile,
                                        Epilogue&& epilogue) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int units = m.pair ? 2 * m.tile_rows : m.tile_rows;  // matrix rows in a full tile
  const int chunks = m.row_bytes / 16;                        // 16-byte chunks per row
  const int split = units >= kConsumerWarps ? 1 : kConsumerWarps / units;  // warps per row
  ForEachTile(m, b, G, [&](int64_t r, int rows) {
    const unsigned stages = static_cast<unsigned>(ring.stages);
    const int slot = static_cast<int>(tile % stages);
    float(&part)[kMaxTileRows][kConsumerWarps] = s.partial[tile & 1];
    MbarWait(&s.full[slot], (tile / stages) & 1);
    const uint4* w = reinterpret_cast<const uint4*>(ring.Stage(s, slot));
    auto valid = [&](int u) { return (m.pair && u >= m.tile_rows ? u - m.tile_rows : u) < rows; };
    auto dot = [&](int u, int lo, int hi) {
      const uint4* wr = w + u * chunks;
      switch (m.kind) {  // the same for the whole matrix: one branch per row, none in the loop
        case PersistentWeights::kFp8: return RowDot<PersistentWeights::kFp8>(wr, s.row, lo, hi, lane);
        case PersistentWeights::kInt8: return RowDot<PersistentWeights::kInt8>(wr, s.row, lo, hi, lane);
        default: return RowDot<PersistentWeights::kBf16>(wr, s.row, lo, hi, lane);
      }
    };
    if (split > 1) {
      const int u = warp / split, seg = warp % split;
      const float v = valid(u) ? dot(u, chunks * seg / split, chunks * (seg + 1) / split) : 0.f;
      if (lane == 0) part[u][seg] = v;
    } else {
      for (int u = warp; u < units; u += kConsumerWarps) {
        const float v = valid(u) ? dot(u, 0, chunks) : 0.f;
        if (lane == 0) part[u][0] = v;
      }
    }
    __syncwarp();
    if (lane == 0) MbarArrive(&s.empty[slot]);  // this warp is done with the stage
    ConsumerSync();
    const int t = threadIdx.x;
    if (t < rows) {
      float v = 0.f, up = 0.f;
      for (int j = 0; j < split; ++j) v += part[t][j];
      if (m.pair)
        for (int j = 0; j < split; ++j) up += part[m.tile_rows + t][j];
      if (m.scale != nullptr) {  // one-byte rows: each row's sum scaled once
        v *= __ldg(m.scale + r + t);
        if (m.pair) up *= __ldg(m.scale + m.n + r + t);
      }
      epilogue(r + t, v, up);
    }
    ++tile;
  });
}

// ---- Tagged exchanges (PersistentDecodeParams::tagged; the words' protocol: persistent_common.cuh) ----

// The state update's inputs for `item` from in_proj's tagged words (pw, tagged `tag`): its head's q
// and k rows into s.state.q / s.state.k, the gate's rank values into s.staged_r, the item's 16
// values of v into s.staged_v (UpdateStaged's inputs); a thread's four words in flight at once.
template <int R>
__device__ __forceinline__ void StageItemInputs(const PersistentDecodeParams& p, Shared& s,
                                                const unsigned long long* pw, unsigned tag, const StateItem<R>& item) {
  constexpr int dk = R * kStateGroups;
  const int t = threadIdx.x;
  const int64_t at[4] = {p.q_off + int64_t{item.h} * dk + t, p.k_off + int64_t{item.hk} * dk + t, int64_t{p.r_off} + t,
                         p.v_off + int64_t{item.hk} * p.dv + item.c0 + t};
  const bool valid[4] = {t < dk, t < dk, t < p.rank, t < kStateCols};
  float in[4];
  LoadTaggedAt(pw, at, valid, tag, in);
  if (t < dk) {
    s.state.q[t] = in[0];
    s.state.k[t] = in[1];
  }
  if (t < p.rank) s.staged_r[t] = in[2];
  if (t < kStateCols) s.staged_v[t] = in[3];
  ConsumerSync();
}

// ---- The consumers' input rows ----

// s.row = bf16(RMSNorm(x) * w), x fp32 [n <= kPer * kConsumers] written by other blocks (xw
// non-null: as tagged words tagged `tag`, waited for here, all of a thread's in flight at once).
// One trip to memory: a thread's values stay in registers between the two passes.
template <int kPer = kMaxRow / kConsumers>
__device__ __forceinline__ void NormRow(Shared& s, const float* x, const float* w, int n, float eps,
                                        const unsigned long long* xw = nullptr, unsigned tag = 0) {
  float v[kPer], nw[kPer];
  float ss = 0.f;
  if (xw != nullptr) LoadTagged(xw, threadIdx.x, kConsumers, n, tag, v);
#pragma unroll
  for (int j = 0; j < kPer; ++j) {
    const int i = threadIdx.x + j * kConsumers;
    if (xw == nullptr) v[j] = i < n ? __ldcg(x + i) : 0.f;
    nw[j] = i < n ? __ldg(w + i) : 0.f;
  }
#pragma unroll
  for (int j = 0; j < kPer; ++j) ss += v[j] * v[j];
  const float inv = rsqrtf(ConsumerSum(s, ss) / n + eps);
  __nv_bfloat16* row = reinterpret_cast<__nv_bfloat16*>(s.row);
#pragma unroll
  for (int j = 0; j < kPer; ++j) {
    const int i = threadIdx.x + j * kConsumers;
    if (i < n) row[i] = __float2bfloat16(v[j] * inv * nw[j]);
  }
  ConsumerSync();
}

// s.row = bf16(RMSNorm per head(o) * g_norm * swish(g)): a warp per head.
__device__ __forceinline__ void GateNormRow(Shared& s, const PersistentDecodeParams& p, const float* g_norm) {
  __nv_bfloat16* row = reinterpret_cast<__nv_bfloat16*>(s.row);
  for (int h = threadIdx.x / 32; h < p.H; h += kConsumerWarps) GateNormHead(p, 0, h, g_norm, row);
  ConsumerSync();
}

// s.row = act (bf16 [n], written by other blocks; aw non-null: as tagged fp32 words holding the
// bf16 values, tagged `tag`).
__device__ __forceinline__ void ActRow(Shared& s, const __nv_bfloat16* act, int n,
                                       const unsigned long long* aw = nullptr, unsigned tag = 0) {
  if (aw == nullptr) {
    const uint4* a = reinterpret_cast<const uint4*>(act);
    for (int i = threadIdx.x; i < n / 8; i += kConsumers) s.row[i] = __ldcg(a + i);
  } else {
    constexpr int kChunk = 24;  // words in flight a thread: gla-1.3B's 5,632 activations in one trip
    __nv_bfloat16* row = reinterpret_cast<__nv_bfloat16*>(s.row);
    for (int i0 = threadIdx.x; i0 < n; i0 += kChunk * kConsumers) {
      float chunk[kChunk];
      LoadTagged(aw, i0, kConsumers, n, tag, chunk);
#pragma unroll
      for (int j = 0; j < kChunk; ++j)
        if (i0 + j * kConsumers < n) row[i0 + j * kConsumers] = __float2bfloat16(chunk[j]);
    }
  }
  ConsumerSync();
}

// kLevel: 0 grid barriers only; 1 x and act as tagged words (p.tagged); 2 in_proj's values too
// (p.tagged_proj); 3 in_proj's values alone (!p.tagged_residual). A kernel of each, so the
// barriers-only kernel's code is what it was.
template <int R, int kLevel>
__device__ void ConsumeStep(const PersistentDecodeParams& p, Shared& s, int b, int G) {
  constexpr bool kTagged = kLevel == 1 || kLevel == 2, kTaggedProj = kLevel >= 2;
  // Few values live across the layer loop (its projections hold most of the registers): the
  // barriers' and trace entries' numbers, the exchanges' tags and where the tagged words lie are
  // made from l and p where used.
  unsigned tile = 0;
  const Ring ring = Ring::For(p.tile_bytes);
  // The grid barrier at point k of layer l (k: after in_proj, the state update, o_proj, gate|up,
  // down): the layer's barriers are the points not exchanged as tagged words (5, 2, 1 or 4 of them);
  // its trace entry 5 l + k + 1 either way (a tagged exchange takes the entries of the barriers it
  // replaces).
  auto sync = [&](int l, int k) {
    constexpr int kPerLayer = (kTaggedProj ? 4 : 5) - (kTagged ? 3 : 0);
    const int at = kTaggedProj ? k - 1 : k;  // its place among the layer's barriers (x's and act's come last)
    const unsigned entry = static_cast<unsigned>(5 * l + k + 1);
    GridSync(p.barrier, static_cast<unsigned>(kPerLayer * l + at + 1), p.trace, entry);
  };
  // A tagged exchange's trace entry: arrived (the block's own words written) from s.arrived, left now.
  auto mark = [&](int l, int k) {
    if (p.trace != nullptr && threadIdx.x == 0) {
      unsigned long long* at = p.trace + (static_cast<size_t>(5 * l + k + 1) * G + b) * 2;
      at[0] = s.arrived;
      at[1] = GlobalTimer();
    }
  };
  auto arrive = [&] {
    if (p.trace != nullptr && threadIdx.x == 0) s.arrived = GlobalTimer();
  };
  if (p.trace != nullptr && threadIdx.x == 0) p.trace[2 * b] = p.trace[2 * b + 1] = GlobalTimer();  // entry 0: start
  const int items = p.H * (p.dv / kStateCols);
  const int64_t slot = p.slots[0];
  const int64_t x0 = int64_t{p.D} * b / G;
  if (threadIdx.x < int64_t{p.D} * (b + 1) / G - x0) s.x_own[threadIdx.x] = __ldcg(p.x + x0 + threadIdx.x);  // embedding
  // x[n] += v (n is one of the block's rows), and with tagged exchanges x's word n tagged (l, e).
  auto residual = [&](int l, int e) {
    return [&p, &s, x0, l, e](int64_t n, float v, float) {
      float& own = s.x_own[n - x0];
      own = v + own;
      __stcg(p.x + n, own);
      if (kTagged) TaggedStore(p.tagged + n, own, ExchangeTag(p, l, e));
    };
  };
  // s.row = the norm of x: from p.x after a barrier, or from the tagged words of layer l's exchange
  // at point e (layer -1: the embedding, plain), with that point's trace entry.
  auto norm_row = [&](const float* w, int l, int e) {
    if (kTagged && l >= 0) {
      NormRow<kTaggedRowPer>(s, p.x, w, p.D, p.eps, p.tagged, ExchangeTag(p, l, e));
      mark(l, e);
    } else {
      NormRow(s, p.x, w, p.D, p.eps);
    }
  };
  for (int l = 0; l < p.num_layers; ++l) {
    const PersistentDecodeLayer& L = p.layers[l];
    norm_row(L.attn_norm, l - 1, 4);
    StateItem<R> item;  // its loads before the barrier after in_proj (the state is not this step's)
    if (p.early_state_loads && b < items) item.Load(p, L, b, slot);
    Consume(s, ring, MatrixAt(p, 4 * l), b, G, tile, [&](int64_t n, float v, float) {
      __stcg(p.proj + n, v);
      if (kTaggedProj) TaggedStore(p.tagged + p.D + p.I + n, v, ExchangeTag(p, l, 0));
    });
    if (!p.early_state_loads && b < items) item.Load(p, L, b, slot);
    if (kTaggedProj) arrive();
    else sync(l, 0);
    for (int it = b; it < items; it += G) {
      if (it != b) item.Load(p, L, it, slot);
      if (kTaggedProj) {  // its inputs from the tagged words, no barrier
        StageItemInputs(p, s, p.tagged + p.D + p.I, ExchangeTag(p, l, 0), item);
        if (it == b) mark(l, 0);
        item.UpdateStaged(p, L, s.state, s.staged_r, s.staged_v);
      } else {
        item.Update(p, L, 0, s.state);
      }
    }
    if (kTaggedProj && b >= items) mark(l, 0);  // no item: nothing to wait for
    sync(l, 1);
    GateNormRow(s, p, L.g_norm);
    Consume(s, ring, MatrixAt(p, 4 * l + 1), b, G, tile, residual(l, 2));
    if (kTagged) arrive();
    else sync(l, 2);
    norm_row(L.mlp_norm, kTagged ? l : -1, 2);
    Consume(s, ring, MatrixAt(p, 4 * l + 2), b, G, tile, [&](int64_t n, float g, float u) {  // activations.cu's SwiGLU
      const float a = __bfloat162float(__float2bfloat16(g)), up = __bfloat162float(__float2bfloat16(u));
      const __nv_bfloat16 act = __float2bfloat16(a / (1.f + __expf(-a)) * up);
      if (kTagged) TaggedStore(p.tagged + p.D + n, __bfloat162float(act), ExchangeTag(p, l, 3));
      else p.act[n] = act;  // tagged: the words are what ActRow reads
    });
    if (kTagged) {
      arrive();
      ActRow(s, p.act, p.I, p.tagged + p.D, ExchangeTag(p, l, 3));
      mark(l, 3);
    } else {
      sync(l, 3);
      ActRow(s, p.act, p.I);
    }
    Consume(s, ring, MatrixAt(p, 4 * l + 3), b, G, tile, residual(l, 4));
    if (kTagged) arrive();
    else sync(l, 4);
  }
  const int last = p.num_layers - 1;
  if (p.logits != nullptr) {
    norm_row(p.final_norm, kTagged ? last : -1, 4);
    Consume(s, ring, MatrixAt(p, 4 * p.num_layers), b, G, tile,
            [&](int64_t n, float v, float) { __stcg(p.logits + n, v); });
  } else if (kTagged) {
    mark(last, 4);  // nothing waits on the last down's words: the entry, for the trace's count
  }
  if (p.trace != nullptr && threadIdx.x == 0) {  // the last entry: the block's end
    unsigned long long* at = p.trace + (static_cast<size_t>(5 * p.num_layers + 1) * G + b) * 2;
    at[0] = at[1] = GlobalTimer();
  }
}

template <int R, int kLevel>
__global__ void __launch_bounds__(kThreads, 1) PersistentDecodeKernel(const PersistentDecodeParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  extern __shared__ __align__(128) unsigned char smem[];
  Shared& s = *reinterpret_cast<Shared*>(smem);
  if (threadIdx.x == 0) InitStageBarriers(s.full, s.empty, Ring::For(p.tile_bytes).stages);
  __syncthreads();
  if (threadIdx.x >= kConsumers) {
    if (threadIdx.x == kConsumers) Produce(p, s, blockIdx.x, gridDim.x);
    return;
  }
  ConsumeStep<R, kLevel>(p, s, blockIdx.x, gridDim.x);
#endif
}

template <int R>
cudaError_t SetSmem() {
  for (auto* kernel : {PersistentDecodeKernel<R, 0>, PersistentDecodeKernel<R, 1>, PersistentDecodeKernel<R, 2>,
                       PersistentDecodeKernel<R, 3>}) {
    const cudaError_t e =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(sizeof(Shared)));
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

}  // namespace

bool PersistentDecodeShapesSupported(const PersistentDecodeParams& p) {
  auto aligned4 = [](int v) { return v >= 0 && v % 4 == 0; };
  const bool dims = p.num_layers > 0 && p.D > 0 && p.I > 0 && p.P > 0 && p.D % 8 == 0 && p.I % 8 == 0 &&
                    p.D <= kMaxRow && p.I <= kMaxRow && p.H > 0 && p.Hkv > 0 && p.H % p.Hkv == 0 &&
                    (p.dk == 64 || p.dk == 128 || p.dk == 256) && p.dv > 0 && p.dv % kStateCols == 0 && p.dv <= kMaxHeadV &&
                    int64_t{p.H} * p.dv <= kMaxRow && p.rank > 0 && p.rank <= kMaxRank && p.rank % 4 == 0;
  const bool offsets = aligned4(p.q_off) && aligned4(p.k_off) && aligned4(p.v_off) && aligned4(p.g_off) &&
                       aligned4(p.r_off) && p.r_off + p.rank <= p.P;
  const bool head = p.logits == nullptr || (p.lm_head != nullptr && p.final_norm != nullptr && p.vocab > 0);
  const bool buffers = p.layers != nullptr && p.state.FourValueAligned() && p.slots != nullptr && p.x != nullptr &&
                       p.proj != nullptr && p.o != nullptr && p.act != nullptr && p.barrier != nullptr;
  const bool own_rows = p.blocks > 0 && (p.D + p.blocks - 1) / p.blocks <= kMaxOwnRows;
  // Batches of 2 and more: the batched kernel's input rows and stages in shared memory.
  const bool batch = p.batch == 1 || (p.batch >= 2 && p.batch <= kPersistentMaxBatch && p.o_sumsq != nullptr &&
                                      persistent::BatchedLayoutFits(p));
  // One-byte rows are streamed and read in 16-byte chunks of 16 weights.
  const bool byte_rows = p.weights == PersistentWeights::kBf16 ||
                         ((p.weights == PersistentWeights::kFp8 || p.weights == PersistentWeights::kInt8) &&
                          p.D % 16 == 0 && p.I % 16 == 0 && (p.H * p.dv) % 16 == 0);
  const bool in_flight =
      PersistentTilesInFlightValid(p.tiles_in_flight) && (!batch || p.tiles_in_flight <= PersistentDecodeStages(p));
  const bool tiles = PersistentTileBytesValid(p.tile_bytes);
  const bool tagged = p.tagged == nullptr ? !p.tagged_proj
                                          : reinterpret_cast<uintptr_t>(p.tagged) % 8 == 0 &&
                                                PersistentTaggedExchangeSupported(p) &&
                                                (p.tagged_residual || p.tagged_proj);  // something tagged
  return dims && offsets && head && buffers && own_rows && byte_rows && batch && in_flight && tiles && tagged;
}

bool PersistentTaggedExchangeSupported(const PersistentDecodeParams& p) {
  return p.blocks > 0 && p.D <= kTaggedRowPer * kConsumers && p.D >= p.blocks && p.I >= p.blocks;
}

int PersistentDecodeStages(const PersistentDecodeParams& p) {
  return p.batch == 1 ? Ring::For(p.tile_bytes).stages : persistent::BatchedLayoutFor(p).stages;
}

int PersistentDecodeBlocks(int device) {
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) return 0;
  if (prop.major < 9 || prop.cooperativeLaunch == 0 || sizeof(Shared) > prop.sharedMemPerBlockOptin) return 0;
  if (SetSmem<1>() != cudaSuccess || SetSmem<2>() != cudaSuccess || SetSmem<4>() != cudaSuccess ||
      !persistent::PrepareBatchedKernels())
    return 0;
  int per_sm = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, PersistentDecodeKernel<4, 0>, kThreads, sizeof(Shared)) !=
          cudaSuccess ||
      per_sm < 1)
    return 0;
  return prop.multiProcessorCount;  // one block per SM: all resident, nothing else shares the SM
}

namespace {

// The kernel of p's exchanges (ConsumeStep's kLevel).
template <int R>
cudaError_t Launch(const CooperativeLaunch& launch, const PersistentDecodeParams& p) {
  if (p.tagged == nullptr) return cudaLaunchKernelEx(&launch.config, PersistentDecodeKernel<R, 0>, p);
  if (!p.tagged_proj) return cudaLaunchKernelEx(&launch.config, PersistentDecodeKernel<R, 1>, p);
  if (!p.tagged_residual) return cudaLaunchKernelEx(&launch.config, PersistentDecodeKernel<R, 3>, p);
  return cudaLaunchKernelEx(&launch.config, PersistentDecodeKernel<R, 2>, p);
}

}  // namespace

cudaError_t PersistentDecodeStep(const PersistentDecodeParams& p, cudaStream_t stream) {
  if (!PersistentDecodeShapesSupported(p)) return cudaErrorInvalidValue;
  if (p.batch > 1) return persistent::BatchedDecodeStep(p, stream);
  const CooperativeLaunch launch(p.blocks, sizeof(Shared), stream);
  switch (p.dk / kStateGroups) {
    case 1: return Launch<1>(launch, p);
    case 2: return Launch<2>(launch, p);
    default: return Launch<4>(launch, p);
  }
}

}  // namespace gla::cuda
