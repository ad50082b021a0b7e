// The decode step of 2 ... 8 sequences as one persistent kernel: the batch-1 kernel's plan
// (persistent_decode.cu, kernels/persistent_decode.h) with the projections on tensor cores.
//
// Why another kernel: at batch 1 a consumer warp's dot product of a streamed row with one input row
// keeps up with the weight stream; with B input rows it would cost B FMAs and B shared-memory loads
// per weight pair, compute- and shared-memory-bound from B ~ 4 (the same wall the decode-sized
// projection kernels hit, linear_small_m_mma.cu). Here one mma.sync m16n8k16 multiplies 16 streamed
// weight rows with the 8 input rows (one per sequence, zero-filled above the batch) 16 k at a time,
// so the work per weight byte does not grow with B.
//
// The weight stream: a tile is a group of 16 rows of a matrix times one segment of K, so it fills most
// of a 33 KiB stage whatever K is (the batch-1 kernel's tiles are whole rows: two of the down projection's
// 11 KiB rows a stage would waste the mma's 16 rows), its rows padded in the stage against bank
// conflicts (persistent_batched_tiling.h); the producer warp copies a tile as one bulk copy per row
// (lane u copies row u). The consumers keep a group's sums in registers across its segments and
// reduce the 8 warps' parts through shared memory once per group, in a fixed order (deterministic).
//
// Warp w takes the segment's 64-byte slices w, w + 8, ...; lane (g = lane / 4, t = lane % 4) loads 16
// bytes of stage rows g and g + 8 and of input row g at chunk 4 slice + t, as the decode-sized tensor
// kernel does (the mma's k order is a permutation of the real one, the same for both operands).
//
// The input rows of all sequences live in shared memory ([8][widest row], padded); what is left holds
// 2 to 6 stages (gla-1.3B at batch 8: 3, its 5,632-wide down input rows take 89 KiB). The norms are a
// warp per sequence (two passes over its residual row in L2); the gate norm a warp per (sequence,
// head), one pass over what the state update wrote (o times the gate's factors, and per 16-column
// slab the sum of o's squares: half the values, no second pass); the recurrent state update takes a contiguous run of the batch's items (16 columns of one
// head of one sequence), head-major, making q, k and the decays once per (sequence, head) and loading
// the next item's state while the current one updates. Barriers, the residual rows a block owns,
// rounding and epilogues are the batch-1 kernel's, per sequence.
#include "kernels/cuda/persistent_decode_batched.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/cuda/bf16_dot.cuh"
#include "kernels/cuda/mma_sync.cuh"
#include "kernels/cuda/persistent_batched_tiling.h"
#include "kernels/cuda/persistent_common.cuh"
#include "kernels/cuda/persistent_state.cuh"

namespace gla::cuda::persistent {

namespace {

constexpr int kMaxBatch = kPersistentMaxBatch;  // one mma n-tile: the 8 input rows
static_assert(kMaxBatch == 8, "the mma's n is 8");
constexpr int kGroupRows = kBatchedGroupRows;
constexpr int kStageBytes = kBatchedStageBytes;
constexpr int kMaxOwnRows = 64;  // rows of the residual stream a block owns (D / blocks)

// The fixed part of the block's shared memory; the input rows and the stages follow (MakeLayout).
struct Fixed {
  unsigned long long full[kBatchedMaxStages], empty[kBatchedMaxStages];
  float part[2][kConsumerWarps][kGroupRows][kMaxBatch];  // a group's warp sums (double-buffered)
  StateScratch state;
  float gate[kMaxHeadV];  // the gate norm's factors of the (sequence, head) being updated (PrepareHead)
  float x_own[kMaxBatch][kMaxOwnRows];  // the block's rows of each sequence's residual stream
  unsigned long long arrived;  // trace: when thread 0's block wrote its words of a tagged exchange
};

BatchedLayout MakeLayout(const PersistentDecodeParams& p) {
  return MakeBatchedLayout(std::max({p.D, p.I, p.H * p.dv}), p.batch, static_cast<int>(sizeof(Fixed)));
}

// ---- The weight stream ----

// A matrix and its tiles (persistent_batched_tiling.h).
struct Tiling : SegmentTiling {
  MatrixRef m;
};

__device__ __forceinline__ Tiling MakeTiling(const MatrixRef& m, int tile_bytes) {
  Tiling t;
  static_cast<SegmentTiling&>(t) = MakeSegmentTiling(m.row_bytes, m.pair, BatchedMaxSegBytes(tile_bytes));
  t.m = m;
  return t;
}

// The producer warp: every tile of the block's step in the consumers' order (per matrix, per group,
// per segment), lane u copying the tile's row u.
__device__ void Produce(const PersistentDecodeParams& p, Fixed& f, unsigned char* stages, int nstages, int b, int G) {
  const unsigned long long policy = EvictFirstPolicy();
  const int lane = threadIdx.x % 32;
  const int count = MatrixCount(p);
  unsigned tile = 0;
  for (int i = 0; i < count; ++i) {
    const Tiling t = MakeTiling(MatrixRefAt(p, i), p.tile_bytes);
    const MatrixRef& m = t.m;
    int64_t r0, r1;
    BlockRows(m, b, G, &r0, &r1);
    for (int64_t r = r0; r < r1; r += t.group) {
      const int rows = static_cast<int>(r1 - r < t.group ? r1 - r : t.group);
      const int copies = m.pair ? 2 * rows : rows;
      for (int sg = 0; sg < t.segs; ++sg, ++tile) {
        const int slot = static_cast<int>(tile % nstages);
        const unsigned ahead = static_cast<unsigned>(p.tiles_in_flight);
        if (lane == 0 && ahead > 0 && tile >= ahead)  // tile - ahead landed (PersistentDecodeParams)
          MbarWait(&f.full[(tile - ahead) % nstages], ((tile - ahead) / nstages) & 1);
        if (lane == 0 && tile >= static_cast<unsigned>(nstages))
          MbarWait(&f.empty[slot], ((tile / nstages) - 1) & 1);
        const unsigned len = static_cast<unsigned>(t.SegLen(sg));
        if (lane == 0) MbarExpectTx(&f.full[slot], copies * len);
        __syncwarp();
        if (lane < copies) {
          const bool up = m.pair && lane >= rows;
          const int u = up ? kGroupRows / 2 + (lane - rows) : lane;  // the stage row: up rows from 8
          const int64_t src = up ? m.n + r + (lane - rows) : r + lane;
          BulkCopy(stages + static_cast<size_t>(slot) * kStageBytes + u * t.stride,
                   m.w + src * m.row_bytes + static_cast<int64_t>(sg) * t.seg_bytes, len, &f.full[slot], policy);
        }
      }
    }
  }
}

// One 16-byte chunk of stage rows g (wl) and g + 8 (wh) against input row g's matching chunk(s)
// (x: the row's first chunk for this tile's segment) into acc.
template <PersistentWeights K>
__device__ __forceinline__ void MmaChunk(float (&acc)[4], const uint4& wl, const uint4& wh, const uint4* x, int c,
                                         bool x_ok) {
  // Loads under a branch, not a select between two addresses (that became a generic load from a
  // local zero or shared memory).
  if constexpr (K == PersistentWeights::kBf16) {
    uint4 xv = make_uint4(0, 0, 0, 0);
    if (x_ok) xv = x[c];
    MmaBf16(acc, wl.x, wh.x, wl.y, wh.y, xv.x, xv.y);
    MmaBf16(acc, wl.z, wh.z, wl.w, wh.w, xv.z, xv.w);
  } else {
    constexpr auto widen = K == PersistentWeights::kFp8 ? Fp8x2ToFloat2 : Int8x2ToFloat2;
    uint4 l0, l1, h0, h1;
    ByteChunkToBf16<BytePairToBf16x2<widen>>(wl, l0, l1);  // exact (mma_sync.cuh)
    ByteChunkToBf16<BytePairToBf16x2<widen>>(wh, h0, h1);
    uint4 x0 = make_uint4(0, 0, 0, 0), x1 = x0;
    if (x_ok) {
      x0 = x[2 * c];
      x1 = x[2 * c + 1];
    }
    MmaBf16(acc, l0.x, h0.x, l0.y, h0.y, x0.x, x0.y);
    MmaBf16(acc, l0.z, h0.z, l0.w, h0.w, x0.z, x0.w);
    MmaBf16(acc, l1.x, h1.x, l1.y, h1.y, x1.x, x1.y);
    MmaBf16(acc, l1.z, h1.z, l1.w, h1.w, x1.z, x1.w);
  }
}

// A warp's share of one tile: slices warp, warp + 8, ... of the segment (chunks [0, chunks) of each
// stage row, from the segment's first input chunk x).
template <PersistentWeights K>
__device__ __forceinline__ void TileMma(float (&acc)[4], const unsigned char* stage, int stride, int chunks,
                                        const uint4* x, bool x_ok) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const uint4* lo = reinterpret_cast<const uint4*>(stage + g * stride);
  const uint4* hi = reinterpret_cast<const uint4*>(stage + (g + 8) * stride);
  const int slices = (chunks + 3) / 4;
  for (int sl = warp; sl < slices; sl += kConsumerWarps) {
    const int c = 4 * sl + t;
    const bool ok = c < chunks;  // past the segment: zeros (the stage's bytes there are another row's)
    uint4 wl = make_uint4(0, 0, 0, 0), wh = wl;
    if (ok) {
      wl = lo[c];
      wh = hi[c];
    }
    MmaChunk<K>(acc, wl, wh, x, c, x_ok && ok);
  }
}

struct Context {
  const PersistentDecodeParams& p;
  Fixed& f;
  const unsigned char* rows;  // the input rows, row_stride bytes apart
  const unsigned char* stages;
  int row_stride, nstages, b, G;
  unsigned tile = 0, groups = 0;
};

// The consumers' side of matrix i: every tile of the block's rows, then per group
// epilogue(row, sequence, value, up value) by one thread per (row, sequence) of the group.
template <class Epilogue>
__device__ __forceinline__ void Consume(Context& c, int i, Epilogue&& epilogue) {
  const Tiling t = MakeTiling(MatrixRefAt(c.p, i), c.p.tile_bytes);
  const MatrixRef& m = t.m;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, q = lane % 4;
  const bool x_ok = g < c.p.batch;
  const uint4* xrow = reinterpret_cast<const uint4*>(c.rows + g * c.row_stride);
  int64_t r0, r1;
  BlockRows(m, c.b, c.G, &r0, &r1);
  for (int64_t r = r0; r < r1; r += t.group) {
    const int rows = static_cast<int>(r1 - r < t.group ? r1 - r : t.group);
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    for (int sg = 0; sg < t.segs; ++sg, ++c.tile) {
      const int slot = static_cast<int>(c.tile % c.nstages);
      MbarWait(&c.f.full[slot], (c.tile / c.nstages) & 1);
      const unsigned char* stage = c.stages + static_cast<size_t>(slot) * kStageBytes;
      const int chunks = t.SegLen(sg) / 16;
      // The segment's first input chunk: chunk for chunk with bf16 weights, two per one-byte chunk.
      const int first = sg * t.seg_bytes / 16 * (m.kind == PersistentWeights::kBf16 ? 1 : 2);
      switch (m.kind) {  // the same for the whole matrix
        case PersistentWeights::kFp8: TileMma<PersistentWeights::kFp8>(acc, stage, t.stride, chunks, xrow + first, x_ok); break;
        case PersistentWeights::kInt8: TileMma<PersistentWeights::kInt8>(acc, stage, t.stride, chunks, xrow + first, x_ok); break;
        default: TileMma<PersistentWeights::kBf16>(acc, stage, t.stride, chunks, xrow + first, x_ok); break;
      }
      __syncwarp();
      if (lane == 0) MbarArrive(&c.f.empty[slot]);  // this warp is done with the stage
    }
    float(&part)[kConsumerWarps][kGroupRows][kMaxBatch] = c.f.part[c.groups & 1];
    part[warp][g][2 * q] = acc[0];
    part[warp][g][2 * q + 1] = acc[1];
    part[warp][g + 8][2 * q] = acc[2];
    part[warp][g + 8][2 * q + 1] = acc[3];
    ConsumerSync();
    const int u = threadIdx.x / kMaxBatch, n = threadIdx.x % kMaxBatch;  // (stage row or pair, sequence)
    if (u < rows && n < c.p.batch) {
      float v = 0.f, up = 0.f;
#pragma unroll
      for (int w = 0; w < kConsumerWarps; ++w) v += part[w][u][n];
      if (m.pair)
#pragma unroll
        for (int w = 0; w < kConsumerWarps; ++w) up += part[w][u + kGroupRows / 2][n];
      if (m.scale != nullptr) {  // one-byte rows: each row's sum scaled once
        v *= __ldg(m.scale + r + u);
        if (m.pair) up *= __ldg(m.scale + m.n + r + u);
      }
      epilogue(r + u, n, v, up);
    }
    ++c.groups;  // the next group writes the other part buffer: no second barrier here
  }
}

// ---- The consumers' input rows (a bf16 row per sequence in shared memory) ----

__device__ __forceinline__ __nv_bfloat16* InputRow(const Context& c, int seq) {
  return reinterpret_cast<__nv_bfloat16*>(const_cast<unsigned char*>(c.rows) + seq * c.row_stride);
}

// Row s = bf16(RMSNorm(x_s) * w) for each sequence s (x fp32 [batch, n], written by other blocks):
// warp s, two passes over x_s in L2.
__device__ __forceinline__ void NormRows(const Context& c, const float* x, const float* w, int n) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (warp < c.p.batch) {
    const float4* xs = reinterpret_cast<const float4*>(x + static_cast<int64_t>(warp) * n);
    float ss = 0.f;
    for (int i = lane; i < n / 4; i += 32) {
      const float4 v = __ldcg(xs + i);
      ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
    }
    const float inv = rsqrtf(WarpSum(ss) / n + c.p.eps);
    __nv_bfloat162* row = reinterpret_cast<__nv_bfloat162*>(InputRow(c, warp));
    const float4* w4 = reinterpret_cast<const float4*>(w);
    for (int i = lane; i < n / 4; i += 32) {
      const float4 v = __ldcg(xs + i), nw = __ldg(w4 + i);
      row[2 * i] = __floats2bfloat162_rn(v.x * inv * nw.x, v.y * inv * nw.y);
      row[2 * i + 1] = __floats2bfloat162_rn(v.z * inv * nw.z, v.w * inv * nw.w);
    }
  }
  ConsumerSync();
}

// NormRows from tagged words (xw: [batch, n], tagged `tag`): the same warp per sequence and the same
// sums in the same order (so the same bits), its first pass waiting for the words (kGroups float4s'
// worth of words a lane in flight at once), its second reading their values (their tags seen).
__device__ __forceinline__ void NormRowsTagged(const Context& c, const unsigned long long* xw, unsigned tag,
                                               const float* w, int n) {
  constexpr int kGroups = 4;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (warp < c.p.batch) {
    const unsigned long long* xs = xw + static_cast<int64_t>(warp) * n;
    float ss = 0.f;
    for (int i0 = lane; i0 < n / 4; i0 += 32 * kGroups) {
      int64_t at[4 * kGroups];
      bool valid[4 * kGroups];
#pragma unroll
      for (int j = 0; j < 4 * kGroups; ++j) {
        at[j] = 4 * (i0 + 32 * (j / 4)) + j % 4;
        valid[j] = i0 + 32 * (j / 4) < n / 4;
      }
      float v[4 * kGroups];
      LoadTaggedAt(xs, at, valid, tag, v);
#pragma unroll
      for (int g = 0; g < kGroups; ++g) {
        if (!valid[4 * g]) break;
        const float4 q = make_float4(v[4 * g], v[4 * g + 1], v[4 * g + 2], v[4 * g + 3]);
        ss += q.x * q.x + q.y * q.y + q.z * q.z + q.w * q.w;
      }
    }
    const float inv = rsqrtf(WarpSum(ss) / n + c.p.eps);
    __nv_bfloat162* row = reinterpret_cast<__nv_bfloat162*>(InputRow(c, warp));
    const float4* w4 = reinterpret_cast<const float4*>(w);
    const float* values = reinterpret_cast<const float*>(xs);  // a word's low half: its value
    for (int i = lane; i < n / 4; i += 32) {
      const float4 nw = __ldg(w4 + i);
      const float4 v = make_float4(__ldcg(values + 8 * i), __ldcg(values + 8 * i + 2), __ldcg(values + 8 * i + 4),
                                   __ldcg(values + 8 * i + 6));
      row[2 * i] = __floats2bfloat162_rn(v.x * inv * nw.x, v.y * inv * nw.y);
      row[2 * i + 1] = __floats2bfloat162_rn(v.z * inv * nw.z, v.w * inv * nw.w);
    }
  }
  ConsumerSync();
}

// Row s = bf16(RMSNorm per head(o_s) * g_norm * swish(g_s)) from what the state update wrote: o
// times g_norm * swish(g) (p.o) and the sums of o's squares per 16-column slab (p.o_sumsq). A warp
// per (sequence, head), the warp's next pair loading while it finishes one (a lane: 16 values and
// one slab's sum each).
struct GatedHead {
  float y[kGateNormPer];
  float ss;

  __device__ __forceinline__ void Load(const PersistentDecodeParams& p, int pair) {
    const int lane = threadIdx.x % 32, slabs = p.dv / kStateCols;
    const float* yh = p.o + static_cast<int64_t>(pair) * p.dv;  // pair = seq H + h: [batch, H dv] rows
#pragma unroll
    for (int j = 0; j < kGateNormPer; ++j) y[j] = lane + 32 * j < p.dv ? __ldcg(yh + lane + 32 * j) : 0.f;
    ss = lane < slabs ? __ldcg(p.o_sumsq + static_cast<int64_t>(pair) * slabs + lane) : 0.f;
  }

  __device__ __forceinline__ void Finish(const PersistentDecodeParams& p, __nv_bfloat16* row) const {
    const int lane = threadIdx.x % 32;
    const float inv = rsqrtf(WarpSum(ss) / p.dv + p.eps);
#pragma unroll
    for (int j = 0; j < kGateNormPer; ++j)
      if (lane + 32 * j < p.dv) row[lane + 32 * j] = __float2bfloat16(y[j] * inv);
  }
};

__device__ __forceinline__ void GateNormRows(const Context& c) {
  const PersistentDecodeParams& p = c.p;
  const int pairs = p.batch * p.H;
  const int warp = threadIdx.x / 32;
  if (warp < pairs) {
    GatedHead next;
    next.Load(p, warp);
    for (int a = warp; a < pairs; a += kConsumerWarps) {
      const GatedHead here = next;
      if (a + kConsumerWarps < pairs) next.Load(p, a + kConsumerWarps);
      here.Finish(p, InputRow(c, a / p.H) + (a % p.H) * p.dv);
    }
  }
  ConsumerSync();
}

// Row s = act_s (bf16 [batch, n], written by other blocks).
__device__ __forceinline__ void ActRows(const Context& c, const __nv_bfloat16* act, int n) {
  const int per = n / 8;
  for (int i = threadIdx.x; i < c.p.batch * per; i += kConsumers) {
    const int seq = i / per, j = i % per;
    reinterpret_cast<uint4*>(InputRow(c, seq))[j] =
        __ldcg(reinterpret_cast<const uint4*>(act + static_cast<int64_t>(seq) * n) + j);
  }
  ConsumerSync();
}

// ActRows from tagged words (aw: [batch, n] fp32 words holding the bf16 values, tagged `tag`), a
// thread's kChunk words in flight at once.
__device__ __forceinline__ void ActRowsTagged(const Context& c, const unsigned long long* aw, unsigned tag, int n) {
  constexpr int kChunk = 24;
  const int total = c.p.batch * n;
  for (int i0 = threadIdx.x; i0 < total; i0 += kChunk * kConsumers) {
    float chunk[kChunk];
    LoadTagged(aw, i0, kConsumers, total, tag, chunk);
#pragma unroll
    for (int j = 0; j < kChunk; ++j) {
      const int i = i0 + j * kConsumers;
      if (i < total) InputRow(c, i / n)[i % n] = __float2bfloat16(chunk[j]);
    }
  }
  ConsumerSync();
}

// ---- The step ----

// kTagged: x after o_proj and down and act after gate|up as tagged words (p.tagged: x's [batch, D],
// then act's [batch, I]), not through grid barriers (two of the five a layer stay: after in_proj and
// after the state update); the batch-1 kernel's level 1 (persistent_decode.cu).
template <int R, bool kTagged>
__device__ void ConsumeStep(Context& c) {
  const PersistentDecodeParams& p = c.p;
  const int b = c.b, G = c.G;
  // The grid barrier at point k of layer l (0: after in_proj, 1: after the state update, and without
  // tagged words 2-4: after o_proj, gate|up, down), its trace entry 5 l + k + 1 either way.
  auto sync = [&](int l, int k) {
    const unsigned entry = static_cast<unsigned>(5 * l + k + 1);
    GridSync(p.barrier, kTagged ? static_cast<unsigned>(2 * l + k + 1) : entry, p.trace, entry);
  };
  // A tagged exchange's trace entry: arrived (the block's own words written) from c.f.arrived, left now.
  auto mark = [&](int l, int k) {
    if (p.trace != nullptr && threadIdx.x == 0) {
      unsigned long long* at = p.trace + (static_cast<size_t>(5 * l + k + 1) * G + b) * 2;
      at[0] = c.f.arrived;
      at[1] = GlobalTimer();
    }
  };
  auto arrive = [&] {
    if (p.trace != nullptr && threadIdx.x == 0) c.f.arrived = GlobalTimer();
  };
  unsigned long long* const xw = p.tagged;  // x's words [batch, D], then act's [batch, I]
  unsigned long long* const aw = kTagged ? p.tagged + int64_t{p.batch} * p.D : nullptr;
  if (p.trace != nullptr && threadIdx.x == 0) p.trace[2 * b] = p.trace[2 * b + 1] = GlobalTimer();  // entry 0: start
  const int cols = p.dv / kStateCols;  // a head's items per sequence
  const int items = p.batch * p.H * cols;
  const int64_t x0 = int64_t{p.D} * b / G, x1 = int64_t{p.D} * (b + 1) / G;
  const int own = static_cast<int>(x1 - x0);
  for (int i = threadIdx.x; i < p.batch * kMaxOwnRows; i += kConsumers) {  // the embedding rows
    const int seq = i / kMaxOwnRows, j = i % kMaxOwnRows;
    if (j < own) c.f.x_own[seq][j] = __ldcg(p.x + static_cast<int64_t>(seq) * p.D + x0 + j);
  }
  // x_seq[n] += v (n: one of the block's rows), and with tagged words x_seq's word n tagged (l, e).
  auto residual = [&](int l, int e) {
    return [&c, &p, x0, xw, l, e](int64_t n, int seq, float v, float) {
      float& mine = c.f.x_own[seq][n - x0];
      mine = v + mine;
      const int64_t at = static_cast<int64_t>(seq) * p.D + n;
      __stcg(p.x + at, mine);
      if (kTagged) TaggedStore(xw + at, mine, ExchangeTag(p, l, e));
    };
  };
  // The rows of the norm of x: from p.x after a barrier, or from the tagged words of layer l's
  // exchange at point e (layer -1: the embedding, plain), with that point's trace entry.
  auto norm_rows = [&](const float* w, int l, int e) {
    if (kTagged && l >= 0) {
      NormRowsTagged(c, xw, ExchangeTag(p, l, e), w, p.D);
      mark(l, e);
    } else {
      NormRows(c, p.x, w, p.D);
    }
  };
  for (int l = 0; l < p.num_layers; ++l) {
    const PersistentDecodeLayer& L = p.layers[l];
    norm_rows(L.attn_norm, l - 1, 4);
    // Block b's items [i0, i1) of the batch's, head-major (a head's items are the batch's sequences'
    // 16-column slabs in turn), so consecutive items mostly share a (sequence, head): its q, k and
    // decays are made once for them (PrepareHead), and its gate factor rows loaded once per key head.
    // The next item's state rows and v load during an update (its factor rows too cost spills).
    // The first item's loads go before the barrier after in_proj (the state is not this step's),
    // with early_state_loads before in_proj's tiles (that barrier's release waits for them).
    StateItem<R> item;
    StateRows<R> next;
    int i0, i1;
    BatchedStateRun(items, b, G, &i0, &i1);
    auto item_of = [&](int it, int* seq) { return BatchedStateItem(it, cols, p.batch, seq); };
    int seq = 0;
    const int first = i0 < i1 ? item_of(i0, &seq) : 0;  // sets seq before p.slots[seq] is read below
    if (p.early_state_loads && i0 < i1) item.Load(p, L, first, p.slots[seq]);
    Consume(c, 4 * l, [&](int64_t n, int sq, float v, float) { __stcg(p.proj + static_cast<int64_t>(sq) * p.P + n, v); });
    if (!p.early_state_loads && i0 < i1) item.Load(p, L, first, p.slots[seq]);
    sync(l, 0);
    float4 v = i0 < i1 ? item.LoadV(p, seq) : make_float4(0.f, 0.f, 0.f, 0.f);
    int prepared_h = -1, prepared_seq = -1, buf = 0;
    for (int it = i0; it < i1; ++it) {
      const bool more = it + 1 < i1;
      int next_seq = 0;
      float4 next_v;
      if (more) {  // in flight during this update
        next.LoadRows(p, L, item_of(it + 1, &next_seq), p.slots[next_seq]);
        next_v = next.LoadV(p, next_seq);
      }
      if (item.h != prepared_h || seq != prepared_seq) {
        item.PrepareHead(p, L, seq, c.f.state, c.f.gate);
        ConsumerSync();
        prepared_h = item.h;
        prepared_seq = seq;
      }
      item.template UpdateRows<true>(p, seq, v, c.f.state, buf, c.f.gate);
      buf ^= 1;
      if (more) {
        const int hk = item.hk;
        static_cast<StateRows<R>&>(item) = next;
        if (item.hk != hk) item.LoadGate(p, L);
        seq = next_seq;
        v = next_v;
      }
    }
    sync(l, 1);
    GateNormRows(c);
    Consume(c, 4 * l + 1, residual(l, 2));
    if (kTagged) arrive();
    else sync(l, 2);
    norm_rows(L.mlp_norm, kTagged ? l : -1, 2);
    Consume(c, 4 * l + 2, [&](int64_t n, int seq, float g, float u) {  // activations.cu's SwiGLU
      const float a = __bfloat162float(__float2bfloat16(g)), up = __bfloat162float(__float2bfloat16(u));
      const __nv_bfloat16 act = __float2bfloat16(a / (1.f + __expf(-a)) * up);
      const int64_t at = static_cast<int64_t>(seq) * p.I + n;
      if (kTagged) TaggedStore(aw + at, __bfloat162float(act), ExchangeTag(p, l, 3));
      else p.act[at] = act;  // tagged: the words are what ActRowsTagged reads
    });
    if (kTagged) {
      arrive();
      ActRowsTagged(c, aw, ExchangeTag(p, l, 3), p.I);
      mark(l, 3);
    } else {
      sync(l, 3);
      ActRows(c, p.act, p.I);
    }
    Consume(c, 4 * l + 3, residual(l, 4));
    if (kTagged) arrive();
    else sync(l, 4);
  }
  const int last = p.num_layers - 1;
  if (p.logits != nullptr) {
    norm_rows(p.final_norm, kTagged ? last : -1, 4);
    Consume(c, 4 * p.num_layers,
            [&](int64_t n, int seq, float v, float) { __stcg(p.logits + static_cast<int64_t>(seq) * p.vocab + n, v); });
  } else if (kTagged) {
    mark(last, 4);  // nothing waits on the last down's words: the entry, for the trace's count
  }
  if (p.trace != nullptr && threadIdx.x == 0) {  // the last entry: the block's end
    unsigned long long* at = p.trace + (static_cast<size_t>(5 * p.num_layers + 1) * G + b) * 2;
    at[0] = at[1] = GlobalTimer();
  }
}

template <int R, bool kTagged>
__global__ void __launch_bounds__(kThreads, 1)
    BatchedDecodeKernel(const PersistentDecodeParams p, const BatchedLayout layout) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  extern __shared__ __align__(128) unsigned char smem[];
  Fixed& f = *reinterpret_cast<Fixed*>(smem);
  unsigned char* stages = smem + layout.stages_offset;
  if (threadIdx.x == 0) InitStageBarriers(f.full, f.empty, layout.stages);
  __syncthreads();
  if (threadIdx.x >= kConsumers) {
    Produce(p, f, stages, layout.stages, blockIdx.x, gridDim.x);
    return;
  }
  Context c{p, f, smem + layout.rows_offset, stages, layout.row_stride, layout.stages,
            static_cast<int>(blockIdx.x), static_cast<int>(gridDim.x)};
  ConsumeStep<R, kTagged>(c);
#endif
}

template <int R>
cudaError_t SetSmem() {
  for (auto kernel : {BatchedDecodeKernel<R, false>, BatchedDecodeKernel<R, true>}) {
    const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kBatchedSmemLimit);
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

// The kernel of p's exchanges: grid barriers, or x and act as tagged words (p.tagged).
template <int R>
cudaError_t Launch(const CooperativeLaunch& launch, const PersistentDecodeParams& p, const BatchedLayout& layout) {
  if (p.tagged == nullptr || !p.tagged_residual)  // x and act through barriers (tagged_proj is batch 1's)
    return cudaLaunchKernelEx(&launch.config, BatchedDecodeKernel<R, false>, p, layout);
  return cudaLaunchKernelEx(&launch.config, BatchedDecodeKernel<R, true>, p, layout);
}

}  // namespace

bool BatchedLayoutFits(const PersistentDecodeParams& p) {
  if (p.batch < 2 || p.batch > kMaxBatch || (p.D + p.blocks - 1) / std::max(p.blocks, 1) > kMaxOwnRows ||
      p.dv > kMaxHeadV || p.D % 4 != 0)
    return false;
  const BatchedLayout l = MakeLayout(p);
  return l.stages >= kBatchedMinStages && l.bytes <= kBatchedSmemLimit;
}

BatchedLayout BatchedLayoutFor(const PersistentDecodeParams& p) { return MakeLayout(p); }

bool PrepareBatchedKernels() {
  return SetSmem<1>() == cudaSuccess && SetSmem<2>() == cudaSuccess && SetSmem<4>() == cudaSuccess;
}

cudaError_t BatchedDecodeStep(const PersistentDecodeParams& p, cudaStream_t stream) {
  const BatchedLayout layout = MakeLayout(p);
  const CooperativeLaunch launch(p.blocks, static_cast<size_t>(layout.bytes), stream);
  switch (p.dk / kStateGroups) {
    case 1: return Launch<1>(launch, p, layout);
    case 2: return Launch<2>(launch, p, layout);
    default: return Launch<4>(launch, p, layout);
  }
}

}  // namespace gla::cuda::persistent
