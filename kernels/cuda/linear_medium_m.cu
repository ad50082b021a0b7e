// Medium-sized projections (17 to kMediumMMaxRows rows: decode at batch 32-256, short prompts):
// y[M, N] = x[M, K] W[N, K]^T (+ beta y) with bf16, FP8 or INT8 weight rows (the one-byte ones
// widened exactly to bf16 in registers, each row's sum scaled once), bf16 inputs, fp32 sums.
//
// Why a kernel of our own: at these sizes the step is still bound by the weight bytes, and neither
// path it replaces reads them at bandwidth (H100, 2026-12-06): cuBLAS's bf16 GEMM streams at about
// half the copy rate at 32-128 rows, INT8 had to be dequantized to bf16 first (5 bytes moved a
// weight), FP8 quantized its inputs before cuBLASLt's FP8 GEMM, and the decode-sized tensor-core
// kernel (linear_small_m_mma.cu) reloads its input rows for every 16 features, so from 32 rows
// it is bound by those loads. Here a block stages a tile of weights and a tile of inputs in shared
// memory (cp.async, kStages deep) and each warp reuses every input fragment across its feature
// tiles and every weight fragment across its token tiles.
//
// Tiling: a block owns BF = 128 features (64: MediumMTuning::narrow_features) and BT tokens (32,
// 64 or 128 by M) and a share of K; 8 warps as WARPS_F x WARPS_T, a warp 16 WF features x 8 WT
// tokens (mma.sync m16n8k16: weights are the 16-row A operand, tokens the 8-column B operand). K
// goes in tiles of kBK = 64; in a tile, lane (g = lane / 4, t = lane % 4) takes k = 16 t ... 16 t +
// 15 of its rows for both operands (the mma's k order is then a permutation of the real one, the
// same for both, which a dot product does not see). Split K: where the feature and token tiles
// alone leave the GPU's SMs idle, CK blocks of a thread-block cluster take consecutive shares of K
// and add their partial sums through distributed shared memory in rank order (deterministic: no
// atomics), each block writing a share of the outputs.
//
// Measured (H100, 2026-12-06 15:46, linear_medium_m_bench; docs/quantization.md "The medium-M
// kernel" and what follows it): at 17-32 rows one-byte rows stream at 38-60% of the copy rate on
// gla-1.3B's large projections (bf16 rows 57-77%, level with cuBLAS), less at 48-256 rows, and the
// time still grows with M. The engine takes it for FP8 to 32 rows and INT8 to 64
// (ProjectionPaths); with bf16 rows cuBLAS stays faster. What bounds a launch, from its per-block
// timeline (MediumMTuning::trace): the first three tiles of every block requested at once and
// landing 2-5 us later, and the blocks that get their data last.
#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <type_traits>

#include "kernels/cuda/bf16_dot.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/linear_small_m_common.cuh"
#include "kernels/cuda/mma_sync.cuh"
#include "kernels/linear.h"
#include "kernels/linear_fp8.h"

namespace gla::cuda {

namespace {

namespace cg = cooperative_groups;

constexpr int kThreads = 256, kBK = 64, kStages = 4, kMaxCluster = 8;
constexpr int kRedPad = 4;  // the partial-sum rows padded so a warp's fragment stores hit distinct banks

// 16 bytes from global to shared memory (dst: a shared-window address), bypassing L1; src_bytes 0
// fills the 16 bytes with zeros (rows past N or M, chunks past K) without reading.
__device__ __forceinline__ void CopyAsync16(uint32_t dst, const void* global, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(global), "r"(src_bytes));
}
// The GPU's nanosecond clock (the same on every SM), for MediumMTuning::trace.
__device__ __forceinline__ uint64_t GlobalTimerNs() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

__device__ __forceinline__ void CommitAsync() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void WaitAsync() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// A row's eight k values of one half-tile as four bf16 pairs, from the shared-memory tile.
// bf16 rows: 128 bytes a tile row (8 chunks of 16 bytes, chunk c kept at c ^ (row & 1) so that the
// two rows of a quarter-warp's loads fall in different banks); one-byte rows: 64 bytes (4 chunks,
// unswizzled: a quarter-warp reads 128 consecutive bytes), the lane's 16 bytes loaded once a tile.
template <class Rows>
struct WeightTile;

template <>
struct WeightTile<small_m::Bf16Rows> {
  static constexpr int kRowBytes = kBK * 2;
  __device__ __forceinline__ static int ChunkAt(int row, int c) { return c ^ (row & 1); }
  __device__ __forceinline__ void Load(const uint8_t*, int, int) {}  // each half loads its own chunk
  __device__ __forceinline__ uint4 Half(const uint8_t* tile, int row, int t, int h) const {
    return *reinterpret_cast<const uint4*>(tile + row * kRowBytes + ChunkAt(row, 2 * t + h) * 16);
  }
};

template <float2 (*Widen)(unsigned)>
struct ByteWeightTile {
  static constexpr int kRowBytes = kBK;
  __device__ __forceinline__ static int ChunkAt(int, int c) { return c; }
  uint4 raw;  // k = 16 t ... 16 t + 15 of the row
  __device__ __forceinline__ void Load(const uint8_t* tile, int row, int t) {
    raw = *reinterpret_cast<const uint4*>(tile + row * kRowBytes + t * 16);
  }
  __device__ __forceinline__ uint4 Half(const uint8_t*, int, int, int h) const {
    const uint32_t lo = h == 0 ? raw.x : raw.z, hi = h == 0 ? raw.y : raw.w;
    return make_uint4(BytePairToBf16x2<Widen>(lo), BytePairToBf16x2<Widen>(lo >> 16), BytePairToBf16x2<Widen>(hi),
                      BytePairToBf16x2<Widen>(hi >> 16));
  }
};
template <>
struct WeightTile<small_m::Fp8Rows> : ByteWeightTile<Fp8x2ToFloat2> {};
template <>
struct WeightTile<small_m::Int8Rows> : ByteWeightTile<Int8x2ToFloat2> {};

template <class Rows, int BT, int BF, int kInputBytesPerK = 2>
struct SmemLayout {
  static constexpr int kWeightBytes = BF * WeightTile<Rows>::kRowBytes;
  static constexpr int kInputBytes = BT * kBK * kInputBytesPerK;
  static constexpr int kStageBytes = kWeightBytes + kInputBytes;
  static constexpr int kPipelineBytes = kStages * kStageBytes;
  static constexpr int kRedBytes = BT * (BF + kRedPad) * 4;
  static constexpr int kBytes = kPipelineBytes > kRedBytes ? kPipelineBytes : kRedBytes;
};

// MediumMTuning::trace: thread 0 of block `block` stamps its start and its SM; the stamps the
// kernels then write (null for every other thread, and when not tracing).
__device__ __forceinline__ uint64_t* StartTrace(uint64_t* trace, int64_t block) {
  if (trace == nullptr || threadIdx.x != 0) return nullptr;
  uint64_t* stamp = trace + kMediumMTraceFields * block;
  stamp[0] = GlobalTimerNs();
  unsigned sm;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
  stamp[5] = sm;
  return stamp;
}

// A warp's sums to shared memory as red[token][feature] (rows kRedStride floats apart): acc[f][j]
// holds (feature g, token 2t), (g, 2t + 1), (g + 8, 2t), (g + 8, 2t + 1) of its tile pair.
template <int WF, int WT, int kRedStride>
__device__ __forceinline__ void SumsToShared(const float (&acc)[WF][WT][4], float* red, int wf0, int wt0, int g,
                                             int t) {
#pragma unroll
  for (int f = 0; f < WF; ++f)
#pragma unroll
    for (int j = 0; j < WT; ++j) {
      const int feature = wf0 + 16 * f + g, token = wt0 + 8 * j + 2 * t;
      red[token * kRedStride + feature] = acc[f][j][0];
      red[(token + 1) * kRedStride + feature] = acc[f][j][1];
      red[token * kRedStride + feature + 8] = acc[f][j][2];
      red[(token + 1) * kRedStride + feature + 8] = acc[f][j][3];
    }
}

// One staged tile (kBK of K) into a warp's sums: its WF x 16 weight rows from wf0 against its
// WT x 8 input rows from wt0, lane (g, t) taking k = 16 t ... 16 t + 15 of both (the file's comment).
template <class Rows, int WF, int WT>
__device__ __forceinline__ void MmaStagedTile(float (&acc)[WF][WT][4], const uint8_t* wtile, const uint8_t* xtile,
                                              int wf0, int wt0, int g, int t) {
  using Tile = WeightTile<Rows>;
  Tile w[WF][2];
#pragma unroll
  for (int f = 0; f < WF; ++f)
#pragma unroll
    for (int r = 0; r < 2; ++r) w[f][r].Load(wtile, wf0 + 16 * f + g + 8 * r, t);
#pragma unroll
  for (int h = 0; h < 2; ++h) {  // k = 16 t + 8 h ... + 7: four bf16 pairs of each operand
    uint4 a[WF][2], b[WT];
#pragma unroll
    for (int f = 0; f < WF; ++f)
#pragma unroll
      for (int r = 0; r < 2; ++r) a[f][r] = w[f][r].Half(wtile, wf0 + 16 * f + g + 8 * r, t, h);
#pragma unroll
    for (int j = 0; j < WT; ++j) {
      const int row = wt0 + 8 * j + g;
      b[j] = *reinterpret_cast<const uint4*>(xtile + row * (kBK * 2) + ((2 * t + h) ^ (row & 1)) * 16);
    }
    // Step 0: pairs 0 and 1 (k + 0..3); step 1: pairs 2 and 3 (k + 4..7).
#pragma unroll
    for (int f = 0; f < WF; ++f)
#pragma unroll
      for (int j = 0; j < WT; ++j) {
        MmaBf16(acc[f][j], a[f][0].x, a[f][1].x, a[f][0].y, a[f][1].y, b[j].x, b[j].y);
        MmaBf16(acc[f][j], a[f][0].z, a[f][1].z, a[f][0].w, a[f][1].w, b[j].z, b[j].w);
      }
  }
}

// The same tile with FP8 weights and FP8 inputs (the rows the FP8 GEMM path quantizes): no widening.
// Lane (g, t) takes bytes 16 t ... 16 t + 15 of weight rows g and g + 8 and of input row g of the
// 64-byte tile rows, four k a register; each mma's k slots 4t..4t+3 and 16+4t.. come from lanes of
// the same t for both operands, so the mma's k order is again a permutation of the real one.
template <int WF, int WT>
__device__ __forceinline__ void MmaStagedTileFp8Inputs(float (&acc)[WF][WT][4], const uint8_t* wtile,
                                                       const uint8_t* xtile, int wf0, int wt0, int g, int t) {
  uint4 w[WF][2], xv[WT];
#pragma unroll
  for (int f = 0; f < WF; ++f)
#pragma unroll
    for (int r = 0; r < 2; ++r)
      w[f][r] = *reinterpret_cast<const uint4*>(wtile + (wf0 + 16 * f + g + 8 * r) * kBK + t * 16);
#pragma unroll
  for (int j = 0; j < WT; ++j) xv[j] = *reinterpret_cast<const uint4*>(xtile + (wt0 + 8 * j + g) * kBK + t * 16);
#pragma unroll
  for (int f = 0; f < WF; ++f)
#pragma unroll
    for (int j = 0; j < WT; ++j) {
      MmaE4m3(acc[f][j], w[f][0].x, w[f][1].x, w[f][0].y, w[f][1].y, xv[j].x, xv[j].y);
      MmaE4m3(acc[f][j], w[f][0].z, w[f][1].z, w[f][0].w, w[f][1].w, xv[j].z, xv[j].w);
    }
}

// WF feature tiles (16 each) and WT token tiles (8 each) a warp; WARPS_F x (8 / WARPS_F) warps.
// Grid: (CK, feature tiles, token tiles); cluster (CK, 1, 1) when CK > 1. kFp8Inputs: x holds FP8
// E4M3 rows with a scale each (x_scale; FP8 weight rows only), otherwise bf16 rows (x_scale null);
// either way x and its row stride in bytes.
template <class Rows, int WF, int WT, int WARPS_F, bool kFp8Inputs = false>
__global__ void __launch_bounds__(kThreads) MediumMKernel(const uint8_t* __restrict__ x, int64_t x_stride_bytes,
                                                          const float* __restrict__ x_scale, const Rows rows, int64_t N,
                                                          int64_t K, int M, void* y, bool y_bf16, int64_t y_stride,
                                                          float beta, uint64_t* __restrict__ trace) {
  // MediumMTuning::trace: the GPU clock at the block's start, when its first tile has landed, at the
  // end of its K loop, when the cluster's partial sums are visible, when its outputs are written.
  uint64_t* stamp = StartTrace(trace, blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z));
  constexpr int WARPS_T = 8 / WARPS_F, BT = 8 * WT * WARPS_T, BF = 16 * WF * WARPS_F;
  constexpr int kInputRowBytes = kBK * (kFp8Inputs ? 1 : 2), kInputChunksPerRow = kInputRowBytes / 16;
  static_assert(!kFp8Inputs || std::is_same_v<Rows, small_m::Fp8Rows>, "FP8 inputs meet FP8 weight rows only");
  using Layout = SmemLayout<Rows, BT, BF, kFp8Inputs ? 1 : 2>;
  using Tile = WeightTile<Rows>;
  extern __shared__ __align__(16) uint8_t smem[];

  const int ck = static_cast<int>(gridDim.x), rank = static_cast<int>(blockIdx.x);
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * BF;
  const int t0 = static_cast<int>(blockIdx.z) * BT;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
  const int wf0 = (warp % WARPS_F) * 16 * WF, wt0 = (warp / WARPS_F) * 8 * WT;

  // This block's share of K, in tiles of kBK.
  const int k_tiles = static_cast<int>((K + kBK - 1) / kBK);
  const int kt_begin = rank * k_tiles / ck, kt_end = (rank + 1) * k_tiles / ck;
  constexpr int kWeightsPerChunk = Rows::kWeightsPerChunk;
  constexpr int kWeightChunksPerRow = Tile::kRowBytes / 16;
  const int64_t weight_chunks = K / kWeightsPerChunk, input_chunks = K * (kFp8Inputs ? 1 : 2) / 16;

  // Each thread's copies of a stage, fixed for the whole K loop: kWeightCopies weight chunks (rows
  // wrow0 + i kWeightRowStep, chunk wc of the tile) and kInputCopies input chunks (rows irow0 + 32 i,
  // chunk ic), their sources at the first tile and their places in a stage. Computed once here: the
  // first form worked them out per tile (division, 64-bit products, the row checks), about 400
  // instructions a tile per warp around 16 mmas, and the loop was bound by their latency (H100
  // Nsight Compute, 2026-12-06: 5.0M instructions against cuBLAS's 0.9M at the same GEMM).
  constexpr int kWeightCopies = BF * kWeightChunksPerRow / kThreads, kWeightRowStep = kThreads / kWeightChunksPerRow;
  // FP8 inputs at 32 tokens: 128 chunks a stage, so half the threads copy none (xin).
  constexpr int kInputCopies = (BT * kInputChunksPerRow + kThreads - 1) / kThreads;
  constexpr int kInputRowStep = kThreads / kInputChunksPerRow;
  static_assert(kWeightCopies * kThreads == BF * kWeightChunksPerRow &&
                    kWeightRowStep * kWeightChunksPerRow == kThreads,
                "a stage's weight chunks divide evenly over the threads");
  const int tid = static_cast<int>(threadIdx.x);
  const int wc = tid % kWeightChunksPerRow, wrow0 = tid / kWeightChunksPerRow;
  const int ic = tid % kInputChunksPerRow, irow0 = tid / kInputChunksPerRow;
  const uint4* wsrc[kWeightCopies];
  uint32_t wdst[kWeightCopies];
  bool wok[kWeightCopies];
#pragma unroll
  for (int i = 0; i < kWeightCopies; ++i) {
    const int row = wrow0 + i * kWeightRowStep;
    wok[i] = n0 + row < N;
    wsrc[i] = rows.Row(wok[i] ? n0 + row : 0, K) + wc;
    wdst[i] = static_cast<uint32_t>(row * Tile::kRowBytes + Tile::ChunkAt(row, wc) * 16);
  }
  const uint8_t* xsrc[kInputCopies];
  uint32_t xdst[kInputCopies];
  bool xin[kInputCopies], xok[kInputCopies];
#pragma unroll
  for (int i = 0; i < kInputCopies; ++i) {
    const int row = irow0 + i * kInputRowStep;
    xin[i] = row < BT;
    xok[i] = xin[i] && t0 + row < M;
    xsrc[i] = x + (xok[i] ? (t0 + row) * x_stride_bytes : 0) + ic * 16;
    // bf16 rows (128 bytes): chunk c at c ^ (row & 1), as the weights'; FP8 rows (64 bytes): as they are.
    xdst[i] = static_cast<uint32_t>(row * kInputRowBytes + (kFp8Inputs ? ic : ic ^ (row & 1)) * 16);
  }
  const uint32_t smem_base = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  auto weight_stage = [&](int s) { return smem + s * Layout::kStageBytes; };
  auto input_stage = [&](int s) { return smem + s * Layout::kStageBytes + Layout::kWeightBytes; };
  // A chunk past K (the last tile of a K that is no multiple of kBK) or a row past N / M is filled
  // with zeros from a valid address (the first tile's), reading nothing.
  auto load_weights = [&](int s, int kt) {
    const uint32_t dst = smem_base + static_cast<uint32_t>(s * Layout::kStageBytes);
    const int64_t chunk = int64_t{kt} * kWeightChunksPerRow;
    const bool in_k = chunk + wc < weight_chunks;
#pragma unroll
    for (int i = 0; i < kWeightCopies; ++i) {
      const bool ok = wok[i] && in_k;
      CopyAsync16(dst + wdst[i], ok ? wsrc[i] + chunk : wsrc[i], ok ? 16 : 0);
    }
  };
  auto load_inputs = [&](int s, int kt) {
    const uint32_t dst = smem_base + static_cast<uint32_t>(s * Layout::kStageBytes + Layout::kWeightBytes);
    const int64_t offset = int64_t{kt} * kInputRowBytes;
    const bool in_k = int64_t{kt} * kInputChunksPerRow + ic < input_chunks;
#pragma unroll
    for (int i = 0; i < kInputCopies; ++i) {
      const bool ok = xok[i] && in_k;
      if (xin[i]) CopyAsync16(dst + xdst[i], ok ? xsrc[i] + offset : xsrc[i], ok ? 16 : 0);
    }
  };

  // The weights do not depend on the previous kernel: their first tiles are requested before the
  // wait (launch.cuh); the inputs after it. Group s holds stage s's inputs (and group 0 every
  // weight tile issued before the wait).
  for (int s = 0; s < kStages - 1; ++s)
    if (kt_begin + s < kt_end) load_weights(s, kt_begin + s);
  WaitForPredecessor();
  LetDependentsLaunch();
  for (int s = 0; s < kStages - 1; ++s) {
    if (kt_begin + s < kt_end) load_inputs(s, kt_begin + s);
    CommitAsync();
  }

  float acc[WF][WT][4] = {};
  // Tile kt lives in stage (kt - kt_begin) % kStages. The loop is unrolled by the stages so that each
  // copy of its body knows its stage at compile time: its shared-memory addresses are then a base
  // and constants, not worked out per tile.
  auto tile = [&](const int stage, const int kt) {
    WaitAsync<kStages - 2>();  // this tile's group has landed (for this thread) ...
    __syncthreads();           // ... and for every thread; the stage refilled below is free
    if (stamp != nullptr && kt == kt_begin) stamp[1] = GlobalTimerNs();
    const int next = kt + kStages - 1;
    if (next < kt_end) {
      load_weights((stage + kStages - 1) % kStages, next);
      load_inputs((stage + kStages - 1) % kStages, next);
    }
    CommitAsync();
    if constexpr (kFp8Inputs)
      MmaStagedTileFp8Inputs<WF, WT>(acc, weight_stage(stage), input_stage(stage), wf0, wt0, g, t);
    else
      MmaStagedTile<Rows, WF, WT>(acc, weight_stage(stage), input_stage(stage), wf0, wt0, g, t);
  };
  for (int kt0 = kt_begin; kt0 < kt_end; kt0 += kStages) {
#pragma unroll
    for (int stage = 0; stage < kStages; ++stage)
      if (kt0 + stage < kt_end) tile(stage, kt0 + stage);
  }
  WaitAsync<0>();
  __syncthreads();  // every warp is done with the pipeline's shared memory
  if (stamp != nullptr) stamp[2] = GlobalTimerNs();

  // Partial sums to shared memory (the pipeline's, now free) as red[token][feature].
  float* red = reinterpret_cast<float*>(smem);
  constexpr int kRedStride = BF + kRedPad;
  SumsToShared<WF, WT, kRedStride>(acc, red, wf0, wt0, g, t);
  cg::cluster_group cluster = cg::this_cluster();
  if (ck > 1) {  // every block's partial sums are visible to the cluster (a release and an acquire)
    __cluster_barrier_arrive();
    __cluster_barrier_wait();
  } else {
    __syncthreads();
  }
  if (stamp != nullptr) stamp[3] = GlobalTimerNs();

  // Block `rank` writes tokens [lo, hi) of the tile: the partial sums of ranks 0 .. ck - 1 added in
  // that order, scaled, the residual added, stored with consecutive threads on consecutive features.
  // kBatch outputs a thread at a time, every rank's partial sums and the scales of the batch
  // requested before any is used: one output at a time, each its own round trips to other SMs'
  // shared memory, this stage took 1.0-5.2 us a block (H100 trace, 2026-12-06). kBatch x
  // kRanksAtOnce loads in flight a thread: more raised the one-byte 17-32-row instances above 64
  // registers (ptxas, CUDA 13.0), and four of their blocks an SM need 64 or fewer.
  const int valid = min(BT, M - t0);
  const int lo = rank * valid / ck, hi = (rank + 1) * valid / ck, e_end = hi * BF;
  constexpr int kBatch = 4, kRanksAtOnce = 2;
  for (int e0 = lo * BF + static_cast<int>(threadIdx.x); e0 < e_end; e0 += kBatch * kThreads) {
    int at[kBatch];
    bool ok[kBatch];
    float v[kBatch], scale[kBatch], token_scale[kBatch];
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const int e = e0 + j * kThreads, m = e / BF, n = e % BF;
      ok[j] = e < e_end && n0 + n < N;
      at[j] = m * kRedStride + n;
      v[j] = 0.f;
      scale[j] = ok[j] ? rows.Scale(n0 + n) : 0.f;
      token_scale[j] = kFp8Inputs && ok[j] ? __ldg(x_scale + t0 + m) : 1.f;
    }
    for (int q0 = 0; q0 < ck; q0 += kRanksAtOnce) {
      float part[kRanksAtOnce][kBatch];
#pragma unroll
      for (int q = 0; q < kRanksAtOnce; ++q)
#pragma unroll
        for (int j = 0; j < kBatch; ++j)
          part[q][j] = ok[j] && q0 + q < ck ? (ck > 1 ? cluster.map_shared_rank(red, q0 + q) : red)[at[j]] : 0.f;
#pragma unroll
      for (int q = 0; q < kRanksAtOnce; ++q)
#pragma unroll
        for (int j = 0; j < kBatch; ++j)
          if (q0 + q < ck) v[j] += part[q][j];
    }
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      if (!ok[j]) continue;
      const int e = e0 + j * kThreads, m = e / BF, n = e % BF;
      if constexpr (kFp8Inputs) v[j] *= token_scale[j];
      small_m::Store(y, y_bf16, (t0 + m) * y_stride + n0 + n, small_m::Scaled<Rows>(v[j], scale[j]), beta);
    }
  }
  if (stamp != nullptr) stamp[4] = GlobalTimerNs();  // thread 0's outputs written (its warp-mates' alike)
  // No block leaves while another reads its shared memory. Nothing to publish: a relaxed arrive,
  // without the release's GPU-wide fence (MEMBAR.ALL.GPU in the SASS of cluster.sync(); Nsight
  // Compute counted about a cycle of "membar" stall per instruction issued, 2026-12-06).
  if (ck > 1) {
    __cluster_barrier_arrive_relaxed();
    __cluster_barrier_wait();
  }
}

// The SM count and how many blocks of kKernel an SM holds with kSmem bytes of dynamic shared memory
// on the current device, its limit raised to kSmem there first. Worked out once per kernel and
// device: the engine's eager steps launch these kernels per projection, and the queries (an
// attribute set, an occupancy calculation) cost more host time than the launch.
template <auto kKernel, int kSmem>
cudaError_t KernelOnDevice(int* sms, int* resident) {
  constexpr int kDevices = 64;
  static std::atomic<int> known_sms[kDevices], known_resident[kDevices];  // 0: not yet known
  int device = 0;
  if (const cudaError_t e = cudaGetDevice(&device); e != cudaSuccess) return e;
  const bool cached = device >= 0 && device < kDevices;
  if (cached && known_resident[device].load(std::memory_order_acquire) > 0) {
    *sms = known_sms[device].load(std::memory_order_relaxed);
    *resident = known_resident[device].load(std::memory_order_relaxed);
    return cudaSuccess;
  }
  if (const cudaError_t e = cudaDeviceGetAttribute(sms, cudaDevAttrMultiProcessorCount, device); e != cudaSuccess)
    return e;
  // Above the default 48 KiB of dynamic shared memory (a per-device setting).
  if (const cudaError_t e = cudaFuncSetAttribute(kKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
      e != cudaSuccess)
    return e;
  if (const cudaError_t e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(resident, kKernel, kThreads, kSmem);
      e != cudaSuccess)
    return e;
  if (cached && *resident > 0) {  // two threads racing here store the same values
    known_sms[device].store(*sms, std::memory_order_relaxed);
    known_resident[device].store(*resident, std::memory_order_release);
  }
  return cudaSuccess;
}

// How many clusters of ck blocks of kKernel (kSmem bytes of dynamic shared memory each; KernelOnDevice
// has raised its limit) the current device holds at once, 2 <= ck <= kMaxCluster. A cluster's blocks
// share a GPC, and the GPCs' SM counts differ, so this is less than resident blocks / ck: splitting
// to that quotient launched a second wave at some shapes (H100 trace, 2026-12-06: 1.3B gate+up at
// 17 rows, clusters of 6 and 3, blocks starting 15-22 us into a 17-26 us launch). Worked out once
// per kernel, device and ck.
template <auto kKernel, int kSmem>
cudaError_t ClustersThatFit(int ck, int* clusters) {
  constexpr int kDevices = 64;
  // The count plus one: 0 is "not yet known", so that a device holding no cluster of ck is not
  // asked again on every launch.
  static std::atomic<int> known[kDevices][kMaxCluster + 1];
  int device = 0;
  if (const cudaError_t e = cudaGetDevice(&device); e != cudaSuccess) return e;
  const bool cached = device >= 0 && device < kDevices;
  if (const int k = cached ? known[device][ck].load(std::memory_order_relaxed) : 0; k > 0) {
    *clusters = k - 1;
    return cudaSuccess;
  }
  cudaLaunchAttribute attr;
  attr.id = cudaLaunchAttributeClusterDimension;
  attr.val.clusterDim.x = static_cast<unsigned>(ck);
  attr.val.clusterDim.y = 1;
  attr.val.clusterDim.z = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(static_cast<unsigned>(ck));
  config.blockDim = dim3(kThreads);
  config.dynamicSmemBytes = kSmem;
  config.attrs = &attr;
  config.numAttrs = 1;
  if (const cudaError_t e = cudaOccupancyMaxActiveClusters(clusters, kKernel, &config); e != cudaSuccess) return e;
  if (cached && *clusters >= 0) known[device][ck].store(*clusters + 1, std::memory_order_relaxed);
  return cudaSuccess;
}

// x: bf16 rows (x_scale null) or, with kFp8Inputs, FP8 ones; x_stride_bytes their stride in bytes.
template <class Rows, int WF, int WT, int WARPS_F, bool kFp8Inputs = false>
cudaError_t LaunchMediumM(const uint8_t* x, int64_t x_stride_bytes, const float* x_scale, const Rows& rows, int64_t N,
                          int64_t K, void* y, bool y_bf16, int64_t y_stride, int M, float beta,
                          const MediumMTuning& tuning, cudaStream_t stream) {
  const int max_split = tuning.max_split;
  constexpr int BT = 8 * WT * (8 / WARPS_F), BF = 16 * WF * WARPS_F;
  constexpr int smem = SmemLayout<Rows, BT, BF, kFp8Inputs ? 1 : 2>::kBytes;
  constexpr auto kernel = MediumMKernel<Rows, WF, WT, WARPS_F, kFp8Inputs>;
  int sms = 0, resident = 0;
  if (const cudaError_t e = KernelOnDevice<kernel, smem>(&sms, &resident); e != cudaSuccess) return e;
  const int64_t feature_tiles = (N + BF - 1) / BF, token_tiles = (M + BT - 1) / BT;
  const int k_tiles = static_cast<int>((K + kBK - 1) / kBK);
  // Split K as far as the blocks still fit the GPU in one wave (the first run split to twice the
  // SMs whatever fitted: two or three waves of short blocks, each paying the pipeline's fill and the
  // cluster's reduction), at most a portable cluster, and by default no further than kStages tiles
  // of K a block: shares of two tiles (gla-340M's K = 1024 split 8 ways) never fill the pipeline and
  // pay an 8-way reduction for it (H100, 2026-12-06 15:46, forms table: 340M in-proj at 17 rows
  // 5.00 us split 8 ways against 4.31 split 4, gate+up 6.54 against 5.27); then down to a split
  // whose clusters the GPU holds at once (ClustersThatFit). max_split > 0 caps it alone.
  const int64_t tiles = feature_tiles * token_tiles, slots = int64_t{sms} * std::max(1, resident);
  int ck = static_cast<int>(
      std::min<int64_t>(slots / tiles, max_split > 0 ? max_split : std::min(kMaxCluster, k_tiles / kStages)));
  ck = std::max(1, std::min(ck, k_tiles));
  for (; ck > 1; --ck) {
    int clusters = 0;
    if (const cudaError_t e = ClustersThatFit<kernel, smem>(ck, &clusters); e != cudaSuccess) return e;
    if (clusters >= tiles) break;
  }
  // A traced launch writes kMediumMTraceFields values a block: refused unlaunched where the buffer
  // has no room for every block.
  if (tuning.trace != nullptr && int64_t{ck} * tiles > tuning.trace_blocks) return cudaErrorInvalidValue;
  return LaunchDependentClusters(kernel,
                                 dim3(static_cast<unsigned>(ck), static_cast<unsigned>(feature_tiles),
                                      static_cast<unsigned>(token_tiles)),
                                 dim3(kThreads), smem, ck, stream, x, x_stride_bytes, x_scale, rows, N, K, M, y, y_bf16,
                                 y_stride, beta, tuning.trace);
}

template <class Rows>
cudaError_t MediumM(const __nv_bfloat16* x, int64_t x_stride, const Rows& rows, int64_t N, int64_t K, void* y,
                    bool y_bf16, int64_t y_stride, int64_t M, float beta, const MediumMTuning& tuning,
                    cudaStream_t stream) {
  if (M < 1 || M > kMediumMMaxRows || x == nullptr || !rows.Present() || !rows.Supported(x, x_stride, N, K) ||
      y == nullptr || y_stride < N || (N + 63) / 64 > 65535 || tuning.max_split < 0 || tuning.max_split > kMaxCluster)
    return cudaErrorInvalidValue;
  const int m = static_cast<int>(M);
  // Tokens per block by M: 32 (8 x 1 warps, a warp 16 features x 32 tokens; narrow: 4 x 2 warps of 16
  // x 16, 64 features a block), 64 (4 x 2 warps, 32 x 32) or 128 (4 x 2, 32 x 64; above 128 rows,
  // blocks of 128 tokens side by side).
  // The split form reads x as bytes (its FP8-input instances share it).
  const auto* xb = reinterpret_cast<const uint8_t*>(x);
  const int64_t xs = x_stride * 2;
  if (m <= 32 && tuning.narrow_features)
    return LaunchMediumM<Rows, 1, 2, 4>(xb, xs, nullptr, rows, N, K, y, y_bf16, y_stride, m, beta, tuning, stream);
  if (m <= 32)
    return LaunchMediumM<Rows, 1, 4, 8>(xb, xs, nullptr, rows, N, K, y, y_bf16, y_stride, m, beta, tuning, stream);
  if (m <= 64)
    return LaunchMediumM<Rows, 2, 4, 4>(xb, xs, nullptr, rows, N, K, y, y_bf16, y_stride, m, beta, tuning, stream);
  return LaunchMediumM<Rows, 2, 8, 4>(xb, xs, nullptr, rows, N, K, y, y_bf16, y_stride, m, beta, tuning, stream);
}

}  // namespace

cudaError_t LinearMediumM(const __nv_bfloat16* x, int64_t x_stride, const __nv_bfloat16* w, int64_t N, int64_t K,
                          void* y, bool y_bf16, int64_t y_stride, int64_t M, float beta, cudaStream_t stream,
                          const MediumMTuning& tuning) {
  return MediumM(x, x_stride, small_m::Bf16Rows{w}, N, K, y, y_bf16, y_stride, M, beta, tuning, stream);
}

cudaError_t LinearMediumMFp8(const __nv_bfloat16* x, int64_t x_stride, const Fp8Weight& w, int64_t N, int64_t K,
                             void* y, bool y_bf16, int64_t y_stride, int64_t M, float beta, cudaStream_t stream,
                             const MediumMTuning& tuning) {
  return MediumM(x, x_stride, small_m::Fp8Rows{w}, N, K, y, y_bf16, y_stride, M, beta, tuning, stream);
}

cudaError_t LinearMediumMInt8(const __nv_bfloat16* x, int64_t x_stride, const Int8Weight& w, int64_t N, int64_t K,
                              void* y, bool y_bf16, int64_t y_stride, int64_t M, float beta, cudaStream_t stream,
                              const MediumMTuning& tuning) {
  return MediumM(x, x_stride, small_m::Int8Rows{w}, N, K, y, y_bf16, y_stride, M, beta, tuning, stream);
}

cudaError_t LinearMediumMFp8Inputs(const Fp8Input& x, const Fp8Weight& w, int64_t N, int64_t K, void* y, bool y_bf16,
                                   int64_t y_stride, int64_t M, float beta, cudaStream_t stream,
                                   const MediumMTuning& tuning) {
  const small_m::Fp8Rows rows{w};
  const bool aligned = reinterpret_cast<uintptr_t>(x.q) % 16 == 0 && reinterpret_cast<uintptr_t>(w.q) % 16 == 0;
  if (M < 1 || M > kMediumMMaxRows || x.q == nullptr || x.scale == nullptr || !rows.Present() || !aligned || N < 1 ||
      K < 16 || K % 16 != 0 || x.stride < K || x.stride % 16 != 0 || y == nullptr || y_stride < N ||
      (N + 63) / 64 > 65535 || tuning.max_split < 0 || tuning.max_split > kMaxCluster || tuning.narrow_features)
    return cudaErrorInvalidValue;
  const int m = static_cast<int>(M);
  if (m <= 32)
    return LaunchMediumM<small_m::Fp8Rows, 1, 4, 8, true>(x.q, x.stride, x.scale, rows, N, K, y, y_bf16, y_stride, m,
                                                          beta, tuning, stream);
  if (m <= 64)
    return LaunchMediumM<small_m::Fp8Rows, 2, 4, 4, true>(x.q, x.stride, x.scale, rows, N, K, y, y_bf16, y_stride, m,
                                                          beta, tuning, stream);
  return LaunchMediumM<small_m::Fp8Rows, 2, 8, 4, true>(x.q, x.stride, x.scale, rows, N, K, y, y_bf16, y_stride, m,
                                                        beta, tuning, stream);
}

}  // namespace gla::cuda
