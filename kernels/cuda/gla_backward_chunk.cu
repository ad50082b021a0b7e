// Backward of the chunkwise GLA operator on tensor cores (bf16 mma.sync, fp32 accumulation), many
// variable-length sequences per launch: the fine-tuning path. The reference is
// cpu::GlaBackwardNaive (the definition, walked back token by token).
//
// Per head and chunk of C = 64 tokens (b = inclusive cumsum of g in the chunk, B = b at its last
// row, S0 the state the chunk starts from, dS the gradient of the state it ends with; the forward
// is o = qg S0 + A v, S_end = diag(exp B) S0 + kg^T v with qg = scale q exp(b), kg = k exp(B - b)):
//   dA  = dO V^T (lower triangle)              dv = A^T dO + kg dS
//   dq  = scale (exp(b) . dO S0^T + sum_{s<=t} dA_ts k_s exp(b_t - b_s))
//   dk  = exp(B - b) . V dS^T + scale sum_{t>=s} dA_ts q_t exp(b_t - b_s)
//   dS_prev = diag(exp B) dS + qg^T dO         (the state gradient walks the chunks backwards)
//   dg  = reverse cumsum over the whole sequence of (q . dq - k . dk), plus rowsum(d_ht . S_T)
// (g enters o and S only through exp(cumsum g), so d/d(cumsum g)_t = q_t dq_t - k_t dk_t, and the
// final state adds its own term; the cumsum's adjoint is the reverse cumsum).
//
// Store, not recompute: the chunk-boundary states S0 and dS are computed by two sequential scans
// (forward over kg^T v, backward over qg^T dO) and stored in bf16, one [dv, dk] matrix per chunk
// and head each (at gla-1.3B heads 256 KiB per chunk and head: 2 x 268 MB for 16K tokens), and
// then every chunk's gradients are computed in parallel. Recomputing S0 inside the gradient
// kernels would put the sequential walk back into them (each chunk replaying the chunks before
// it, or the scans carrying dO and V and serializing the gradient work); storing makes the
// parallel part embarrassingly parallel at the price of ~1.3 GB of bf16 traffic at that shape
// (written once, read three times), ~0.3-0.4 ms of HBM time. The row dimension dk of a state is
// independent in the recurrence (S_i <- exp(B_i) S_i + X_i^T Y), so the scans tile dk as well as
// dv: enough blocks for one long sequence without the forward's segment pass.
//
// Kernels (launch order):
//  1. Prep (the forward's, gla_chunk_common.cuh; skipped with reuse_forward_prep): bf16 qg, kg, A
//     and fp32 chunk decays. Then bf16 copies of v and dO, the operands every later kernel
//     streams (several times), converted once.
//  2. Scans, both in one launch (independent walks; together their grid fills the GPU even at B1):
//     forward per (sequence, head, 64-dv tile, 64-dk tile), S0 of every chunk -> states; at the
//     end rowsum(d_ht . S_T), dg's final-state term (atomics over dv tiles). Backward: dS of every
//     chunk -> dstates, and d_h0. Each chunk's state tile is staged in smem and stored as whole
//     128-byte rows (stored straight from the mma accumulators, each store filled half a sector:
//     the scans took twice as long).
//  3. Values: per (chunk, head): dv and dA (fp32, masked to s <= t), 32-column dv tiles streamed
//     through a two-stage cp.async ring.
//  4. Keys: per (chunk, head, 64-dk tile; the dk tiles of a chunk adjacent, sharing dO / V in L2):
//     dqg = dO S0^T and dkg = V dS^T on tensor cores (three-stage cp.async ring; q, g, k and dA
//     for the next phase copied in during its last two steps), then the intra-chunk sums:
//     diagonal 16 x 16 sub-chunks exactly on CUDA cores, one thread per column with each
//     exp(b_t - b_s) shared by dq and dk; off-diagonal ones on tensor cores through the
//     sub-chunk's reference row r, exp(b_t - b_r) exp(b_r - b_s), so that every exp() argument is
//     <= 0. Last, dc = q.dq - k.dk reverse-cumsummed inside the chunk, and the chunk's total.
//  5. GQA (H > Hkv): per-head dk / dv summed over the heads of a group.
//  6. dg: per (sequence, head) the chunk totals become suffix offsets (+ the final-state term);
//     per (chunk, kv head) d_g = the group's local sums + offsets.
//
// Measured (tests/cuda/gla_backward_bench.cc, ncu over it: bash deploy/gpu-profile.sh; gla-1.3B
// heads, 16K tokens, B8 x T2048, H200, 2026-11-28): a training step's backward 1.11 ms = bf16
// copies 0.10 + scans 0.32 + values 0.20 + keys 0.43 + dg 0.07. Steps taken, each measured: the
// scans' staged 128-byte state stores (scans 0.62 -> 0.32 ms), the keys kernel's phase-2 inputs
// copied in during phase 1 (0.56 -> 0.43; and only then did its tensor-core off-diagonal sums pay:
// 0.50 ms on CUDA cores with the same prefetch, 0.55 / 0.56 without it: the phase was bound by the
// loads' latency, not by its instructions), the values kernel's cp.async ring (0.27 -> 0.19), both
// scans in one launch (~3% of the step at B1), bf16 copies streamed instead of fp32 with the keys
// kernel's dk tiles adjacent in the grid (keys 2.30 -> 0.86), the diagonal sub-chunks one thread
// per column (0.86 -> 0.71). Tried, measured, not kept: 128-column scan tiles (no gain), the
// intra-chunk cumsum of g on four threads per column (no gain), the bf16 copies written from
// inside the scans (slower at B1), and the forward's main pass storing every chunk's state so
// that the backward skips its forward scan (~1%, for an API coupling of the two kernels and a
// state array per layer in training).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/cuda/gla_chunk_common.cuh"
#include "kernels/gla.h"

namespace gla::cuda {

namespace {

using namespace chunk;  // kChunk, kSub, bf16, the PTX wrappers, FindUnit

constexpr int kTile = 64;       // dk / dv columns per tile
constexpr int kLd = kTile + 8;  // bf16 smem row stride: +16 B keeps ldmatrix rows on distinct banks
constexpr int kFLd = kTile + 4;  // fp32 smem row stride of the key kernel's phase 2: 16-byte rows for cp.async

struct BwdWorkspace {
  bf16* qg = nullptr;       // [tokens, H, dk]   scale q exp(b)
  bf16* kg = nullptr;       // [tokens, Hkv, dk] k exp(B - b)
  bf16* A = nullptr;        // [tokens, H, 64]   the forward's intra-chunk matrix
  float* decay = nullptr;   // [chunk ids, Hkv, dk] exp(B)
  bf16* states = nullptr;   // [chunk ids, H, dv, dk]  S0^T of each chunk
  bf16* dstates = nullptr;  // [chunk ids, H, dv, dk]  dS^T at each chunk's end
  bf16* vb = nullptr;       // [tokens, Hkv, dv] v in bf16 (the tensor-core operand, copied once)
  bf16* dob = nullptr;      // [tokens, H, dv]   dO in bf16
  float* dA = nullptr;      // [tokens, H, 64]
  float* dc = nullptr;      // [tokens, H, dk]   per head: reverse cumsum of q.dq - k.dk inside the chunk
  float* tot = nullptr;     // [chunk ids, H, dk] per head: chunk totals of dc, then the chunk offsets
  float* fterm = nullptr;   // [num_seqs, H, dk] per head: rowsum(d_ht . S_T)
  float* dk_h = nullptr;    // [tokens, H, dk]  per-head dk (GQA only)
  float* dv_h = nullptr;    // [tokens, H, dv]  per-head dv (GQA only)
};

// Where a chunk id's rows are: the sequence's token range and the chunk's first row and length.
struct ChunkRows {
  int n, tok0, L;
};
__device__ __forceinline__ bool LocateChunk(const GlaBackwardCudaParams& p, int64_t id, ChunkRows* c) {
  int64_t index;
  if (!FindUnit(p.cu_seqlens, p.num_seqs, id, kChunk, &c->n, &index)) return false;
  c->tok0 = p.cu_seqlens[c->n] + static_cast<int>(index) * kChunk;
  c->L = min(kChunk, p.cu_seqlens[c->n + 1] - c->tok0);
  return true;
}

// ---------------------------------------------------------------------------------------------
// 1b. bf16 copies of v and dO: every later kernel reads them as tensor-core operands through
// cp.async, several times (the scans once per dk tile, the keys kernel once per dk tile), so they
// are converted once. Grid: chunk x 8-row group (rows of the sequence only).

constexpr int kCopyRows = 8;

__device__ __forceinline__ void RowToBf16(bf16* dst, const float* src, int n, int tid, int threads) {
  for (int i = tid; i < n / 4; i += threads) {
    const float4 v = __ldg(reinterpret_cast<const float4*>(src) + i);
    reinterpret_cast<uint2*>(dst)[i] = make_uint2(PackBf16(v.x, v.y), PackBf16(v.z, v.w));
  }
}

__global__ void GlaBwdToBf16Kernel(const GlaBackwardCudaParams p, const BwdWorkspace w) {
  ChunkRows cr;
  if (!LocateChunk(p, blockIdx.x, &cr)) return;
  const int r1 = min(cr.L, static_cast<int>(blockIdx.y + 1) * kCopyRows);
  for (int r = blockIdx.y * kCopyRows; r < r1; ++r) {
    const int64_t t = int64_t{cr.tok0} + r;
    RowToBf16(w.vb + t * p.Hkv * p.dv, p.v + t * p.v_stride, p.Hkv * p.dv, threadIdx.x, blockDim.x);
    RowToBf16(w.dob + t * p.H * p.dv, p.d_o + t * p.d_o_stride, p.H * p.dv, threadIdx.x, blockDim.x);
  }
}

// ---------------------------------------------------------------------------------------------
// 2. Scans: S <- diag(d_c) S + X_c^T Y_c over the chunks of one sequence, storing the S each chunk
// sees. Forward: X = kg, Y = v, chunks in order (S0 of each chunk). Backward: X = qg, Y = dO, chunks
// in reverse (dS at each chunk's end). The state slice S^T [64 dv, 64 dk] lives in registers in the
// m16n8 accumulator layout: warp w owns dv rows 16w..16w+15.

constexpr int kScanThreads = 128;
struct ScanSmem {
  bf16 x[2][kChunk][kLd];
  bf16 y[2][kChunk][kLd];
  float d[2][kTile];
  bf16 o[2][kTile][kLd];  // the state a chunk sees, staged for coalesced 16-byte stores
};

template <bool kReverse>
__device__ __forceinline__ void ScanBlock(const GlaBackwardCudaParams& p, const BwdWorkspace& w, int64_t block,
                                          ScanSmem& sm) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int ndv = p.dv / kTile, ndk = p.dk / kTile;
  int64_t x = block;
  const int dkt = static_cast<int>(x % ndk);
  x /= ndk;
  const int dvt = static_cast<int>(x % ndv);
  x /= ndv;
  const int h = static_cast<int>(x % p.H);
  const int n = static_cast<int>(x / p.H);
  const int hk = h / (p.H / p.Hkv);
  const int begin = p.cu_seqlens[n], end = p.cu_seqlens[n + 1];
  const int nchunks = (end - begin + kChunk - 1) / kChunk;
  const int64_t chunk0 = begin / kChunk + n;
  const int dv0 = dvt * kTile, dk0 = dkt * kTile;
  const int64_t state_elems = int64_t{p.dk} * p.dv;

  // acc[j][e]: S^T element (dv = my_dv + 8 (e >> 1), dk = my_dk + 8 j + (e & 1)).
  float acc[8][4];
  const int my_dv = dv0 + 16 * warp + (lane >> 2), my_dk = dk0 + 2 * (lane & 3);
  const float* init = kReverse ? p.d_ht : p.h0;
#pragma unroll
  for (int j = 0; j < 8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e)
      acc[j][e] = init ? init[(int64_t{n} * p.H + h) * state_elems + int64_t{my_dk + 8 * j + (e & 1)} * p.dv + my_dv +
                              8 * (e >> 1)]
                       : 0.f;

  const bf16* xbase = kReverse ? w.qg : w.kg;
  const int64_t x_row = int64_t{kReverse ? p.H : p.Hkv} * p.dk;
  const int x_head = kReverse ? h : hk;
  const bf16* ybase = kReverse ? w.dob : w.vb;
  const int64_t y_row = int64_t{kReverse ? p.H : p.Hkv} * p.dv;
  const int y_head = kReverse ? h : hk;
  bf16* out = kReverse ? w.dstates : w.states;
  auto chunk_at = [&](int i) { return kReverse ? nchunks - 1 - i : i; };
  // Each thread copies rows r0 + 16 u (u < 4), columns c8..c8+7, of the x and y tiles: its source
  // pointers are formed once and stepped by whole chunks (per-copy 64-bit index arithmetic made
  // address math a large share of this issue-bound kernel's instructions).
  static_assert(kScanThreads == 128, "four 8-column slots of 64 rows per thread");
  const int r0 = tid >> 3, c8 = (tid & 7) * 8;
  const bf16* xsrc = xbase + (int64_t{begin} + r0) * x_row + x_head * p.dk + dk0 + c8;
  const bf16* ysrc = ybase + (int64_t{begin} + r0) * y_row + y_head * p.dv + dv0 + c8;
  auto issue = [&](int c, int stage) {
    const int L = min(kChunk, end - begin - c * kChunk);
    const bf16* xs = xsrc + int64_t{c} * kChunk * x_row;
    const bf16* ys = ysrc + int64_t{c} * kChunk * y_row;
#pragma unroll
    for (int u = 0; u < kChunk / 16; ++u) {
      const bool ok = r0 + 16 * u < L;
      CpAsync16(&sm.x[stage][r0 + 16 * u][c8], ok ? xs + 16 * u * x_row : xbase, ok);
      CpAsync16(&sm.y[stage][r0 + 16 * u][c8], ok ? ys + 16 * u * y_row : ybase, ok);
    }
    if (tid < kTile / 4) CpAsync16(&sm.d[stage][4 * tid], w.decay + ((chunk0 + c) * p.Hkv + hk) * p.dk + dk0 + 4 * tid, true);
  };

  auto flush = [&](int c, int buf) {
    bf16* o = out + ((chunk0 + c) * p.H + h) * state_elems + int64_t{dv0} * p.dk + dk0;
    for (int i = tid; i < kTile * 8; i += kScanThreads) {
      const int r = i >> 3, c8 = (i & 7) * 8;
      *reinterpret_cast<uint4*>(o + int64_t{r} * p.dk + c8) = *reinterpret_cast<const uint4*>(&sm.o[buf][r][c8]);
    }
  };
  if (nchunks > 0) issue(chunk_at(0), 0);
  CpAsyncCommit();
  for (int i = 0; i < nchunks; ++i) {
    const int c = chunk_at(i), stage = i & 1;
    if (i + 1 < nchunks) issue(chunk_at(i + 1), stage ^ 1);
    CpAsyncCommit();
    CpAsyncWait1();
    __syncthreads();
    // The state this chunk sees, before its own update.
    // Staged in smem (double-buffered: the previous chunk's copy is written out below while this
    // one fills), then stored as whole 128-byte rows: the accumulator layout's direct stores
    // write 16 bytes per 32-byte sector.
    if (i > 0) flush(chunk_at(i - 1), (i - 1) & 1);
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int eh = 0; eh < 2; ++eh)
        *reinterpret_cast<uint32_t*>(&sm.o[stage][16 * warp + (lane >> 2) + 8 * eh][2 * (lane & 3) + 8 * j]) =
            PackBf16(acc[j][2 * eh], acc[j][2 * eh + 1]);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const float2 d = *reinterpret_cast<const float2*>(&sm.d[stage][2 * (lane & 3) + 8 * j]);
      acc[j][0] *= d.x;
      acc[j][1] *= d.y;
      acc[j][2] *= d.x;
      acc[j][3] *= d.y;
    }
    // S^T += Y^T X: Y^T is the A operand (m = dv, k = tokens), Y stored [tokens][dv]: transposed loads.
#pragma unroll
    for (int ks = 0; ks < 4; ++ks) {
      uint32_t a[4];
      LdMatrixX4Trans(a, &sm.y[stage][16 * ks + (lane & 7) + ((lane >> 4) & 1) * 8][16 * warp + ((lane >> 3) & 1) * 8]);
#pragma unroll
      for (int jp = 0; jp < 4; ++jp) {
        uint32_t b[4];
        LdMatrixX4Trans(b, &sm.x[stage][16 * ks + ((lane >> 3) & 1) * 8 + (lane & 7)][16 * jp + ((lane >> 4) & 1) * 8]);
        Mma(acc[2 * jp], a, b[0], b[1]);
        Mma(acc[2 * jp + 1], a, b[2], b[3]);
      }
    }
    __syncthreads();  // the next iteration's copies overwrite this stage
  }
  if (nchunks > 0) flush(chunk_at(nchunks - 1), (nchunks - 1) & 1);

  if (!kReverse) {
    if (!p.d_ht) return;
    // rowsum(d_ht . S_T) over this block's dv columns: per dk column, reduce over e >> 1, the 8
    // row groups of the warp (lanes with equal lane % 4), then the warps and dv tiles through atomics.
    const float* dht = p.d_ht + (int64_t{n} * p.H + h) * state_elems;
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int e1 = 0; e1 < 2; ++e1) {
        const int dk = my_dk + 8 * j + e1;
        float s = acc[j][e1] * dht[int64_t{dk} * p.dv + my_dv] + acc[j][2 + e1] * dht[int64_t{dk} * p.dv + my_dv + 8];
        s += __shfl_xor_sync(0xffffffffu, s, 4);
        s += __shfl_xor_sync(0xffffffffu, s, 8);
        s += __shfl_xor_sync(0xffffffffu, s, 16);
        if (lane < 4) atomicAdd(w.fterm + (int64_t{n} * p.H + h) * p.dk + dk, s);
      }
  } else if (p.d_h0) {
    float* dh0 = p.d_h0 + (int64_t{n} * p.H + h) * state_elems;
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) dh0[int64_t{my_dk + 8 * j + (e & 1)} * p.dv + my_dv + 8 * (e >> 1)] = acc[j][e];
  }
}

// Both scans in one launch (blocks [0, per_scan) walk backwards, the rest forwards): they are
// independent, each is a sequential walk that keeps few warps busy, and apart their grids end in
// partial waves (at B1 a scan is 128 blocks: one per SM).
__global__ void __launch_bounds__(kScanThreads) GlaBwdScansKernel(const GlaBackwardCudaParams p, const BwdWorkspace w,
                                                                  int64_t per_scan) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  ScanSmem& sm = *reinterpret_cast<ScanSmem*>(smem_raw);
  const int64_t block = blockIdx.x;
  if (block < per_scan) ScanBlock<true>(p, w, block, sm);
  else ScanBlock<false>(p, w, block - per_scan, sm);
}

// ---------------------------------------------------------------------------------------------
// 3. Values: dv = A^T dO + kg dS^T and dA = dO V^T, per (chunk, head), walking dv in tiles of 32
// columns (dO, V and the dS rows of a tile) through a two-stage cp.async ring; A and kg stay in
// smem. Warp w owns rows 16 (w % 4).. and columns 16 (w / 4).. of each 64 x 32 dv tile, and rows
// 16 (w % 4).., columns 32 (w / 4).. of dA (64 x 64). 32-column tiles keep the smem of two blocks
// per SM (95 KB each at dk = 256) with the next tile in flight; the 64-column version loaded each
// tile synchronously (long-scoreboard stalls, HBM ~45% busy).

constexpr int kThreads = 256;
constexpr int kVTile = 32;
constexpr int kVLd = kVTile + 8;  // 80-byte rows: the 8 rows of an ldmatrix land on distinct banks

__host__ __device__ constexpr size_t ValuesStageElems(int dk) {
  return size_t{2} * kChunk * kVLd + size_t{kVTile} * (dk + 8);
}
__host__ __device__ constexpr size_t ValuesSmemBytes(int dk) {
  return (size_t{kChunk} * kLd + size_t{kChunk} * (dk + 8) + 2 * ValuesStageElems(dk)) * 2;
}

__global__ void __launch_bounds__(kThreads, 2) GlaBwdValuesKernel(const GlaBackwardCudaParams p, const BwdWorkspace w) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int mg = warp & 3, nh = warp >> 2;
  const int h = blockIdx.y, hk = h / (p.H / p.Hkv);
  ChunkRows cr;
  if (!LocateChunk(p, blockIdx.x, &cr)) return;
  const int kgLd = p.dk + 8, per_row = p.dk / 8;
  bf16(*a_s)[kLd] = reinterpret_cast<bf16(*)[kLd]>(smem_raw);
  bf16* kg_s = reinterpret_cast<bf16*>(a_s + kChunk);  // [64 tokens][dk]
  bf16* ring = kg_s + kChunk * kgLd;                    // per stage: dO [64][kVLd], V [64][kVLd], dS [32 dv][dk]
  const size_t stage_elems = ValuesStageElems(p.dk);

  const int64_t chunk_id = blockIdx.x;
  const bf16* a_src = w.A + int64_t{cr.tok0} * p.H * kChunk + h * kChunk;
  const bf16* kg_src = w.kg + int64_t{cr.tok0} * p.Hkv * p.dk + hk * p.dk;
  const bf16* dob = w.dob + int64_t{cr.tok0} * p.H * p.dv + int64_t{h} * p.dv;
  const bf16* vb = w.vb + int64_t{cr.tok0} * p.Hkv * p.dv + int64_t{hk} * p.dv;
  const bf16* dS = w.dstates + (chunk_id * p.H + h) * int64_t{p.dk} * p.dv;
  for (int i = tid; i < kChunk * 8; i += kThreads) {
    const int r = i >> 3, c8 = (i & 7) * 8;
    const bool ok = r < cr.L;
    CpAsync16(&a_s[r][c8], ok ? a_src + int64_t{r} * p.H * kChunk + c8 : a_src, ok);
  }
  for (int i = tid; i < kChunk * per_row; i += kThreads) {
    const int r = i / per_row, c8 = (i % per_row) * 8;
    const bool ok = r < cr.L;
    CpAsync16(kg_s + r * kgLd + c8, ok ? kg_src + int64_t{r} * p.Hkv * p.dk + c8 : kg_src, ok);
  }
  auto issue = [&](int dv0, int st) {
    bf16* do_s = ring + st * stage_elems;
    bf16* v_s = do_s + kChunk * kVLd;
    bf16* ds_s = v_s + kChunk * kVLd;
    for (int i = tid; i < kChunk * (kVTile / 8); i += kThreads) {
      const int r = i / (kVTile / 8), c8 = (i % (kVTile / 8)) * 8;
      const bool ok = r < cr.L;
      CpAsync16(do_s + r * kVLd + c8, ok ? dob + int64_t{r} * p.H * p.dv + dv0 + c8 : dob, ok);
      CpAsync16(v_s + r * kVLd + c8, ok ? vb + int64_t{r} * p.Hkv * p.dv + dv0 + c8 : vb, ok);
    }
    for (int i = tid; i < kVTile * per_row; i += kThreads) {
      const int r = i / per_row, c8 = (i % per_row) * 8;
      CpAsync16(ds_s + r * kgLd + c8, dS + int64_t{dv0 + r} * p.dk + c8, true);
    }
  };
  float* dv_out = p.H == p.Hkv ? p.d_v + hk * p.dv : w.dv_h + int64_t{h} * p.dv;
  const int64_t dv_stride = p.H == p.Hkv ? p.d_v_stride : int64_t{p.H} * p.dv;

  float da[4][4] = {};
  const bool da_zero = nh == 1 && mg <= 1;  // columns s >= 32 of rows t < 32: above the diagonal
  const int nsteps = p.dv / kVTile;
  issue(0, 0);
  CpAsyncCommit();  // A, kg and the first tile
  for (int j = 0; j < nsteps; ++j) {
    if (j + 1 < nsteps) issue((j + 1) * kVTile, (j + 1) & 1);
    CpAsyncCommit();
    CpAsyncWait1();
    __syncthreads();
    const bf16* do_s = ring + (j & 1) * stage_elems;
    const bf16* v_s = do_s + kChunk * kVLd;
    const bf16* ds_s = v_s + kChunk * kVLd;
    const int dv0 = j * kVTile;
    float acc[2][4] = {};
    // A^T dO (A^T[s][t] is zero for t < s: token steps below the warp's rows are skipped).
    for (int ks = mg; ks < 4; ++ks) {
      uint32_t a[4], b[4];
      LdMatrixX4Trans(a, &a_s[16 * ks + (lane & 7) + ((lane >> 4) & 1) * 8][16 * mg + ((lane >> 3) & 1) * 8]);
      LdMatrixX4Trans(b, do_s + (16 * ks + (lane & 7) + ((lane >> 3) & 1) * 8) * kVLd + 16 * nh + ((lane >> 4) & 1) * 8);
      Mma(acc[0], a, b[0], b[1]);
      Mma(acc[1], a, b[2], b[3]);
    }
    // kg dS^T (dS stored [dv][dk]: the B operand's n rows with k contiguous).
    for (int ks = 0; ks < p.dk / 16; ++ks) {
      uint32_t a[4], b[4];
      LdMatrixX4(a, kg_s + (16 * mg + (lane & 15)) * kgLd + 16 * ks + (lane >> 4) * 8);
      LdMatrixX4(b, ds_s + (16 * nh + (lane & 7) + ((lane >> 4) & 1) * 8) * kgLd + 16 * ks + ((lane >> 3) & 1) * 8);
      Mma(acc[0], a, b[0], b[1]);
      Mma(acc[1], a, b[2], b[3]);
    }
#pragma unroll
    for (int nt = 0; nt < 2; ++nt)
#pragma unroll
      for (int eh = 0; eh < 2; ++eh) {
        const int s = 16 * mg + (lane >> 2) + 8 * eh;
        if (s < cr.L)
          *reinterpret_cast<float2*>(dv_out + (int64_t{cr.tok0} + s) * dv_stride + dv0 + 16 * nh + 8 * nt +
                                     2 * (lane & 3)) = make_float2(acc[nt][2 * eh], acc[nt][2 * eh + 1]);
      }
    // dA += dO V^T.
    if (!da_zero)
#pragma unroll
      for (int ks = 0; ks < kVTile / 16; ++ks) {
        uint32_t a[4];
        LdMatrixX4(a, do_s + (16 * mg + (lane & 15)) * kVLd + 16 * ks + (lane >> 4) * 8);
#pragma unroll
        for (int np = 0; np < 2; ++np) {
          uint32_t b[4];
          LdMatrixX4(b, v_s + (32 * nh + 16 * np + (lane & 7) + ((lane >> 4) & 1) * 8) * kVLd + 16 * ks +
                            ((lane >> 3) & 1) * 8);
          Mma(da[2 * np], a, b[0], b[1]);
          Mma(da[2 * np + 1], a, b[2], b[3]);
        }
      }
    __syncthreads();  // the next issue overwrites this stage
  }
#pragma unroll
  for (int nt = 0; nt < 4; ++nt)
#pragma unroll
    for (int eh = 0; eh < 2; ++eh) {
      const int t = 16 * mg + (lane >> 2) + 8 * eh, s = 32 * nh + 8 * nt + 2 * (lane & 3);
      if (t < cr.L)
        *reinterpret_cast<float2*>(w.dA + (int64_t{cr.tok0} + t) * p.H * kChunk + h * kChunk + s) =
            make_float2(s <= t ? da[nt][2 * eh] : 0.f, s + 1 <= t ? da[nt][2 * eh + 1] : 0.f);
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Keys: dq, dk and dc = q.dq - k.dk for one (chunk, head, 64-dk tile).

// Phase 1 streams 64-dv stages (bf16 dO, V, S0 and dS tiles) through a three-deep cp.async ring
// (latency-bound with two); phase 2 works on six fp32 [64][kFLd] arrays, two in the memory of each
// stage (110 KB in all: two blocks per SM). Phase 2's inputs (q, g, k, dA) are copied in while phase
// 1 still runs, into the stages it has finished with: loaded after phase 1 (synchronously, four
// round trips to HBM per block) they cost ~10% of the kernel.
struct KeysStage {
  bf16 dO[kChunk][kLd], v[kChunk][kLd];
  bf16 s0[kChunk][kLd], ds[kChunk][kLd];  // [dv][dk tile]
};
using KeysFTile = float[kChunk][kFLd];
static_assert(2 * sizeof(KeysFTile) <= sizeof(KeysStage), "two phase-2 arrays per stage");
struct KeysSmem {
  KeysStage stage[3];
};

__global__ void __launch_bounds__(kThreads, 2) GlaBwdKeysKernel(const GlaBackwardCudaParams p, const BwdWorkspace w) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  KeysSmem& sm = *reinterpret_cast<KeysSmem*>(smem_raw);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int mg = warp & 3, nh = warp >> 2;
  // The dk tiles of one (chunk, head) are adjacent blocks: they read the same dO and V from L2.
  const int ndk = p.dk / kTile;
  const int dk0 = static_cast<int>(blockIdx.x % ndk) * kTile;
  const int64_t chunk_id = blockIdx.x / ndk;
  const int h = blockIdx.y, hk = h / (p.H / p.Hkv);
  ChunkRows cr;
  if (!LocateChunk(p, chunk_id, &cr)) return;
  const int64_t state_elems = int64_t{p.dk} * p.dv;
  const bf16* S0 = w.states + (chunk_id * p.H + h) * state_elems + dk0;
  const bf16* dS = w.dstates + (chunk_id * p.H + h) * state_elems + dk0;
  const bf16* dob = w.dob + int64_t{cr.tok0} * p.H * p.dv + int64_t{h} * p.dv;
  const bf16* vb = w.vb + int64_t{cr.tok0} * p.Hkv * p.dv + int64_t{hk} * p.dv;

  // Each thread copies rows lr and lr + 32, columns c8..c8+7, of the four tiles of a stage.
  const int lr = tid >> 3, c8 = (tid & 7) * 8;
  const int64_t do_row = int64_t{p.H} * p.dv, v_row = int64_t{p.Hkv} * p.dv;
  const bool ok0 = lr < cr.L, ok1 = lr + 32 < cr.L;
  const bf16* do_src = dob + lr * do_row + c8;
  const bf16* v_src = vb + lr * v_row + c8;
  const bf16* s0_src = S0 + int64_t{lr} * p.dk + c8;
  const bf16* ds_src = dS + int64_t{lr} * p.dk + c8;
  static_assert(kThreads == 256, "two 8-column slots of 64 rows per thread");
  auto issue = [&](int dv0, KeysStage& st) {
    const int64_t srow = int64_t{dv0} * p.dk;
    CpAsync16(&st.dO[lr][c8], ok0 ? do_src + dv0 : dob, ok0);
    CpAsync16(&st.dO[lr + 32][c8], ok1 ? do_src + 32 * do_row + dv0 : dob, ok1);
    CpAsync16(&st.v[lr][c8], ok0 ? v_src + dv0 : vb, ok0);
    CpAsync16(&st.v[lr + 32][c8], ok1 ? v_src + 32 * v_row + dv0 : vb, ok1);
    CpAsync16(&st.s0[lr][c8], s0_src + srow, true);
    CpAsync16(&st.s0[lr + 32][c8], s0_src + srow + 32 * p.dk, true);
    CpAsync16(&st.ds[lr][c8], ds_src + srow, true);
    CpAsync16(&st.ds[lr + 32][c8], ds_src + srow + 32 * p.dk, true);
  };

  // Inter-chunk products: dqg = dO S0^T and dkg = V dS^T over all dv, on tensor cores.
  float aq[4][4] = {}, ak[4][4] = {};
  const int nsteps = p.dv / kTile;
  // Phase 2's arrays: q and b (g until its cumsum) in the stage of step nsteps - 3, k and dA in that
  // of step nsteps - 2, dqg and dkg in the last step's (dkg is reused for the dc group sums).
  auto region = [&](int st) { return reinterpret_cast<float(*)[kFLd]>(&sm.stage[st]); };
  float(*fq)[kFLd] = region(nsteps % 3);
  float(*fb)[kFLd] = fq + kChunk;
  float(*fk)[kFLd] = region((nsteps + 1) % 3);
  float(*fdA)[kFLd] = fk + kChunk;
  float(*fdqg)[kFLd] = region((nsteps + 2) % 3);
  float(*fdkg)[kFLd] = fdqg + kChunk;
  // 64 rows of 64 fp32 columns (row r at src + r * stride) into dst, rows >= L zero.
  auto load_tile = [&](float(*dst)[kFLd], const float* src, int64_t stride) {
#pragma unroll
    for (int u = 0; u < kChunk * 16 / kThreads; ++u) {
      const int i = tid + u * kThreads, r = i >> 4, c4 = (i & 15) * 4;
      const bool ok = r < cr.L;
      CpAsync16(&dst[r][c4], ok ? src + r * stride + c4 : src, ok);
    }
  };
  auto issue_q_g = [&] {
    load_tile(fq, p.q + int64_t{cr.tok0} * p.q_stride + int64_t{h} * p.dk + dk0, p.q_stride);
    load_tile(fb, p.g + int64_t{cr.tok0} * p.g_stride + int64_t{hk} * p.dk + dk0, p.g_stride);
  };
  auto issue_k_da = [&] {
    load_tile(fk, p.k + int64_t{cr.tok0} * p.k_stride + int64_t{hk} * p.dk + dk0, p.k_stride);
    load_tile(fdA, w.dA + int64_t{cr.tok0} * p.H * kChunk + h * kChunk, int64_t{p.H} * kChunk);
  };
  issue(0, sm.stage[0]);
  CpAsyncCommit();
  if (nsteps > 1) issue(kTile, sm.stage[1]);
  CpAsyncCommit();
  for (int j = 0; j < nsteps; ++j) {
    if (j + 2 < nsteps) issue((j + 2) * kTile, sm.stage[(j + 2) % 3]);
    if (nsteps >= 3 && j == nsteps - 2) issue_q_g();  // the stage of step j - 1 is free
    if (nsteps >= 3 && j == nsteps - 1) issue_k_da();
    CpAsyncCommit();
    CpAsyncWait<2>();
    __syncthreads();
    const KeysStage& st = sm.stage[j % 3];
#pragma unroll
    for (int ks = 0; ks < 4; ++ks) {
      uint32_t a_do[4], a_v[4];
      LdMatrixX4(a_do, &st.dO[16 * mg + (lane & 15)][16 * ks + (lane >> 4) * 8]);
      LdMatrixX4(a_v, &st.v[16 * mg + (lane & 15)][16 * ks + (lane >> 4) * 8]);
#pragma unroll
      for (int np = 0; np < 2; ++np) {
        uint32_t b[4];
        const int kr = 16 * ks + (lane & 7) + ((lane >> 3) & 1) * 8, nc = 32 * nh + 16 * np + ((lane >> 4) & 1) * 8;
        LdMatrixX4Trans(b, &st.s0[kr][nc]);
        Mma(aq[2 * np], a_do, b[0], b[1]);
        Mma(aq[2 * np + 1], a_do, b[2], b[3]);
        LdMatrixX4Trans(b, &st.ds[kr][nc]);
        Mma(ak[2 * np], a_v, b[0], b[1]);
        Mma(ak[2 * np + 1], a_v, b[2], b[3]);
      }
    }
    __syncthreads();  // the next issue overwrites this stage (and, after the last, phase 2 reuses it)
  }
  if (nsteps < 3) {
    issue_q_g();
    issue_k_da();
    CpAsyncCommit();
  }
#pragma unroll
  for (int nt = 0; nt < 4; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int r = 16 * mg + (lane >> 2) + 8 * (e >> 1), c = 32 * nh + 8 * nt + 2 * (lane & 3) + (e & 1);
      fdqg[r][c] = aq[nt][e];
      fdkg[r][c] = ak[nt][e];
    }
  CpAsyncWait<0>();
  __syncthreads();
  if (tid < kTile) {  // b = inclusive cumsum of g down the rows
    float s = 0.f;
    for (int r = 0; r < kChunk; ++r) {
      s += fb[r][tid];
      fb[r][tid] = s;
    }
  }
  __syncthreads();

  // Diagonal sub-chunks, exact: thread = one column of one sub-chunk, the 16 rows' b, q and k in
  // registers, dA broadcast across the warp, and each exp(b_t - b_s) shared by the dq and dk sums.
  // Folded into dqg / dkg, which become exp(b) dqg + diag_q and exp(B - b) dkg + scale diag_k.
  {
    const int i = tid & (kTile - 1), rd = kSub * (tid / kTile);
    float bb[kSub], qq[kSub], kk[kSub], dqd[kSub], dkd[kSub];
#pragma unroll
    for (int u = 0; u < kSub; ++u) {
      bb[u] = fb[rd + u][i];
      qq[u] = fq[rd + u][i];
      kk[u] = fk[rd + u][i];
      dqd[u] = dkd[u] = 0.f;
    }
#pragma unroll
    for (int t = 0; t < kSub; ++t)
#pragma unroll
      for (int u = 0; u <= t; ++u) {
        const float e = fdA[rd + t][rd + u] * __expf(bb[t] - bb[u]);
        dqd[t] += e * kk[u];
        dkd[u] += e * qq[t];
      }
    const float blast = fb[kChunk - 1][i];
#pragma unroll
    for (int u = 0; u < kSub; ++u) {
      fdqg[rd + u][i] = __expf(bb[u]) * fdqg[rd + u][i] + dqd[u];
      fdkg[rd + u][i] = __expf(blast - bb[u]) * fdkg[rd + u][i] + p.scale * dkd[u];
    }
  }
  __syncthreads();

  // Off-diagonal sub-chunk pairs on tensor cores, through the sub-chunk's reference row so that
  // every exp() argument is <= 0 (the forward's A is built the same way): warp w owns columns
  // 8w..8w+7; its mma operands are built in registers from the fp32 smem arrays (bf16 dA and
  // gated k / q), the results scaled back per row and added into dqg / dkg. (On CUDA cores, one
  // thread per 4 rows x 4 columns, this part issued ~30% of the kernel's instructions.)
  {
    const int ra = lane >> 2, kq = 2 * (lane & 3);        // A / C row, A / B k offset in a k16 step
    const int bi = 8 * warp + ra, ci = 8 * warp + kq;      // the B column, the C columns ci, ci + 1
    // dq, rows t of sub-chunk j = 1..3 (reference row r = 16 j): sum_{s < r} dA_ts k_s exp(b_r - b_s).
#pragma unroll
    for (int j = 1; j < 4; ++j) {
      const int r = kSub * j;
      const float br = fb[r][bi];
      auto kh = [&](int s) { return fk[s][bi] * __expf(br - fb[s][bi]); };
      float acc[4] = {};
#pragma unroll
      for (int kk = 0; kk < j; ++kk) {
        const int t = r + ra, s = kSub * kk + kq;
        const uint32_t a[4] = {PackBf16(fdA[t][s], fdA[t][s + 1]),
                               PackBf16(fdA[t + 8][s], fdA[t + 8][s + 1]),
                               PackBf16(fdA[t][s + 8], fdA[t][s + 9]),
                               PackBf16(fdA[t + 8][s + 8], fdA[t + 8][s + 9])};
        Mma(acc, a, PackBf16(kh(s), kh(s + 1)), PackBf16(kh(s + 8), kh(s + 9)));
      }
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int t = r + ra + 8 * (e >> 1), c = ci + (e & 1);
        fdqg[t][c] += acc[e] * __expf(fb[t][c] - fb[r][c]);
      }
    }
    // dk, rows s of sub-chunk j = 0..2 (reference row rk = 16 j + 15): sum_{t > rk} dA_ts q_t exp(b_t - b_rk).
#pragma unroll
    for (int j = 0; j < 3; ++j) {
      const int rk = kSub * j + kSub - 1;
      const float br = fb[rk][bi];
      auto qh = [&](int t) { return fq[t][bi] * __expf(fb[t][bi] - br); };
      float acc[4] = {};
#pragma unroll
      for (int kk = j + 1; kk < 4; ++kk) {
        const int s = kSub * j + ra, t = kSub * kk + kq;  // A = dA^T: rows s, k = t
        const uint32_t a[4] = {PackBf16(fdA[t][s], fdA[t + 1][s]),
                               PackBf16(fdA[t][s + 8], fdA[t + 1][s + 8]),
                               PackBf16(fdA[t + 8][s], fdA[t + 9][s]),
                               PackBf16(fdA[t + 8][s + 8], fdA[t + 9][s + 8])};
        Mma(acc, a, PackBf16(qh(t), qh(t + 1)), PackBf16(qh(t + 8), qh(t + 9)));
      }
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int s = kSub * j + ra + 8 * (e >> 1), c = ci + (e & 1);
        fdkg[s][c] += p.scale * acc[e] * __expf(fb[rk][c] - fb[s][c]);
      }
    }
  }
  __syncthreads();
  const int rg = tid >> 4, cx = tid & 15, r0 = 4 * rg;  // thread = 4 rows x 4 columns (16 apart)
  float* dk_out = p.H == p.Hkv ? p.d_k + int64_t{hk} * p.dk : w.dk_h + int64_t{h} * p.dk;
  const int64_t dk_stride = p.H == p.Hkv ? p.d_k_stride : int64_t{p.H} * p.dk;
  float dc[4][4];  // q.dq - k.dk (zero on rows >= L, where q and k are zero)
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int t = r0 + r;
    const int64_t row = int64_t{cr.tok0} + t;
#pragma unroll
    for (int cc = 0; cc < 4; ++cc) {
      const int i = cx + 16 * cc;
      const float dq = p.scale * fdqg[t][i];
      const float dk = fdkg[t][i];
      dc[r][cc] = fq[t][i] * dq - fk[t][i] * dk;
      if (t < cr.L) {
        p.d_q[row * p.d_q_stride + int64_t{h} * p.dk + dk0 + i] = dq;
        dk_out[row * dk_stride + dk0 + i] = dk;
      }
    }
  }
  // dc's reverse cumsum inside the chunk (dg's local part): within the thread's 4 rows, then the
  // totals of the 4-row groups below (through smem: dkg is dead once every thread has read it).
#pragma unroll
  for (int r = 2; r >= 0; --r)
#pragma unroll
    for (int cc = 0; cc < 4; ++cc) dc[r][cc] += dc[r + 1][cc];
  __syncthreads();
#pragma unroll
  for (int cc = 0; cc < 4; ++cc) fdkg[rg][cx + 16 * cc] = dc[0][cc];
  __syncthreads();
#pragma unroll
  for (int cc = 0; cc < 4; ++cc) {
    const int i = cx + 16 * cc;
    float below = 0.f;
    for (int g = rg + 1; g < kChunk / 4; ++g) below += fdkg[g][i];
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int t = r0 + r;
      if (t < cr.L) w.dc[(int64_t{cr.tok0} + t) * p.H * p.dk + int64_t{h} * p.dk + dk0 + i] = dc[r][cc] + below;
    }
    if (rg == 0) w.tot[(chunk_id * p.H + h) * p.dk + dk0 + i] = dc[0][cc] + below;
  }
}

// ---------------------------------------------------------------------------------------------
// 5. GQA: per-head dk / dv summed over each kv group, per chunk.

__global__ void GlaBwdGroupSumKernel(const GlaBackwardCudaParams p, const BwdWorkspace w) {
  ChunkRows cr;
  if (!LocateChunk(p, blockIdx.x, &cr)) return;
  const int groups = p.H / p.Hkv;
  for (int r = 0; r < cr.L; ++r) {
    const int64_t t = int64_t{cr.tok0} + r;
    for (int i = threadIdx.x; i < p.Hkv * p.dk; i += blockDim.x) {
      const int hk = i / p.dk, c = i % p.dk;
      float s = 0.f;
      for (int g = 0; g < groups; ++g) s += w.dk_h[(t * p.H + hk * groups + g) * p.dk + c];
      p.d_k[t * p.d_k_stride + i] = s;
    }
    for (int i = threadIdx.x; i < p.Hkv * p.dv; i += blockDim.x) {
      const int hk = i / p.dv, c = i % p.dv;
      float s = 0.f;
      for (int g = 0; g < groups; ++g) s += w.dv_h[(t * p.H + hk * groups + g) * p.dv + c];
      p.d_v[t * p.d_v_stride + i] = s;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// 6. dg = reverse cumsum of dc over the sequence (+ the final-state term): the keys kernel left
// each chunk's local reverse cumsum and total per head; here the totals become offsets and the
// heads of a kv group are summed.

// Per (sequence, head): tot[c] becomes the sum of the totals of the chunks after c, plus the
// final-state term.
__global__ void GlaBwdGateSuffixKernel(const GlaBackwardCudaParams p, const BwdWorkspace w) {
  const int n = blockIdx.x, h = blockIdx.y;
  const int begin = p.cu_seqlens[n], end = p.cu_seqlens[n + 1];
  const int nchunks = (end - begin + kChunk - 1) / kChunk;
  const int64_t chunk0 = begin / kChunk + n;
  for (int i = threadIdx.x; i < p.dk; i += blockDim.x) {
    float off = p.d_ht ? w.fterm[(int64_t{n} * p.H + h) * p.dk + i] : 0.f;
    for (int c = nchunks - 1; c >= 0; --c) {
      float* t = w.tot + ((chunk0 + c) * p.H + h) * p.dk + i;
      const float mine = *t;
      *t = off;
      off += mine;
    }
  }
}

// Per (chunk, kv head): d_g = sum over the group's heads of (local reverse cumsum + chunk offset).
__global__ void GlaBwdGateKernel(const GlaBackwardCudaParams p, const BwdWorkspace w) {
  ChunkRows cr;
  if (!LocateChunk(p, blockIdx.x, &cr)) return;
  const int hk = blockIdx.y, groups = p.H / p.Hkv;
  const int64_t id = blockIdx.x;
  for (int i = threadIdx.x; i < p.dk; i += blockDim.x) {
    float off = 0.f;
    for (int g = 0; g < groups; ++g) off += w.tot[(id * p.H + hk * groups + g) * p.dk + i];
    for (int r = 0; r < cr.L; ++r) {
      const int64_t t = int64_t{cr.tok0} + r;
      float s = off;
      for (int g = 0; g < groups; ++g) s += w.dc[(t * p.H + hk * groups + g) * p.dk + i];
      p.d_g[t * p.d_g_stride + int64_t{hk} * p.dk + i] = s;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Host side.

struct BwdPlan {
  int64_t chunk_ids = 0;
  size_t qg = 0, kg = 0, A = 0, decay = 0, states = 0, dstates = 0, vb = 0, dob = 0, dA = 0, dc = 0, tot = 0,
         fterm = 0, dk_h = 0, dv_h = 0, bytes = 0;
};

BwdPlan MakeBwdPlan(const GlaBackwardCudaParams& p, int total_tokens) {
  BwdPlan plan;
  const int64_t total = std::max(total_tokens, 0), seqs = std::max(p.num_seqs, 1);
  const PrepLayout prep = MakePrepLayout(p.H, p.Hkv, p.dk, total, p.num_seqs);  // as the forward's plan
  plan.chunk_ids = prep.chunk_ids;
  const size_t T = static_cast<size_t>(total), H = std::max(p.H, 0), Hkv = std::max(p.Hkv, 0);
  const size_t dk = std::max(p.dk, 0), dv = std::max(p.dv, 0), C = static_cast<size_t>(plan.chunk_ids);
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
  plan.states = take(C * H * dk * dv * 2);
  plan.dstates = take(C * H * dk * dv * 2);
  plan.vb = take(T * Hkv * dv * 2);
  plan.dob = take(T * H * dv * 2);
  plan.dA = take(T * H * kChunk * 4);
  plan.dc = take(T * H * dk * 4);
  plan.tot = take(C * H * dk * 4);
  plan.fterm = take(static_cast<size_t>(seqs) * H * dk * 4);
  if (p.H > p.Hkv) {
    plan.dk_h = take(T * H * dk * 4);
    plan.dv_h = take(T * H * dv * 4);
  }
  plan.bytes = off;
  return plan;
}

bool Aligned16(const void* ptr, int64_t stride) { return ptr != nullptr && RowsAligned16(ptr, stride); }

bool Supported(const GlaBackwardCudaParams& p) {
  if (p.num_seqs < 0 || p.H < 1 || p.Hkv < 1 || p.H % p.Hkv != 0 || p.total_tokens < 0) return false;
  if (p.gate.lowrank != nullptr) return false;  // its kernels read g (GlaPrefillCudaParams::gate is the forward's)
  if (p.plan_segments != 0 || p.plan_split_prep != 0) return false;  // the forward's plan overrides
  if (!chunk::ChunkHeadDimSupported(p.dk)) return false;  // the prep kernel's slices
  if (p.dv < kTile || p.dv % kTile != 0) return false;
  if (p.num_seqs > 0 && p.cu_seqlens == nullptr) return false;
  return Aligned16(p.q, p.q_stride) && Aligned16(p.k, p.k_stride) && Aligned16(p.v, p.v_stride) &&
         Aligned16(p.g, p.g_stride) && Aligned16(p.d_o, p.d_o_stride) && Aligned16(p.d_q, p.d_q_stride) &&
         Aligned16(p.d_k, p.d_k_stride) && Aligned16(p.d_v, p.d_v_stride) && Aligned16(p.d_g, p.d_g_stride);
}

template <typename Kernel>
cudaError_t AllowSmem(Kernel kernel, size_t bytes) {
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
}

}  // namespace

size_t GlaBackwardChunkWorkspaceBytes(const GlaBackwardCudaParams& p, int total_tokens) {
  return MakeBwdPlan(p, total_tokens).bytes;
}

cudaError_t GlaBackwardChunk(const GlaBackwardCudaParams& p, cudaStream_t stream) {
  if (!Supported(p)) return cudaErrorInvalidValue;
  if (p.num_seqs == 0) return cudaSuccess;
  const BwdPlan plan = MakeBwdPlan(p, p.total_tokens);
  if (p.workspace == nullptr || p.workspace_bytes < plan.bytes || reinterpret_cast<uintptr_t>(p.workspace) % 256 != 0)
    return cudaErrorInvalidValue;
  unsigned char* base = static_cast<unsigned char*>(p.workspace);
  BwdWorkspace w;
  w.qg = reinterpret_cast<bf16*>(base + plan.qg);
  w.kg = reinterpret_cast<bf16*>(base + plan.kg);
  w.A = reinterpret_cast<bf16*>(base + plan.A);
  w.decay = reinterpret_cast<float*>(base + plan.decay);
  w.states = reinterpret_cast<bf16*>(base + plan.states);
  w.dstates = reinterpret_cast<bf16*>(base + plan.dstates);
  w.vb = reinterpret_cast<bf16*>(base + plan.vb);
  w.dob = reinterpret_cast<bf16*>(base + plan.dob);
  w.dA = reinterpret_cast<float*>(base + plan.dA);
  w.dc = reinterpret_cast<float*>(base + plan.dc);
  w.tot = reinterpret_cast<float*>(base + plan.tot);
  w.fterm = reinterpret_cast<float*>(base + plan.fterm);
  if (p.H > p.Hkv) {
    w.dk_h = reinterpret_cast<float*>(base + plan.dk_h);
    w.dv_h = reinterpret_cast<float*>(base + plan.dv_h);
  }

  cudaError_t e;
  // 1. Prep: the forward's, on the same q/k/g.
  const GlaPrefillCudaParams& fp = p;  // the backward's params are the forward's and more
  if (!p.reuse_forward_prep &&
      (e = LaunchChunkPrep(fp, PrepOut{w.qg, w.kg, w.A, w.decay}, plan.chunk_ids, stream)) != cudaSuccess)
    return e;
  const unsigned chunks = static_cast<unsigned>(plan.chunk_ids);
  GlaBwdToBf16Kernel<<<dim3(chunks, kChunk / kCopyRows), kThreads, 0, stream>>>(p, w);
  if ((e = cudaGetLastError()) != cudaSuccess) return e;
  // 2. The two scans.
  if (p.d_ht && (e = cudaMemsetAsync(w.fterm, 0, size_t(p.num_seqs) * p.H * p.dk * 4, stream)) != cudaSuccess)
    return e;
  const int64_t scan_blocks = int64_t{p.num_seqs} * p.H * (p.dv / kTile) * (p.dk / kTile);
  if ((e = AllowSmem(GlaBwdScansKernel, sizeof(ScanSmem))) != cudaSuccess) return e;
  // Four blocks of ~56 KB per SM (their registers allow four): ask for the largest smem carveout.
  if ((e = cudaFuncSetAttribute(GlaBwdScansKernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                                cudaSharedmemCarveoutMaxShared)) != cudaSuccess)
    return e;
  GlaBwdScansKernel<<<static_cast<unsigned>(2 * scan_blocks), kScanThreads, sizeof(ScanSmem), stream>>>(p, w,
                                                                                                       scan_blocks);
  if ((e = cudaGetLastError()) != cudaSuccess) return e;
  // 3-4. The per-chunk gradients.
  if ((e = AllowSmem(GlaBwdValuesKernel, ValuesSmemBytes(p.dk))) != cudaSuccess ||
      (e = AllowSmem(GlaBwdKeysKernel, sizeof(KeysSmem))) != cudaSuccess)
    return e;
  GlaBwdValuesKernel<<<dim3(chunks, p.H), kThreads, ValuesSmemBytes(p.dk), stream>>>(p, w);
  if ((e = cudaGetLastError()) != cudaSuccess) return e;
  GlaBwdKeysKernel<<<dim3(chunks * (p.dk / kTile), p.H), kThreads, sizeof(KeysSmem), stream>>>(p, w);
  if ((e = cudaGetLastError()) != cudaSuccess) return e;
  // 5. GQA sums.
  if (p.H > p.Hkv) {
    GlaBwdGroupSumKernel<<<chunks, kThreads, 0, stream>>>(p, w);
    if ((e = cudaGetLastError()) != cudaSuccess) return e;
  }
  // 6. dg.
  GlaBwdGateSuffixKernel<<<dim3(p.num_seqs, p.H), kThreads, 0, stream>>>(p, w);
  if ((e = cudaGetLastError()) != cudaSuccess) return e;
  GlaBwdGateKernel<<<dim3(chunks, p.Hkv), kThreads, 0, stream>>>(p, w);
  return cudaGetLastError();
}

}  // namespace gla::cuda
