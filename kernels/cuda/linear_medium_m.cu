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
// Measured (H100, 2026-12-06, linear_medium_m_bench; docs/quantization.md "The medium-M kernel"):
// correct, but the weights stream at 17-53% of the copy rate (bf16 rows) and 9-33% (one-byte) at
// 17-32 rows and less above, and the time grows with M at a fixed weight size, so the main loop
// bounds it, not the stream. It beats INT8's dequantize-then-GEMM to 32 rows (the engine uses it
// there) and loses to cuBLAS and the FP8 GEMM elsewhere. Suspects, unprofiled: 64-128 bytes of each
// weight row per tile (128 rows a tile, every row another DRAM page), one block an SM at 128
// tokens, a block-wide barrier per 64-k tile.
#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/cuda/bf16_dot.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/linear_small_m_common.cuh"
#include "kernels/cuda/mma_bf16.cuh"
#include "kernels/linear.h"

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

template <class Rows, int BT, int BF>
struct SmemLayout {
  static constexpr int kWeightBytes = BF * WeightTile<Rows>::kRowBytes;
  static constexpr int kInputBytes = BT * kBK * 2;
  static constexpr int kStageBytes = kWeightBytes + kInputBytes;
  static constexpr int kPipelineBytes = kStages * kStageBytes;
  static constexpr int kRedBytes = BT * (BF + kRedPad) * 4;
  static constexpr int kBytes = kPipelineBytes > kRedBytes ? kPipelineBytes : kRedBytes;
};

// WF feature tiles (16 each) and WT token tiles (8 each) a warp; WARPS_F x (8 / WARPS_F) warps.
// Grid: (CK, feature tiles, token tiles); cluster (CK, 1, 1) when CK > 1.
template <class Rows, int WF, int WT, int WARPS_F>
__global__ void __launch_bounds__(kThreads) MediumMKernel(const __nv_bfloat16* __restrict__ x, int64_t x_stride,
                                                          const Rows rows, int64_t N, int64_t K, int M, void* y,
                                                          bool y_bf16, int64_t y_stride, float beta,
                                                          uint64_t* __restrict__ trace) {
  // MediumMTuning::trace: thread 0 of each block stamps the GPU clock at its start, when its first
  // tile has landed, at the end of its K loop, when the cluster's partial sums are visible, and when
  // its outputs are written, with its SM (kMediumMTraceFields values a block, by linear block id).
  uint64_t* stamp = nullptr;
  if (trace != nullptr && threadIdx.x == 0) {
    stamp = trace + kMediumMTraceFields * (blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z));
    stamp[0] = GlobalTimerNs();
    unsigned sm;
    asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
    stamp[5] = sm;
  }
  constexpr int WARPS_T = 8 / WARPS_F, BT = 8 * WT * WARPS_T, BF = 16 * WF * WARPS_F;
  using Layout = SmemLayout<Rows, BT, BF>;
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
  const int64_t weight_chunks = K / kWeightsPerChunk, input_chunks = K / 8;

  // Each thread's copies of a stage, fixed for the whole K loop: kWeightCopies weight chunks (rows
  // wrow0 + i kWeightRowStep, chunk wc of the tile) and kInputCopies input chunks (rows irow0 + 32 i,
  // chunk ic), their sources at the first tile and their places in a stage. Computed once here: the
  // first form worked them out per tile (division, 64-bit products, the row checks), about 400
  // instructions a tile per warp around 16 mmas, and the loop was bound by their latency (H100
  // Nsight Compute, 2026-12-06: 5.0M instructions against cuBLAS's 0.9M at the same GEMM).
  constexpr int kWeightCopies = BF * kWeightChunksPerRow / kThreads, kWeightRowStep = kThreads / kWeightChunksPerRow;
  constexpr int kInputCopies = BT * 8 / kThreads, kInputRowStep = kThreads / 8;
  static_assert(kWeightCopies * kThreads == BF * kWeightChunksPerRow &&
                    kWeightRowStep * kWeightChunksPerRow == kThreads,
                "a stage's weight chunks divide evenly over the threads");
  static_assert(kInputCopies * kThreads == BT * 8, "a stage's input chunks divide evenly over the threads");
  const int tid = static_cast<int>(threadIdx.x);
  const int wc = tid % kWeightChunksPerRow, wrow0 = tid / kWeightChunksPerRow, ic = tid % 8, irow0 = tid / 8;
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
  const __nv_bfloat16* xsrc[kInputCopies];
  uint32_t xdst[kInputCopies];
  bool xok[kInputCopies];
#pragma unroll
  for (int i = 0; i < kInputCopies; ++i) {
    const int row = irow0 + i * kInputRowStep;
    xok[i] = t0 + row < M;
    xsrc[i] = x + (xok[i] ? (t0 + row) * x_stride : 0) + ic * 8;
    xdst[i] = static_cast<uint32_t>(row * (kBK * 2) + (ic ^ (row & 1)) * 16);
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
    const int64_t k0 = int64_t{kt} * kBK;
    const bool in_k = k0 / 8 + ic < input_chunks;
#pragma unroll
    for (int i = 0; i < kInputCopies; ++i) {
      const bool ok = xok[i] && in_k;
      CopyAsync16(dst + xdst[i], ok ? xsrc[i] + k0 : xsrc[i], ok ? 16 : 0);
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
    const uint8_t* wtile = weight_stage(stage);
    const uint8_t* xtile = input_stage(stage);
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
        for (int r = 0; r < 2; ++r) {
          const int row = wf0 + 16 * f + g + 8 * r;
          a[f][r] = w[f][r].Half(wtile, row, t, h);
        }
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
  };
  for (int kt0 = kt_begin; kt0 < kt_end; kt0 += kStages) {
#pragma unroll
    for (int stage = 0; stage < kStages; ++stage)
      if (kt0 + stage < kt_end) tile(stage, kt0 + stage);
  }
  WaitAsync<0>();
  __syncthreads();  // every warp is done with the pipeline's shared memory
  if (stamp != nullptr) stamp[2] = GlobalTimerNs();

  // Partial sums to shared memory as red[token][feature]: acc[f][j] holds (feature g, token 2t),
  // (g, 2t + 1), (g + 8, 2t), (g + 8, 2t + 1) of its tile pair.
  float* red = reinterpret_cast<float*>(smem);
  constexpr int kRedStride = BF + kRedPad;
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
  const int valid = min(BT, M - t0);
  const int lo = rank * valid / ck, hi = (rank + 1) * valid / ck;
  for (int e = lo * BF + threadIdx.x; e < hi * BF; e += kThreads) {
    const int m = e / BF, n = e % BF;
    if (n0 + n >= N) continue;
    float v = 0.f;
    for (int q = 0; q < ck; ++q) {
      const float* part = ck > 1 ? cluster.map_shared_rank(red, q) : red;
      v += part[m * kRedStride + n];
    }
    small_m::Store(y, y_bf16, (t0 + m) * y_stride + n0 + n, small_m::Scaled<Rows>(v, rows.Scale(n0 + n)), beta);
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

template <class Rows, int WF, int WT, int WARPS_F>
cudaError_t LaunchMediumM(const __nv_bfloat16* x, int64_t x_stride, const Rows& rows, int64_t N, int64_t K, void* y,
                          bool y_bf16, int64_t y_stride, int M, float beta, int max_split, uint64_t* trace,
                          cudaStream_t stream) {
  constexpr int BT = 8 * WT * (8 / WARPS_F), BF = 16 * WF * WARPS_F;
  constexpr int smem = SmemLayout<Rows, BT, BF>::kBytes;
  auto kernel = MediumMKernel<Rows, WF, WT, WARPS_F>;
  int device = 0, sms = 0, resident = 0;
  if (const cudaError_t e = cudaGetDevice(&device); e != cudaSuccess) return e;
  if (const cudaError_t e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device); e != cudaSuccess)
    return e;
  // Above the default 48 KiB of dynamic shared memory (set on every launch: per device, and cheap).
  if (const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
      e != cudaSuccess)
    return e;
  if (const cudaError_t e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&resident, kernel, kThreads, smem);
      e != cudaSuccess)
    return e;
  const int64_t feature_tiles = (N + BF - 1) / BF, token_tiles = (M + BT - 1) / BT;
  const int k_tiles = static_cast<int>((K + kBK - 1) / kBK);
  // Split K as far as the blocks still fit the GPU in one wave (the first run split to twice the
  // SMs whatever fitted: two or three waves of short blocks, each paying the pipeline's fill and the
  // cluster's reduction), at most a portable cluster.
  const int64_t tiles = feature_tiles * token_tiles, slots = int64_t{sms} * std::max(1, resident);
  int ck = static_cast<int>(std::min<int64_t>(slots / tiles, max_split > 0 ? max_split : kMaxCluster));
  ck = std::max(1, std::min(ck, k_tiles));
  cudaLaunchAttribute attr[2];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  attr[1].id = cudaLaunchAttributeClusterDimension;
  attr[1].val.clusterDim.x = static_cast<unsigned>(ck);
  attr[1].val.clusterDim.y = 1;
  attr[1].val.clusterDim.z = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(static_cast<unsigned>(ck), static_cast<unsigned>(feature_tiles),
                        static_cast<unsigned>(token_tiles));
  config.blockDim = dim3(kThreads);
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  config.attrs = attr;
  config.numAttrs = ck > 1 ? 2 : 1;
  return cudaLaunchKernelEx(&config, kernel, x, x_stride, rows, N, K, M, y, y_bf16, y_stride, beta, trace);
}

template <class Rows>
cudaError_t MediumM(const __nv_bfloat16* x, int64_t x_stride, const Rows& rows, int64_t N, int64_t K, void* y,
                    bool y_bf16, int64_t y_stride, int64_t M, float beta, const MediumMTuning& tuning,
                    cudaStream_t stream) {
  if (M < 1 || M > kMediumMMaxRows || x == nullptr || !rows.Present() || !rows.Supported(x, x_stride, N, K) ||
      y == nullptr || y_stride < N || (N + 63) / 64 > 65535 || tuning.max_split < 0 || tuning.max_split > kMaxCluster)
    return cudaErrorInvalidValue;
  const int m = static_cast<int>(M), split = tuning.max_split;
  // Tokens per block by M: 32 (8 x 1 warps, a warp 16 features x 32 tokens; narrow: 4 x 2 warps of 16
  // x 16, 64 features a block), 64 (4 x 2 warps, 32 x 32) or 128 (4 x 2, 32 x 64; above 128 rows,
  // blocks of 128 tokens side by side).
  if (m <= 32 && tuning.narrow_features)
    return LaunchMediumM<Rows, 1, 2, 4>(x, x_stride, rows, N, K, y, y_bf16, y_stride, m, beta, split,
                                        tuning.trace, stream);
  if (m <= 32)
    return LaunchMediumM<Rows, 1, 4, 8>(x, x_stride, rows, N, K, y, y_bf16, y_stride, m, beta, split,
                                        tuning.trace, stream);
  if (m <= 64)
    return LaunchMediumM<Rows, 2, 4, 4>(x, x_stride, rows, N, K, y, y_bf16, y_stride, m, beta, split,
                                        tuning.trace, stream);
  return LaunchMediumM<Rows, 2, 8, 4>(x, x_stride, rows, N, K, y, y_bf16, y_stride, m, beta, split, tuning.trace,
                                      stream);
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

}  // namespace gla::cuda
