// GLA prefill in the chunkwise form on tensor cores (bf16 mma.sync, fp32 accumulation, fp32 state;
// the pool's copy of it fp32 or bf16, kernels/state_slots.h), many variable-length sequences per
// launch. The CPU reference of the same algorithm is kernels/cpu/gla_chunkwise.cc; the definition
// is cpu::GlaRecurrentNaive.
//
// Per head, a chunk of C = 64 tokens starting from state S (b_t = inclusive cumsum of g in the chunk):
//   o_t = (scale q_t . exp(b_t)) S + sum_{s<=t} A_ts v_s            ("inter" + "intra")
//   S'  = diag(exp(b_63)) S + sum_s (k_s . exp(b_63 - b_s))^T v_s      (every exponent <= 0)
// A (64 x 64, lower triangle) is built from sub-chunks of 16: for s in sub-chunk j < i, with r the
// first row of sub-chunk i, A_ts = (q_t . exp(b_t - b_r)) . (k_s . exp(b_r - b_s)) - a bf16 matmul
// whose exponents are all <= 0; inside one sub-chunk A_ts = sum_x q_tx k_sx exp(b_tx - b_sx), exact
// in fp32, with exp(b_t - b_s) formed as the product of the per-token factors exp(g_u), s < u <= t
// (each <= 1: no cancellation in b_t - b_s, and no exp per (t, s) pair).
//
// Three kernels, because the work splits into a part that is parallel over chunks and a part that
// is sequential along the sequence:
//  1. Prep (grid: chunk x head; 256 threads, 2 blocks/SM): reads q, k, g (fp32) once and writes
//     bf16 qg = scale q exp(b), kg = k exp(b_63 - b), fp32 decay = exp(b_63) per chunk, and the
//     bf16 intra-chunk matrix A. dk is walked in slices of 64 columns so that the fp32 staging
//     (75 KB) leaves room for two blocks per SM; A's partial sums stay in registers across slices.
//     The diagonal sub-chunks are computed from registers (each lane holds k and exp(g) of the 16
//     rows for its two columns; the 16 per-row sums are reduced across lanes with 16 shuffles) and
//     the off-diagonal operands are running products of exp(g), because a first version that read
//     k and b from smem per (t, s) pair and called exp per pair was bound by smem and MUFU
//     (this kernel took 60% longer). Short prompts (chunk x head blocks fewer than the SMs: a
//     512-token prompt at gla-1.3B is 32 blocks for 132 SMs) run it as clusters of dk / 64 blocks,
//     one slice each, A's partial sums added across the cluster through distributed shared memory.
//     With GlaPrefillCudaParams::gate, g is made here from its low-rank factors as it is loaded (the
//     slice's 64 columns of w1 and the chunk's factor rows staged in shared memory first) instead
//     of read: the engine's gate launch, its write of g and this read of it go (the same bits).
//  2. Main (grid: segment x head x 64-column dv tile; 8 warps): walks the chunks of its segment with
//     the state slice S^T [64 dv, dk] in registers. Warp w owns 16 dv rows (w % 4) and half of dk
//     (w / 4). The state is kept transposed in the mma accumulator layout because that layout is
//     exactly the A-operand layout of the next chunk's o^T = S^T qg^T (the FlashAttention-2
//     P-in-registers trick): the inter-chunk product reads S from registers, no smem round trip.
//     Per chunk: o^T = S^T qg^T + V^T A^T (the two dk halves reduce through smem, then o is written
//     coalesced), S^T = S^T diag(decay) + V^T kg. qg/kg/A/V of the next chunk stream in with
//     cp.async (double buffer, ~200 KB smem at dk = 256). The q/k side is shared by the dv tiles of
//     a head through L2; the fp32 v is read once per tile (each tile reads only its columns).
//  3. Segments, for parallelism when few sequences are packed (batch 1: H x dv/64 = 32 blocks is a
//     quarter of an H100): a sequence is cut into segments; a state-only pass of the main kernel
//     computes each segment's local end state from zero (and its total decay) into the workspace,
//     then every segment's main block starts from S_in = D_{j-1} (... (D_0 S_0 + L_0) ...) + L_{j-1}.
//     Only a few segment states are written (not one per chunk). Chosen on the host from the
//     number of blocks vs. multiprocessors; the plan also sizes the workspace.
//
// Measured on H100 (tests/cuda/gla_prefill_bench.cc): gla-1.3B heads, 16K tokens: ~0.46 ms (B8, B4),
// ~0.60 ms (B2, B1: + the state-only pass). Prep is ~40% (HBM ~40% busy: latency of its phases),
// main ~60%: each chunk step re-reads 92 KB of bf16 qg/kg/A + fp32 v per block from L2 (8 dv tiles
// share a head's qg/kg) and waits at four barriers with 8 warps per SM; tensor pipes ~20% busy.
// Next steps: wgmma with the state as a register A operand and qg/kg from smem, TMA multicast of
// qg/kg across the dv tiles of a head (a cluster), and fusing prep into main through that cluster.
// Rows beyond a sequence's end are zero-filled in smem (cp.async zfill), never read or written.
// Each kernel is a programmatic dependent launch (kernels/cuda/launch.cuh) that waits for the kernel
// before it first thing and then lets the next one launch: the main kernel's grid is set up while
// prep (or the state-only pass) drains, and the gate norm's while main does, at a prefill's three
// to four boundaries a layer (not measured alone; the engine A/B is in docs/performance.md).
#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/cuda/forget_gate.cuh"
#include "kernels/cuda/gla_chunk_common.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/state_values.cuh"
#include "kernels/gla.h"

namespace gla::cuda {

namespace {

using namespace chunk;  // kChunk, kSub, bf16, the PTX wrappers, FindUnit (gla_chunk_common.cuh)
static_assert(kChunk == 4 * kSub, "the prep kernel's sub-chunk bookkeeping assumes 4 sub-chunks");
constexpr int kDvTile = 64;  // value columns per main block
constexpr int kThreads = 256;
constexpr int64_t kNoSplit = int64_t{1} << 40;  // a segment length no sequence reaches

// Device workspace carved by the host plan (see Plan below).
struct Workspace {
  bf16* qg;          // [tokens, H, dk]    scale * q * exp(b)
  bf16* kg;          // [tokens, Hkv, dk]  k * exp(b_last - b)
  bf16* A;           // [tokens, H, 64]    intra-chunk matrix row t (scale included), zero above the diagonal
  float* decay;      // [chunk ids, Hkv, dk]  exp(b_last)
  float* seg_state;  // [segment ids, Hkv, dk, dv]  local end state of a segment from zero
  float* seg_decay;  // [segment ids, Hkv, dk]      product of its chunk decays
  int64_t seg_len;   // tokens per segment (multiple of 64), kNoSplit when sequences are not cut
};

// ---------------------------------------------------------------------------------------------
// Small helpers (the PTX wrappers are in gla_chunk_common.cuh).

// Sum of v[j] over the 32 lanes for all 16 j with 16 shuffles (each step halves the values a lane
// carries): on return, lane L holds the total for j = (L >> 1) & 15.
__device__ __forceinline__ float TransposeReduce16(float (&v)[16], int lane) {
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const bool up = lane & 16;
    const float send = up ? v[i] : v[i + 8], keep = up ? v[i + 8] : v[i];
    v[i] = keep + __shfl_xor_sync(0xffffffffu, send, 16);
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const bool up = lane & 8;
    const float send = up ? v[i] : v[i + 4], keep = up ? v[i + 4] : v[i];
    v[i] = keep + __shfl_xor_sync(0xffffffffu, send, 8);
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const bool up = lane & 4;
    const float send = up ? v[i] : v[i + 2], keep = up ? v[i + 2] : v[i];
    v[i] = keep + __shfl_xor_sync(0xffffffffu, send, 4);
  }
  {
    const bool up = lane & 2;
    const float send = up ? v[0] : v[1], keep = up ? v[1] : v[0];
    v[0] = keep + __shfl_xor_sync(0xffffffffu, send, 2);
  }
  return v[0] + __shfl_xor_sync(0xffffffffu, v[0], 1);
}

// ---------------------------------------------------------------------------------------------
// 1. Prep: gated bf16 q/k, decays and the intra-chunk matrix A, per (chunk, head).

// GlaPrefillCudaParams::gate: a slice's gate factors, staged before its loads (over the union below,
// which is free until the cumsum): the chunk's rows of the low-rank factor, and w1's rows for the
// slice's 64 columns transposed, so that a thread's four columns are one float4 for every k.
struct GateStage {
  float lr[kChunk][kChunkPrepMaxGateRank];
  float w1t[kChunkPrepMaxGateRank][68];
  float bias[64];
};

struct PrepSmem {
  float q[kChunk][68];  // scale * q (fp32), one 64-column slice of dk; 68: conflict-free float2 rows
  float k[kChunk][68];
  float a[kChunk][68];  // g while loading, then exp(g)
  float tot[8][kChunk];  // per 8-row group column sums of g (cumsum offsets)
  union {
    struct {
      bf16 qr[48][72];  // sub-chunks 1..3: q_t exp(b_t - b_r), r = first row of the sub-chunk
      bf16 kr[96][72];  // for sub-chunk i = 1..3 (rows 0 / 16 / 48): k_s exp(b_r - b_s), s < r
    } op;
    bf16 aout[kChunk][72];  // after the last slice
    GateStage gate;         // while a slice loads, when the gate is made here
  } u;
};
static_assert(sizeof(GateStage) <= sizeof(bf16) * (48 + 96) * 72,  // qr and kr
              "the gate's factors take no shared memory of their own");

// Stages the factors of rows [0, L) of the chunk (lowrank at its first row) and of columns
// [col0, col0 + 64) of w1 and the bias; every thread of the block takes part.
__device__ __forceinline__ void StageGateFactors(const GlaGateFactors& f, const float* lowrank, int L, int col0,
                                                 GateStage& s) {
  const int rank = f.rank;
  for (int i = threadIdx.x; i < L * rank; i += kThreads)
    s.lr[i / rank][i % rank] = lowrank[int64_t{i / rank} * f.lowrank_stride + i % rank];
  for (int i = threadIdx.x; i < 64 * rank; i += kThreads)
    s.w1t[i % rank][i / rank] = __ldg(f.w1 + int64_t{col0 + i / rank} * rank + i % rank);
  if (threadIdx.x < 64) s.bias[threadIdx.x] = f.bias != nullptr ? __ldg(f.bias + col0 + threadIdx.x) : 0.f;
}

// The gates of row r's columns c4 .. c4 + 3 of the slice: LowRankGate's sum in its order (bias,
// then one fma per k) and forget_gate.cuh's activation, so the same bits as the g it would write.
__device__ __forceinline__ float4 MadeGates(const GlaGateFactors& f, const GateStage& s, int r, int c4) {
  float4 z = *reinterpret_cast<const float4*>(&s.bias[c4]);
  for (int k = 0; k < f.rank; ++k) {
    const float l = s.lr[r][k];
    const float4 w = *reinterpret_cast<const float4*>(&s.w1t[k][c4]);
    z.x = fmaf(l, w.x, z.x);
    z.y = fmaf(l, w.y, z.y);
    z.z = fmaf(l, w.z, z.z);
    z.w = fmaf(l, w.w, z.w);
  }
  return make_float4(GateOf(z.x, f.inv_normalizer, f.has_clamp, f.clamp_min),
                     GateOf(z.y, f.inv_normalizer, f.has_clamp, f.clamp_min),
                     GateOf(z.z, f.inv_normalizer, f.has_clamp, f.clamp_min),
                     GateOf(z.w, f.inv_normalizer, f.has_clamp, f.clamp_min));
}
__host__ __device__ constexpr int KrBase(int i) { return i == 1 ? 0 : i == 2 ? 16 : 48; }

// kSplit: a cluster of DK / 64 blocks per (chunk, head), one 64-column slice each (short prompts:
// chunk x head alone leaves most SMs idle, and a block's slices run one after another). Each block
// writes its slice's qg, kg and decays; A's partial sums (the diagonal sub-chunks' and the
// off-diagonal tiles') are added up by the cluster's first block through distributed shared
// memory, slice by slice in order: the diagonal sums as without the split (bit for bit), the
// off-diagonal tiles to fp32 rounding of the same products.
// kMakeGate: g made here from p.gate's factors, not read (a form of its own, so that the form that
// reads g, the default, is the same source as before the gate could be made here).
template <int DK, bool kSplit, bool kMakeGate>
__global__ void __launch_bounds__(kThreads, 2) GlaChunkPrepKernel(const GlaPrefillCudaParams p, const Workspace w) {
  static_assert(DK % 64 == 0 && DK <= 256, "dk is walked in 64-column slices");
  constexpr int kSlices = DK / 64;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  PrepSmem& sm = *reinterpret_cast<PrepSmem*>(smem_raw);
  WaitForPredecessor();  // kernels/cuda/launch.cuh: nothing is read before the kernel before it is done
  LetDependentsLaunch();
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int h = blockIdx.y;
  // The blocks of one cluster share a unit, so they all return here or none does.
  const int slice = kSplit ? static_cast<int>(blockIdx.x % kSlices) : 0;
  const unsigned unit = kSplit ? blockIdx.x / kSlices : blockIdx.x;
  int n;
  int64_t c;
  if (!FindUnit(p.cu_seqlens, p.num_seqs, unit, kChunk, &n, &c)) return;
  const int t0 = p.cu_seqlens[n] + static_cast<int>(c) * kChunk;
  const int L = min(kChunk, p.cu_seqlens[n + 1] - t0);
  const int groups = p.H / p.Hkv, hk = h / groups;
  const bool own_kv = h % groups == 0;  // one head of each group writes kg and decay
  const float* qb = p.q + int64_t{t0} * p.q_stride + h * DK;
  const float* kb = p.k + int64_t{t0} * p.k_stride + hk * DK;
  const float* gb = p.g + int64_t{t0} * p.g_stride + hk * DK;
  const float* lrb = kMakeGate ? p.gate.lowrank + int64_t{t0} * p.gate.lowrank_stride : nullptr;

  // Off-diagonal sub-chunk pairs: warp w < 6 owns one 16 x 16 tile (i, j < i) for all slices.
  const int job_i = warp < 1 ? 1 : warp < 3 ? 2 : 3;
  const int job_j = warp < 1 ? 0 : warp < 3 ? warp - 1 : warp - 3;
  float off[2][4] = {};
  // Diagonal sub-chunks: warp w owns sub-chunk w / 2, rows (w & 1) + 2 i, i < 8.
  const int dsub = warp >> 1, dpar = warp & 1;
  float diag[8] = {};

  const int c_begin = kSplit ? 64 * slice : 0, c_end = kSplit ? c_begin + 64 : DK;
  for (int c0 = c_begin; c0 < c_end; c0 += 64) {
    if constexpr (kMakeGate) {
      StageGateFactors(p.gate, lrb, L, hk * DK + c0, sm.u.gate);
      __syncthreads();
    }
    for (int i = tid; i < kChunk * 16; i += kThreads) {
      const int r = i >> 4, c4 = (i & 15) * 4;
      float4 qv = make_float4(0.f, 0.f, 0.f, 0.f), kv = qv, gv = qv;
      if (r < L) {
        qv = __ldg(reinterpret_cast<const float4*>(qb + r * p.q_stride + c0 + c4));
        kv = __ldg(reinterpret_cast<const float4*>(kb + r * p.k_stride + c0 + c4));
        if constexpr (kMakeGate) gv = MadeGates(p.gate, sm.u.gate, r, c4);
        else gv = __ldg(reinterpret_cast<const float4*>(gb + r * p.g_stride + c0 + c4));
      }
      *reinterpret_cast<float4*>(&sm.q[r][c4]) = make_float4(p.scale * qv.x, p.scale * qv.y, p.scale * qv.z, p.scale * qv.w);
      *reinterpret_cast<float4*>(&sm.k[r][c4]) = kv;
      *reinterpret_cast<float4*>(&sm.a[r][c4]) = gv;  // rows >= L: g = 0, so b stays at b_{L-1}
    }
    __syncthreads();
    // Cumsum of g down the rows: thread = (2 adjacent columns, 8-row group); b stays in registers.
    const int cx = 2 * (tid & 31), rg = tid >> 5;
    float2 b[8];
    {
      float2 s = make_float2(0.f, 0.f);
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        float2* ap = reinterpret_cast<float2*>(&sm.a[rg * 8 + i][cx]);
        const float2 g = *ap;
        s.x += g.x;
        s.y += g.y;
        b[i] = s;
        *ap = make_float2(__expf(g.x), __expf(g.y));
      }
      *reinterpret_cast<float2*>(&sm.tot[rg][cx]) = s;
    }
    __syncthreads();
    {
      float2 offset = make_float2(0.f, 0.f), total = offset;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const float2 t = *reinterpret_cast<const float2*>(&sm.tot[j][cx]);
        if (j < rg) offset.x += t.x, offset.y += t.y;
        total.x += t.x;
        total.y += t.y;
      }
      bf16* qg = w.qg + int64_t{t0} * p.H * DK + h * DK + c0 + cx;
      bf16* kg = w.kg + int64_t{t0} * p.Hkv * DK + hk * DK + c0 + cx;
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const int r = rg * 8 + i;
        if (r < L) {
          const float bx = b[i].x + offset.x, by = b[i].y + offset.y;
          const float2 qv = *reinterpret_cast<const float2*>(&sm.q[r][cx]);
          *reinterpret_cast<uint32_t*>(qg + int64_t{r} * p.H * DK) = PackBf16(qv.x * __expf(bx), qv.y * __expf(by));
          if (own_kv) {
            const float2 kv = *reinterpret_cast<const float2*>(&sm.k[r][cx]);
            *reinterpret_cast<uint32_t*>(kg + int64_t{r} * p.Hkv * DK) =
                PackBf16(kv.x * __expf(fminf(total.x - bx, 0.f)), kv.y * __expf(fminf(total.y - by, 0.f)));
          }
        }
      }
      if (rg == 0 && own_kv)
        *reinterpret_cast<float2*>(w.decay + (int64_t{unit} * p.Hkv + hk) * DK + c0 + cx) =
            make_float2(__expf(total.x), __expf(total.y));
    }
    // Sub-chunk-relative bf16 operands of the off-diagonal matmuls, as running products of
    // exp(g) (every factor <= 1): thread = (column, task), tasks of 48 rows each.
    if (tid < 192) {
      const int x = tid & 63, task = tid >> 6;
      if (task == 0) {  // kr for sub-chunk 3: s = 47 .. 0
        float P = 1.f;
        for (int s = 47; s >= 0; --s) {
          P *= sm.a[s + 1][x];
          sm.u.op.kr[KrBase(3) + s][x] = __float2bfloat16_rn(sm.k[s][x] * P);
        }
      } else if (task == 1) {  // kr for sub-chunks 2 (s = 31 .. 0) and 1 (s = 15 .. 0)
        float P = 1.f;
        for (int s = 31; s >= 0; --s) {
          P *= sm.a[s + 1][x];
          sm.u.op.kr[KrBase(2) + s][x] = __float2bfloat16_rn(sm.k[s][x] * P);
        }
        P = 1.f;
        for (int s = 15; s >= 0; --s) {
          P *= sm.a[s + 1][x];
          sm.u.op.kr[KrBase(1) + s][x] = __float2bfloat16_rn(sm.k[s][x] * P);
        }
      } else {  // qr for sub-chunks 1..3: t = r .. r + 15
        for (int i = 1; i < 4; ++i) {
          float P = 1.f;
          for (int t = 16 * i; t < 16 * i + 16; ++t) {
            if (t > 16 * i) P *= sm.a[t][x];
            sm.u.op.qr[t - 16][x] = __float2bfloat16_rn(sm.q[t][x] * P);
          }
        }
      }
    }
    // Diagonal sub-chunks, exact in fp32, registers only: lanes own columns (lane, lane + 32) and
    // hold k and exp(g) of the 16 rows; row t takes exp(b_t - b_s) as the product down from s = t.
    {
      const int r0 = dsub * 16;
      float kv[16][2], av[16][2];
#pragma unroll
      for (int s = 0; s < 16; ++s) {
        kv[s][0] = sm.k[r0 + s][lane];
        kv[s][1] = sm.k[r0 + s][lane + 32];
        av[s][0] = sm.a[r0 + s][lane];
        av[s][1] = sm.a[r0 + s][lane + 32];
      }
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const int tr = dpar + 2 * i;
        const float q0 = sm.q[r0 + tr][lane], q1 = sm.q[r0 + tr][lane + 32];
        float p0 = 1.f, p1 = 1.f, acc[16];
#pragma unroll
        for (int s = 15; s >= 0; --s) {
          acc[s] = 0.f;
          if (s <= tr) {
            acc[s] = q0 * kv[s][0] * p0 + q1 * kv[s][1] * p1;
            p0 *= av[s][0];  // exp(b_t - b_{s-1}) = exp(b_t - b_s) exp(g_s)
            p1 *= av[s][1];
          }
        }
        diag[i] += TransposeReduce16(acc, lane);
      }
    }
    __syncthreads();
    if (warp < 6) {
      const bf16* qrow = &sm.u.op.qr[(job_i - 1) * 16][0];
      const bf16* krow = &sm.u.op.kr[KrBase(job_i) + job_j * 16][0];
#pragma unroll
      for (int ks = 0; ks < 4; ++ks) {
        uint32_t a[4], bfr[4];
        LdMatrixX4(a, qrow + (lane & 15) * 72 + ks * 16 + (lane >> 4) * 8);
        LdMatrixX4(bfr, krow + (((lane >> 4) & 1) * 8 + (lane & 7)) * 72 + ks * 16 + ((lane >> 3) & 1) * 8);
        Mma(off[0], a, bfr[0], bfr[1]);
        Mma(off[1], a, bfr[2], bfr[3]);
      }
    }
    __syncthreads();  // the next slice overwrites q/k/a/qr/kr
  }

  if constexpr (kSplit) {
    // Every block but the first leaves its partial sums in its dead qr/kr space ([value][thread]:
    // conflict-free, and coalesced for the reads across the cluster); the first adds them to its own.
    cooperative_groups::cluster_group cluster = cooperative_groups::this_cluster();
    float* part = reinterpret_cast<float*>(&sm.u.op);
    static_assert(sizeof(sm.u.op) >= 16 * kThreads * sizeof(float), "the partial sums fit over qr/kr");
    const unsigned rank = cluster.block_rank();
    if (rank != 0) {
#pragma unroll
      for (int i = 0; i < 8; ++i) part[i * kThreads + tid] = diag[i];
#pragma unroll
      for (int e = 0; e < 8; ++e) part[(8 + e) * kThreads + tid] = off[e >> 2][e & 3];
    }
    cluster.sync();
    if (rank == 0) {
#pragma unroll 1
      for (unsigned r = 1; r < kSlices; ++r) {
        const float* other = cluster.map_shared_rank(part, r);
#pragma unroll
        for (int i = 0; i < 8; ++i) diag[i] += other[i * kThreads + tid];
        if (warp < 6) {
#pragma unroll
          for (int e = 0; e < 8; ++e) off[e >> 2][e & 3] += other[(8 + e) * kThreads + tid];
        }
      }
    }
    cluster.sync();  // the others' shared memory stays until the first block has read it
    if (rank != 0) return;
  }

  // Assemble A (bf16) in smem (over the dead qr/kr), then write the valid rows coalesced.
  for (int i = tid; i < kChunk * 72 / 8; i += kThreads) reinterpret_cast<uint4*>(&sm.u.aout[0][0])[i] = make_uint4(0, 0, 0, 0);
  __syncthreads();
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int tr = dpar + 2 * i, j = (lane >> 1) & 15;
    if ((lane & 1) == 0 && j <= tr) sm.u.aout[dsub * 16 + tr][dsub * 16 + j] = __float2bfloat16_rn(diag[i]);
  }
  if (warp < 6) {
#pragma unroll
    for (int nt = 0; nt < 2; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int t = job_i * 16 + (lane >> 2) + (e >> 1) * 8, s = job_j * 16 + nt * 8 + (lane & 3) * 2 + (e & 1);
        sm.u.aout[t][s] = __float2bfloat16_rn(off[nt][e]);
      }
  }
  __syncthreads();
  for (int i = tid; i < kChunk * 8; i += kThreads) {
    const int r = i >> 3, c8 = (i & 7) * 8;
    if (r < L)
      *reinterpret_cast<uint4*>(w.A + (int64_t{t0} + r) * p.H * kChunk + h * kChunk + c8) =
          *reinterpret_cast<const uint4*>(&sm.u.aout[r][c8]);
  }
}

// ---------------------------------------------------------------------------------------------
// 2. Main: the sequential walk over chunks with the state in registers.

template <int DK>
struct MainSmem {
  static constexpr int kQkLd = DK + 8;  // bf16 row stride: +16 B keeps ldmatrix rows on distinct banks
  static constexpr int kALd = 72, kVLd = 68, kOLd = 68;  // 68 floats: conflict-free fragment loads
  static constexpr size_t kQg = size_t{kChunk} * kQkLd * 2, kKg = kQg, kA = size_t{kChunk} * kALd * 2;
  static constexpr size_t kV = size_t{kChunk} * kVLd * 4, kDecay = size_t{DK} * 4;
  static constexpr size_t kStage = kQg + kKg + kA + kV + kDecay;
  static constexpr size_t kBytes = 2 * kStage + size_t{kChunk} * kOLd * 4;
  static_assert(kQg % 16 == 0 && kA % 16 == 0 && kV % 16 == 0 && kDecay % 16 == 0, "16-byte cp.async slots");
  static_assert(kBytes <= 227 * 1024, "fits an H100 block");
};

template <int DK, bool kStateOnly>
__global__ void __launch_bounds__(kThreads, 1) GlaChunkMainKernel(const GlaPrefillCudaParams p, const Workspace w) {
  using Sm = MainSmem<DK>;
  constexpr int kHalf = DK / 2;     // dk columns per warp
  constexpr int kNj = kHalf / 8;    // n8 tiles of the state per warp
  static_assert(kNj % 2 == 0, "dk tiles come in pairs (one ldmatrix.x4)");
  extern __shared__ __align__(16) unsigned char smem_raw[];
  WaitForPredecessor();  // as in the prep kernel
  LetDependentsLaunch();
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int mg = warp & 3, kh = warp >> 2;  // 16 dv rows, one dk half

  const int ndv = (p.dv + kDvTile - 1) / kDvTile;
  const int hx = kStateOnly ? p.Hkv : p.H;
  int64_t x = blockIdx.x;
  const int dvt = static_cast<int>(x % ndv);
  x /= ndv;
  const int h = static_cast<int>(x % hx);
  const int64_t segid = x / hx;
  int n;
  int64_t seg;
  if (!FindUnit(p.cu_seqlens, p.num_seqs, segid, w.seg_len, &n, &seg)) return;
  const int begin = p.cu_seqlens[n], end = p.cu_seqlens[n + 1];
  const int64_t nseg = (int64_t{end} - begin + w.seg_len - 1) / w.seg_len;
  if (kStateOnly && seg >= nseg - 1) return;  // the last segment's local state is never needed
  const int hk = kStateOnly ? h : h / (p.H / p.Hkv);
  const int s0 = begin + static_cast<int>(seg * w.seg_len);
  const int s1 = static_cast<int>(end - s0 < w.seg_len ? end : s0 + w.seg_len);
  const int nchunks = (s1 - s0 + kChunk - 1) / kChunk;
  const int64_t chunk0 = begin / kChunk + n + (s0 - begin) / kChunk;  // chunk id of the segment's first chunk
  const int dv0 = dvt * kDvTile;

  // This thread's state elements: S^T[dv][dk] in the m16n8 accumulator layout,
  // acc[j][e]: dv = dv0 + 16 mg + lane/4 + 8 (e >> 1), dk = kHalf kh + 8 j + 2 (lane % 4) + (e & 1).
  float acc[kNj][4];
  const int my_dv = dv0 + 16 * mg + (lane >> 2);
  const int my_dk = kh * kHalf + 2 * (lane & 3);
  auto for_each_elem = [&](auto&& f) {
#pragma unroll
    for (int j = 0; j < kNj; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) f(acc[j][e], my_dk + 8 * j + (e & 1), my_dv + 8 * (e >> 1));
  };
  for_each_elem([&](float& s, int, int) { s = 0.f; });
  // The sequence's state in its slot (value index; fp32 or bf16, state_values.cuh), when it has one.
  const bool slot_state = !kStateOnly && p.slots != nullptr;
  const int64_t S = slot_state ? p.state.Index(p.slots[n], int64_t{h} * DK * p.dv) : 0;
  if (!kStateOnly) {
    if (slot_state)
      for_each_elem([&](float& s, int dk, int dv) {
        s = dv < p.dv ? LoadState(p.state, S + int64_t{dk} * p.dv + dv) : 0.f;
      });
    for (int64_t j = 0; j < seg; ++j) {  // S_in = D_j S + L_j over the earlier segments
      const int64_t id = segid - seg + j;
      const float* ls = w.seg_state + (id * p.Hkv + hk) * DK * p.dv;
      const float* ld = w.seg_decay + (id * p.Hkv + hk) * DK;
      for_each_elem([&](float& s, int dk, int dv) {
        if (dv < p.dv) s = ld[dk] * s + ls[int64_t{dk} * p.dv + dv];
      });
    }
  }
  float seg_decay = 1.f;  // state-only pass: product of the chunk decays, dk row = tid

  auto stage_ptr = [&](int stage) { return smem_raw + stage * Sm::kStage; };
  auto issue = [&](int ci, int stage) {
    unsigned char* st = stage_ptr(stage);
    bf16* qg_s = reinterpret_cast<bf16*>(st);
    bf16* kg_s = reinterpret_cast<bf16*>(st + Sm::kQg);
    bf16* a_s = reinterpret_cast<bf16*>(st + Sm::kQg + Sm::kKg);
    float* v_s = reinterpret_cast<float*>(st + Sm::kQg + Sm::kKg + Sm::kA);
    float* d_s = reinterpret_cast<float*>(st + Sm::kQg + Sm::kKg + Sm::kA + Sm::kV);
    const int tok0 = s0 + ci * kChunk, L = min(kChunk, s1 - tok0);
    constexpr int kRowChunks = DK / 8;  // 16-byte pieces per bf16 row
    for (int i = tid; i < kChunk * kRowChunks; i += kThreads) {
      const int r = i / kRowChunks, c8 = (i % kRowChunks) * 8;
      const bool ok = r < L;
      const bf16* src = ok ? w.kg + (int64_t{tok0} + r) * p.Hkv * DK + hk * DK + c8 : w.kg;
      CpAsync16(kg_s + r * Sm::kQkLd + c8, src, ok);
      if (!kStateOnly) {
        const bf16* srq = ok ? w.qg + (int64_t{tok0} + r) * p.H * DK + h * DK + c8 : w.qg;
        CpAsync16(qg_s + r * Sm::kQkLd + c8, srq, ok);
      }
    }
    if (!kStateOnly)
      for (int i = tid; i < kChunk * 8; i += kThreads) {
        const int r = i >> 3, c8 = (i & 7) * 8;
        const bool ok = r < L;
        const bf16* src = ok ? w.A + (int64_t{tok0} + r) * p.H * kChunk + h * kChunk + c8 : w.A;
        CpAsync16(a_s + r * Sm::kALd + c8, src, ok);
      }
    for (int i = tid; i < kChunk * 16; i += kThreads) {
      const int r = i >> 4, c4 = (i & 15) * 4;
      const bool ok = r < L && dv0 + c4 < p.dv;
      const float* src = ok ? p.v + (int64_t{tok0} + r) * p.v_stride + hk * p.dv + dv0 + c4 : p.v;
      CpAsync16(v_s + r * Sm::kVLd + c4, src, ok);
    }
    for (int i = tid; i < DK / 4; i += kThreads)
      CpAsync16(d_s + 4 * i, w.decay + ((chunk0 + ci) * p.Hkv + hk) * DK + 4 * i, true);
  };

  float* obuf = reinterpret_cast<float*>(smem_raw + 2 * Sm::kStage);
  if (nchunks > 0) issue(0, 0);
  CpAsyncCommit();
  for (int ci = 0; ci < nchunks; ++ci) {
    if (ci + 1 < nchunks) issue(ci + 1, (ci + 1) & 1);
    CpAsyncCommit();
    CpAsyncWait1();
    __syncthreads();
    const unsigned char* st = stage_ptr(ci & 1);
    const bf16* qg_s = reinterpret_cast<const bf16*>(st);
    const bf16* kg_s = reinterpret_cast<const bf16*>(st + Sm::kQg);
    const bf16* a_s = reinterpret_cast<const bf16*>(st + Sm::kQg + Sm::kKg);
    const float* v_s = reinterpret_cast<const float*>(st + Sm::kQg + Sm::kKg + Sm::kA);
    const float* d_s = reinterpret_cast<const float*>(st + Sm::kQg + Sm::kKg + Sm::kA + Sm::kV);
    const int tok0 = s0 + ci * kChunk, L = min(kChunk, s1 - tok0);

    // V^T as the A operand (m = 16 dv rows of this warp, k = tokens), all 4 token steps; fp32 smem -> bf16.
    uint32_t vf[4][4];
    {
      const int m = 16 * mg + (lane >> 2), k = 2 * (lane & 3);
#pragma unroll
      for (int ks = 0; ks < 4; ++ks) {
        const float* v0 = v_s + (16 * ks + k) * Sm::kVLd + m;
        vf[ks][0] = PackBf16(v0[0], v0[Sm::kVLd]);
        vf[ks][1] = PackBf16(v0[8], v0[Sm::kVLd + 8]);
        vf[ks][2] = PackBf16(v0[8 * Sm::kVLd], v0[9 * Sm::kVLd]);
        vf[ks][3] = PackBf16(v0[8 * Sm::kVLd + 8], v0[9 * Sm::kVLd + 8]);
      }
    }

    if (!kStateOnly) {
      // o^T [16 dv, 64 tok] = S^T qg^T over this warp's dk half (S from registers) + V^T A^T.
      float o[8][4] = {};
#pragma unroll
      for (int ks = 0; ks < kHalf / 16; ++ks) {
        const uint32_t a[4] = {PackBf16(acc[2 * ks][0], acc[2 * ks][1]), PackBf16(acc[2 * ks][2], acc[2 * ks][3]),
                               PackBf16(acc[2 * ks + 1][0], acc[2 * ks + 1][1]),
                               PackBf16(acc[2 * ks + 1][2], acc[2 * ks + 1][3])};
#pragma unroll
        for (int tp = 0; tp < 4; ++tp) {
          uint32_t b[4];
          LdMatrixX4(b, qg_s + (16 * tp + ((lane >> 4) & 1) * 8 + (lane & 7)) * Sm::kQkLd + kh * kHalf + 16 * ks +
                            ((lane >> 3) & 1) * 8);
          Mma(o[2 * tp], a, b[0], b[1]);
          Mma(o[2 * tp + 1], a, b[2], b[3]);
        }
      }
#pragma unroll
      for (int kk = 0; kk < 2; ++kk) {  // the two dk halves split the 4 token steps of A V
        const int ks = 2 * kh + kk;
        uint32_t va[4];  // vf[ks] with compile-time indices only (kh is per warp): no local memory
#pragma unroll
        for (int r = 0; r < 4; ++r) va[r] = kh ? vf[2 + kk][r] : vf[kk][r];
#pragma unroll
        for (int tp = 0; tp < 4; ++tp) {
          if (tp < ks) continue;  // A is lower triangular: t < s gives zero
          uint32_t b[4];
          LdMatrixX4(b, a_s + (16 * tp + ((lane >> 4) & 1) * 8 + (lane & 7)) * Sm::kALd + 16 * ks +
                            ((lane >> 3) & 1) * 8);
          Mma(o[2 * tp], va, b[0], b[1]);
          Mma(o[2 * tp + 1], va, b[2], b[3]);
        }
      }
      // Reduce the two dk halves in smem ([tok][dv]), then store o rows coalesced.
      auto o_at = [&](int nt, int e) -> float& {
        return obuf[(8 * nt + 2 * (lane & 3) + (e & 1)) * Sm::kOLd + 16 * mg + (lane >> 2) + 8 * (e >> 1)];
      };
      if (kh == 1)
#pragma unroll
        for (int nt = 0; nt < 8; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) o_at(nt, e) = o[nt][e];
      __syncthreads();
      if (kh == 0)
#pragma unroll
        for (int nt = 0; nt < 8; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) o_at(nt, e) += o[nt][e];
      __syncthreads();
      for (int i = tid; i < kChunk * 16; i += kThreads) {
        const int r = i >> 4, c4 = (i & 15) * 4;
        if (r < L && dv0 + c4 < p.dv)
          *reinterpret_cast<float4*>(p.o + (int64_t{tok0} + r) * p.o_stride + int64_t{h} * p.dv + dv0 + c4) =
              *reinterpret_cast<const float4*>(obuf + r * Sm::kOLd + c4);
      }
    } else if (tid < DK) {
      seg_decay *= d_s[tid];
    }

    // S^T = S^T diag(decay) + V^T kg.
#pragma unroll
    for (int j = 0; j < kNj; ++j) {
      const float2 d = *reinterpret_cast<const float2*>(d_s + my_dk + 8 * j);
      acc[j][0] *= d.x;
      acc[j][1] *= d.y;
      acc[j][2] *= d.x;
      acc[j][3] *= d.y;
    }
#pragma unroll
    for (int ks = 0; ks < 4; ++ks)
#pragma unroll
      for (int jp = 0; jp < kNj / 2; ++jp) {
        uint32_t b[4];
        LdMatrixX4Trans(b, kg_s + (16 * ks + ((lane >> 3) & 1) * 8 + (lane & 7)) * Sm::kQkLd + kh * kHalf + 16 * jp +
                               ((lane >> 4) & 1) * 8);
        Mma(acc[2 * jp], vf[ks], b[0], b[1]);
        Mma(acc[2 * jp + 1], vf[ks], b[2], b[3]);
      }
    __syncthreads();  // the next iteration's copies overwrite this stage
  }

  if (kStateOnly) {
    float* ls = w.seg_state + (segid * p.Hkv + hk) * DK * p.dv;
    for_each_elem([&](float& s, int dk, int dv) {
      if (dv < p.dv) ls[int64_t{dk} * p.dv + dv] = s;
    });
    if (dvt == 0 && tid < DK) w.seg_decay[(segid * p.Hkv + hk) * DK + tid] = seg_decay;
  } else if (slot_state && seg == nseg - 1) {
    for_each_elem([&](float& s, int dk, int dv) {
      if (dv < p.dv) StoreState(p.state, S + int64_t{dk} * p.dv + dv, s);
    });
  }
}

// ---------------------------------------------------------------------------------------------
// Host side: the plan (segmentation and workspace carve-up) and the one dispatch site.

struct Plan {
  int64_t seg_len = kNoSplit;
  int64_t chunk_ids = 0, seg_ids = 0;
  // Whether the prep kernel runs as clusters of one block per 64-column slice of dk: when chunk x
  // head blocks would fill less than one block per SM (short prompts: gla-1.3B's 512-token prompt
  // has 32 for 132 SMs), and dk has more than one slice.
  bool split_prep = false;
  size_t qg = 0, kg = 0, A = 0, decay = 0, seg_state = 0, seg_decay = 0, bytes = 0;
};

// The plan's segment length from the sequences' own lengths (GlaPrefillCudaParams::host_cu_seqlens):
// the shortest multiple of a chunk from `seg_len` on at which the segments' main blocks fit the
// SMs. The average length's cut fits them for equal lengths (unchanged then), but an uneven step
// cuts its long sequence into more segments than the average says: past one wave at one main block
// an SM, the blocks past the first wave wait for it to finish. Only lengthening keeps the segment-id
// bound the totals gave (and the workspace sized from it). Where every sequence ends up in one
// segment, no cut.
int64_t SegmentsWithinAWave(const GlaPrefillCudaParams& p, int64_t seg_len, int64_t total, int sms) {
  const int64_t blocks_per_segment = int64_t{p.H} * ((p.dv + kDvTile - 1) / kDvTile);
  // Sequence n's tokens as the copy has them, within [0, total] (a copy that does not match the
  // device's: bounded work here, and the kernel still walks the device's lengths).
  auto tokens = [&](int n) {
    return std::clamp<int64_t>(int64_t{p.host_cu_seqlens[n + 1]} - p.host_cu_seqlens[n], 0, total);
  };
  int64_t longest = 0;
  for (int n = 0; n < p.num_seqs; ++n) longest = std::max(longest, tokens(n));
  auto segments = [&](int64_t len) {
    int64_t count = 0;
    for (int n = 0; n < p.num_seqs; ++n) count += (tokens(n) + len - 1) / len;
    return count;
  };
  // The segment count only falls as the length grows: the shortest length that fits, by bisection
  // over whole chunks (a few dozen evaluations whatever the lengths claim).
  auto fits = [&](int64_t len) { return segments(len) * blocks_per_segment <= sms; };
  if (seg_len >= longest || fits(seg_len)) return seg_len < longest ? seg_len : kNoSplit;
  int64_t lo = seg_len / kChunk, hi = (longest + kChunk - 1) / kChunk;  // lo does not fit; hi is one segment each
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    (fits(mid * kChunk) ? hi : lo) = mid;
  }
  seg_len = hi * kChunk;
  return seg_len < longest ? seg_len : kNoSplit;
}

Plan MakePlan(const GlaPrefillCudaParams& p, int total_tokens) {
  Plan plan;
  int sms = 132, dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
    sms = 132;
  const int64_t total = std::max(total_tokens, 0), seqs = std::max(p.num_seqs, 1);
  const int64_t blocks = seqs * p.H * ((p.dv + kDvTile - 1) / kDvTile);  // main blocks without cutting
  // Cut sequences into k segments only when the uncut grid fills less than 3/4 of the GPU (one
  // main block per SM at dk = 256): k = SMs / blocks keeps the cut grid within one wave.
  const int64_t avg = (total + seqs - 1) / seqs;
  auto segment_length = [&](int64_t k) { return ((avg + k - 1) / k + kChunk - 1) / kChunk * kChunk; };
  int64_t cuts = 1;  // segments a sequence of the average length is cut into
  if (p.plan_segments > 0) {  // a benchmark's choice
    cuts = p.plan_segments;
  } else if (blocks * 4 < int64_t{sms} * 3) {
    // Segments of at least kMinSegment tokens: shorter ones cost more in the state-only pass and the
    // combining of earlier segments than their parallelism gives (the sweep of gla_prefill_bench
    // plans, H100 2026-12-07: 128-token segments cut gla-340M heads' 512- and 1,024-token prompts by
    // 20% and 38% and gla-1.3B heads' 1,024 by 20%; 64-token ones gained nothing more, and the
    // 512-token floor this replaced left all three uncut).
    constexpr int64_t kMinSegment = 128;
    cuts = std::min<int64_t>(sms / blocks, avg / kMinSegment);
  }
  if (cuts >= 2) plan.seg_len = std::max<int64_t>(segment_length(cuts), kChunk);
  if (plan.seg_len != kNoSplit && p.plan_segments == 0 && p.host_cu_seqlens != nullptr)
    plan.seg_len = SegmentsWithinAWave(p, plan.seg_len, total, sms);
  const PrepLayout prep = MakePrepLayout(p.H, p.Hkv, p.dk, total, p.num_seqs);  // shared with the backward
  plan.chunk_ids = prep.chunk_ids;
  plan.split_prep = p.dk > 64 && (p.plan_split_prep != 0 ? p.plan_split_prep == 2 : plan.chunk_ids * p.H <= sms);
  // Segment ids (FindUnit's numbering: cu[n] / seg_len + n onwards) stay below total / seg_len +
  // seqs <= seqs * (cuts + 1), since seg_len >= avg / cuts >= total / (seqs * cuts). The latter bound
  // sizes the workspace: it never shrinks as the tokens grow (cuts only grows with them, while
  // total / seg_len can fall as seg_len rounds up to whole chunks: 520 tokens in 4 cuts of 192 have
  // fewer ids than 384 in 3 of 128), so a workspace sized for a step's token budget holds every step
  // within it (the engine sizes it once).
  plan.seg_ids = plan.seg_len == kNoSplit ? seqs : seqs * (cuts + 1);
  size_t off = prep.end;
  auto take = [&](size_t bytes) {
    const size_t at = off;
    off += Align256(bytes);
    return at;
  };
  plan.qg = prep.qg;
  plan.kg = prep.kg;
  plan.A = prep.A;
  plan.decay = prep.decay;
  if (plan.seg_len != kNoSplit) {
    plan.seg_state = take(size_t(plan.seg_ids) * p.Hkv * p.dk * p.dv * 4);
    plan.seg_decay = take(size_t(plan.seg_ids) * p.Hkv * p.dk * 4);
  }
  plan.bytes = off;
  return plan;
}

template <int DK, bool kMakeGate>
cudaError_t LaunchPrepForm(const GlaPrefillCudaParams& p, const Workspace& w, int64_t chunk_ids, bool split,
                           cudaStream_t stream) {
  constexpr int kSlices = DK / 64;
  // Every chunk kernel is a programmatic dependent launch (kernels/cuda/launch.cuh): its grid is set up
  // while the kernel before it finishes, and it waits for that kernel before reading anything.
  if constexpr (kSlices > 1) {
    if (split) {
      const cudaError_t e = cudaFuncSetAttribute(GlaChunkPrepKernel<DK, true, kMakeGate>,
                                                 cudaFuncAttributeMaxDynamicSharedMemorySize, sizeof(PrepSmem));
      if (e != cudaSuccess) return e;
      return LaunchDependentClusters(GlaChunkPrepKernel<DK, true, kMakeGate>,
                                     dim3(static_cast<unsigned>(chunk_ids * kSlices), p.H), dim3(kThreads),
                                     sizeof(PrepSmem), kSlices, stream, p, w);
    }
  }
  const cudaError_t e = cudaFuncSetAttribute(GlaChunkPrepKernel<DK, false, kMakeGate>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize, sizeof(PrepSmem));
  if (e != cudaSuccess) return e;
  return LaunchDependentSmem(GlaChunkPrepKernel<DK, false, kMakeGate>, dim3(static_cast<unsigned>(chunk_ids), p.H),
                             dim3(kThreads), sizeof(PrepSmem), stream, p, w);
}

template <int DK>
cudaError_t LaunchPrep(const GlaPrefillCudaParams& p, const Workspace& w, int64_t chunk_ids, bool split,
                       cudaStream_t stream) {
  return p.gate.lowrank != nullptr ? LaunchPrepForm<DK, true>(p, w, chunk_ids, split, stream)
                                   : LaunchPrepForm<DK, false>(p, w, chunk_ids, split, stream);
}

template <int DK>
cudaError_t Launch(const GlaPrefillCudaParams& p, const Plan& plan, cudaStream_t stream) {
  unsigned char* base = static_cast<unsigned char*>(p.workspace);
  Workspace w;
  w.qg = reinterpret_cast<bf16*>(base + plan.qg);
  w.kg = reinterpret_cast<bf16*>(base + plan.kg);
  w.A = reinterpret_cast<bf16*>(base + plan.A);
  w.decay = reinterpret_cast<float*>(base + plan.decay);
  w.seg_state = reinterpret_cast<float*>(base + plan.seg_state);
  w.seg_decay = reinterpret_cast<float*>(base + plan.seg_decay);
  w.seg_len = plan.seg_len;
  const int ndv = (p.dv + kDvTile - 1) / kDvTile;
  cudaError_t e;
  if ((e = cudaFuncSetAttribute(GlaChunkMainKernel<DK, false>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                MainSmem<DK>::kBytes)) != cudaSuccess)
    return e;
  if ((e = LaunchPrep<DK>(p, w, plan.chunk_ids, plan.split_prep, stream)) != cudaSuccess)
    return e;
  if (plan.seg_len != kNoSplit) {
    if ((e = cudaFuncSetAttribute(GlaChunkMainKernel<DK, true>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  MainSmem<DK>::kBytes)) != cudaSuccess)
      return e;
    if ((e = LaunchDependentSmem(GlaChunkMainKernel<DK, true>, dim3(static_cast<unsigned>(plan.seg_ids * p.Hkv * ndv)),
                                 dim3(kThreads), MainSmem<DK>::kBytes, stream, p, w)) != cudaSuccess)
      return e;
  }
  return LaunchDependentSmem(GlaChunkMainKernel<DK, false>, dim3(static_cast<unsigned>(plan.seg_ids * p.H * ndv)),
                             dim3(kThreads), MainSmem<DK>::kBytes, stream, p, w);
}

}  // namespace

cudaError_t chunk::LaunchChunkPrep(const GlaPrefillCudaParams& p, const PrepOut& out, int64_t chunk_ids,
                                   cudaStream_t stream) {
  Workspace w{};
  w.qg = out.qg;
  w.kg = out.kg;
  w.A = out.A;
  w.decay = out.decay;
  w.seg_len = kNoSplit;
  // The backward's recomputation: the unsplit kernel (long training windows fill the GPU anyway).
  return DispatchHeadDim(p.dk,
                         [&](auto dk) { return LaunchPrep<decltype(dk)::value>(p, w, chunk_ids, false, stream); });
}

bool GlaChunkHeadDimSupported(int dk) { return chunk::ChunkHeadDimSupported(dk); }

GlaChunkPlanInfo GlaPrefillChunkPlan(const GlaPrefillCudaParams& p, int total_tokens) {
  const Plan plan = MakePlan(p, total_tokens);
  return {plan.seg_len == kNoSplit ? 0 : plan.seg_len, plan.split_prep};
}

size_t GlaPrefillChunkWorkspaceBytes(const GlaPrefillCudaParams& p, int total_tokens) {
  return MakePlan(p, total_tokens).bytes;
}

cudaError_t GlaPrefillChunk(const GlaPrefillCudaParams& p, cudaStream_t stream) {
  if (p.num_seqs == 0) return cudaSuccess;
  if (p.num_seqs < 0 || p.H <= 0 || p.H > 65535 || p.Hkv <= 0 || p.H % p.Hkv != 0 || p.dv <= 0 || p.dv % 4 != 0 ||
      p.cu_seqlens == nullptr || p.total_tokens < 0 || !RowsAligned16(p.q, p.q_stride) ||
      !RowsAligned16(p.k, p.k_stride) || !RowsAligned16(p.g, p.g_stride) || !RowsAligned16(p.v, p.v_stride) ||
      !RowsAligned16(p.o, p.o_stride) ||
      (p.slots && (p.state.base == nullptr)))
    return cudaErrorInvalidValue;
  if (!ChunkHeadDimSupported(p.dk)) return cudaErrorInvalidValue;
  if (!GateFactorsUsable(p.gate, kChunkPrepMaxGateRank)) return cudaErrorInvalidValue;
  if (p.plan_segments < 0 || p.plan_segments > kChunkMaxSegments || p.plan_split_prep < 0 || p.plan_split_prep > 2)
    return cudaErrorInvalidValue;
  if (p.total_tokens == 0) return cudaSuccess;  // only empty sequences: states stay as they are
  const Plan plan = MakePlan(p, p.total_tokens);
  if (p.workspace == nullptr || p.workspace_bytes < plan.bytes ||
      reinterpret_cast<uintptr_t>(p.workspace) % 256 != 0)
    return cudaErrorInvalidValue;
  return DispatchHeadDim(p.dk, [&](auto dk) { return Launch<decltype(dk)::value>(p, plan, stream); });
}

}  // namespace gla::cuda
