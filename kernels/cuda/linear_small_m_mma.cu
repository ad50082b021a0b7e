// Decode-sized projections on tensor cores: y[M, N] = x[M, K] W[N, K]^T (+ beta y) for M <= 16 with
// bf16 weights, M <= 256 with FP8 / INT8 ones (widened to bf16 in registers: MmaChunk's overloads;
// above 32 rows in row blocks of 32 that share each feature tile's weights through L2).
// Memory-bound (each weight is read once, the M input rows come from L1/L2), so the aim is the
// weight stream at full bandwidth with little work per byte. The CUDA-core kernel
// (linear_small_m.cu) spends M FMAs and M input loads per weight pair, which makes it compute- and
// L1-bound from M ~ 4 (issue 19: a decode step at batch 8 was slower than at batch 32). Here one
// mma.sync m16n8k16 covers 16 weight rows x 8 input rows x 16 k, so the work per weight byte does
// not grow with M up to 8 and doubles only at 16.
//
// Tiling: a block owns 16 consecutive output features (the mma's 16 "rows" are weight rows) and
// the whole K; its 8 warps split K into 32-wide slices (warp w: slices w, w + 8, ...), 4 slices
// per step and two steps in flight per warp (the next step's weights load while this one's mmas
// run), and reduce their partial sums through shared memory in a fixed order
// (deterministic). Lane (g = lane / 4, t = lane % 4) loads 16 bytes of weight rows g and g + 8 and
// of input rows g (and g + 8) at k = slice + 8t: the mma's k order is a permutation of the real
// one, the same for both operands, which a dot product does not see. The first weight loads are
// issued before the wait on the previous kernel (programmatic dependent launch): weights do not
// depend on it.
//
// (A form with K split over thread-block clusters of 2 or 4 blocks a feature tile, for projections
// whose few feature tiles leave SMs idle, was tried and removed: level with this one at gla-1.3B, a
// decode step 19% slower at gla-340M at batch 2 and 8; H100, 2026-12-07, docs/performance.md.)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/bf16_dot.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/linear_small_m_common.cuh"
#include "kernels/cuda/mma_sync.cuh"
#include "kernels/linear.h"

namespace gla::cuda {

namespace {

constexpr int kWarps = 8, kRows = 16, kInFlight = 4;

// Chunk c of weight rows g (wl) and g + 8 (wh) against the input rows g + 8 j (j < NT) into acc.
// bf16: 8 weights a chunk, against chunk c of each input row, two mmas. FP8 and INT8: 16 weights a
// chunk, widened to two bf16 chunks that meet the input's chunks 2c and 2c + 1 in four mmas (the
// same k permutation for both operands, as the file's comment says).
template <int NT>
__device__ __forceinline__ void MmaChunk(const small_m::Bf16Rows&, float (&acc)[NT][4], const uint4& wl,
                                         const uint4& wh, const __nv_bfloat16* __restrict__ x, int64_t x_stride,
                                         int M, int g, int64_t c, int64_t chunks) {
  const uint4 zero = make_uint4(0, 0, 0, 0);
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    const int row = g + 8 * j;
    const uint4 xv = row < M && c < chunks ? __ldg(reinterpret_cast<const uint4*>(x + row * x_stride) + c) : zero;
    MmaBf16(acc[j], wl.x, wh.x, wl.y, wh.y, xv.x, xv.y);
    MmaBf16(acc[j], wl.z, wh.z, wl.w, wh.w, xv.z, xv.w);
  }
}

template <int NT, uint32_t (*Widen)(uint32_t)>
__device__ __forceinline__ void MmaByteChunk(float (&acc)[NT][4], const uint4& wl, const uint4& wh,
                                             const __nv_bfloat16* __restrict__ x, int64_t x_stride, int M, int g,
                                             int64_t c, int64_t chunks) {
  const uint4 zero = make_uint4(0, 0, 0, 0);
  uint4 l0, l1, h0, h1;  // rows g and g + 8, weights 0-7 and 8-15 of the chunk, as bf16
  ByteChunkToBf16<Widen>(wl, l0, l1);
  ByteChunkToBf16<Widen>(wh, h0, h1);
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    const int row = g + 8 * j;
    const bool ok = row < M && c < chunks;
    const uint4* xr = reinterpret_cast<const uint4*>(x + row * x_stride) + 2 * c;
    const uint4 x0 = ok ? __ldg(xr) : zero, x1 = ok ? __ldg(xr + 1) : zero;
    MmaBf16(acc[j], l0.x, h0.x, l0.y, h0.y, x0.x, x0.y);
    MmaBf16(acc[j], l0.z, h0.z, l0.w, h0.w, x0.z, x0.w);
    MmaBf16(acc[j], l1.x, h1.x, l1.y, h1.y, x1.x, x1.y);
    MmaBf16(acc[j], l1.z, h1.z, l1.w, h1.w, x1.z, x1.w);
  }
}

template <int NT>
__device__ __forceinline__ void MmaChunk(const small_m::Fp8Rows&, float (&acc)[NT][4], const uint4& wl,
                                         const uint4& wh, const __nv_bfloat16* __restrict__ x, int64_t x_stride,
                                         int M, int g, int64_t c, int64_t chunks) {
  MmaByteChunk<NT, BytePairToBf16x2<Fp8x2ToFloat2>>(acc, wl, wh, x, x_stride, M, g, c, chunks);
}

template <int NT>
__device__ __forceinline__ void MmaChunk(const small_m::Int8Rows&, float (&acc)[NT][4], const uint4& wl,
                                         const uint4& wh, const __nv_bfloat16* __restrict__ x, int64_t x_stride,
                                         int M, int g, int64_t c, int64_t chunks) {
  MmaByteChunk<NT, BytePairToBf16x2<Int8x2ToFloat2>>(acc, wl, wh, x, x_stride, M, g, c, chunks);
}

// NT: 8-row tiles of the input (1: M <= 8, 2: M <= 16, up to 4: M <= 32 with one-byte rows). Rows: bf16 or FP8 weight rows
// (linear_small_m_common.cuh); a slice is 4 chunks (32 bf16 or 64 FP8 weights of a row).
// row_blocks > 1 (one-byte rows, M > 32): the step's rows in blocks of 8 NT, the row block fastest
// in blockIdx.x, so a feature tile's row blocks run side by side and its weights come from HBM once
// and from L2 for the others (loads cached in L2, __ldcg; a lone row block streams them,
// evict-first). That form takes 251 registers a thread (134 without): one block per SM either way.
// kSharedWeights: launched with row_blocks > 1 (a compile-time choice: a select between the two
// loads would issue both).
// The minimum blocks an SM is left unspecified: a minimum of 1 gave these kernels 20-100 more
// registers a thread.
template <int NT, class Rows, bool kSharedWeights = false>
__global__ void __launch_bounds__(kWarps * 32)
    SmallMMmaKernel(const __nv_bfloat16* __restrict__ x, int64_t x_stride, const Rows rows, int64_t N, int64_t K, int M,
                    void* y, bool y_bf16, int64_t y_stride, float beta, int row_blocks) {
  __shared__ float partial[kWarps][kRows][8 * NT];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
  int row0 = 0;
  int64_t n0 = static_cast<int64_t>(blockIdx.x) * kRows;
  if constexpr (kSharedWeights) {
    row0 = static_cast<int>(blockIdx.x % static_cast<unsigned>(row_blocks)) * 8 * NT;
    n0 = static_cast<int64_t>(blockIdx.x / static_cast<unsigned>(row_blocks)) * kRows;
    x += static_cast<int64_t>(row0) * x_stride;
    M = min(M - row0, 8 * NT);
  }
  const bool lo_ok = n0 + g < N, hi_ok = n0 + g + 8 < N;
  const uint4* w_lo = rows.Row(lo_ok ? n0 + g : 0, K);
  const uint4* w_hi = rows.Row(hi_ok ? n0 + g + 8 : 0, K);
  constexpr int kSliceK = 4 * Rows::kWeightsPerChunk;  // weights of a row in one slice
  const int64_t chunks = K / Rows::kWeightsPerChunk;  // 16-byte chunks per row; slice s, lane t reads chunk 4 s + t
  const int64_t slices = (K + kSliceK - 1) / kSliceK;
  const uint4 zero = make_uint4(0, 0, 0, 0);

  // Two register stages: the next slices' weights are in flight while the mmas of these run.
  uint4 wl[2][kInFlight], wh[2][kInFlight];
  auto load_weights = [&](int stage, int64_t first) {
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      const int64_t c = 4 * (first + int64_t{u} * kWarps) + t;
      // Streamed once: not kept in L2, unless other row blocks read the same rows.
      if constexpr (kSharedWeights) {
        wl[stage][u] = lo_ok && c < chunks ? __ldcg(w_lo + c) : zero;
        wh[stage][u] = hi_ok && c < chunks ? __ldcg(w_hi + c) : zero;
      } else {
        wl[stage][u] = lo_ok && c < chunks ? __ldcs(w_lo + c) : zero;
        wh[stage][u] = hi_ok && c < chunks ? __ldcs(w_hi + c) : zero;
      }
    }
  };
  float acc[NT][4] = {};
  auto multiply = [&](int stage, int64_t first) {
#pragma unroll
    for (int u = 0; u < kInFlight; ++u)
      MmaChunk<NT>(rows, acc, wl[stage][u], wh[stage][u], x, x_stride, M, g, 4 * (first + int64_t{u} * kWarps) + t,
                   chunks);
  };
  constexpr int64_t kStep = int64_t{kInFlight} * kWarps;
  int64_t first = warp;
  load_weights(0, first);
  WaitForPredecessor();  // x (and y, with beta) come from the previous kernel; the weights do not
  LetDependentsLaunch();
  // Stages alternate with the loop unrolled twice (register arrays need compile-time indices).
  while (first < slices) {
    if (first + kStep < slices) load_weights(1, first + kStep);
    multiply(0, first);
    first += kStep;
    if (first >= slices) break;
    if (first + kStep < slices) load_weights(0, first + kStep);
    multiply(1, first);
    first += kStep;
  }
  // acc[j]: (weight row g, input row 8j + 2t), (g, 8j + 2t + 1), (g + 8, 8j + 2t), (g + 8, 8j + 2t + 1).
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    partial[warp][g][8 * j + 2 * t] = acc[j][0];
    partial[warp][g][8 * j + 2 * t + 1] = acc[j][1];
    partial[warp][g + 8][8 * j + 2 * t] = acc[j][2];
    partial[warp][g + 8][8 * j + 2 * t + 1] = acc[j][3];
  }
  __syncthreads();
  // Thread i sums output (input row m = i / 16, feature n0 + i % 16) over the warps in order:
  // consecutive threads write consecutive features; FP8 sums are then scaled by their row's scale.
  for (int i = threadIdx.x; i < kRows * 8 * NT; i += kWarps * 32) {
    const int m = i / kRows, r = i % kRows;
    if (m >= M || n0 + r >= N) continue;
    float v = 0.f;
#pragma unroll
    for (int k = 0; k < kWarps; ++k) v += partial[k][r][m];
    small_m::Store(y, y_bf16, static_cast<int64_t>(row0 + m) * y_stride + n0 + r,
                   small_m::Scaled<Rows>(v, rows.Scale(n0 + r)), beta);
  }
}

// The one launch site of both weight types.
template <class Rows>
cudaError_t Launch(const __nv_bfloat16* x, int64_t x_stride, const Rows& rows, int64_t N, int64_t K, void* y,
                   bool y_bf16, int64_t y_stride, int64_t M, float beta, cudaStream_t stream) {
  const int64_t tiles = (N + kRows - 1) / kRows;
  const int m = static_cast<int>(M);
  auto launch = [&](auto kernel, int row_blocks) {
    return LaunchDependent(kernel, static_cast<unsigned>(tiles * row_blocks), kWarps * 32, stream, x, x_stride, rows, N,
                           K, m, y, y_bf16, y_stride, beta, row_blocks);
  };
  if (M <= 8) return launch(SmallMMmaKernel<1, Rows>, 1);
  if (M <= 16) return launch(SmallMMmaKernel<2, Rows>, 1);
  if constexpr (Rows::kScaled) {  // one-byte rows: up to kSmallMByteTensorCores, 32 rows a block
    if (M <= 24) return launch(SmallMMmaKernel<3, Rows>, 1);
    if (M <= 32) return launch(SmallMMmaKernel<4, Rows>, 1);
    return launch(SmallMMmaKernel<4, Rows, true>, static_cast<int>((M + 31) / 32));
  }
  return cudaErrorInvalidValue;  // not reached: CheckedLaunch refused it
}

// The most rows a kernel takes: bf16 rows up to kSmallMTensorCores (cuBLAS is faster above), one-byte
// rows up to kSmallMByteTensorCores (kernels/linear.h: where it pays is the engine's choice).
template <class Rows>
constexpr int64_t MaxRows() {
  return Rows::kScaled ? kSmallMByteTensorCores : kSmallMTensorCores;
}

// The entry points' checks (nothing launched when they fail), then the launch.
template <class Rows>
cudaError_t CheckedLaunch(const __nv_bfloat16* x, int64_t x_stride, const Rows& rows, int64_t N, int64_t K, void* y,
                          bool y_bf16, int64_t y_stride, int64_t M, float beta, cudaStream_t stream) {
  if (M == 0) return cudaSuccess;
  if (M < 0 || M > MaxRows<Rows>() || !rows.Supported(x, x_stride, N, K) ||
      (N + kRows - 1) / kRows * ((M + 31) / 32) > 0x7fffffff)
    return cudaErrorInvalidValue;
  return Launch(x, x_stride, rows, N, K, y, y_bf16, y_stride, M, beta, stream);
}

}  // namespace

cudaError_t LinearSmallMFp8TensorCores(const __nv_bfloat16* x, int64_t x_stride, const Fp8Weight& w, int64_t N,
                                       int64_t K, void* y, bool y_bf16, int64_t y_stride, int64_t M, float beta,
                                       cudaStream_t stream) {
  return CheckedLaunch(x, x_stride, small_m::Fp8Rows{w}, N, K, y, y_bf16, y_stride, M, beta, stream);
}

cudaError_t LinearSmallMInt8TensorCores(const __nv_bfloat16* x, int64_t x_stride, const Int8Weight& w, int64_t N,
                                        int64_t K, void* y, bool y_bf16, int64_t y_stride, int64_t M, float beta,
                                        cudaStream_t stream) {
  return CheckedLaunch(x, x_stride, small_m::Int8Rows{w}, N, K, y, y_bf16, y_stride, M, beta, stream);
}

cudaError_t LinearSmallMTensorCores(const __nv_bfloat16* x, int64_t x_stride, const __nv_bfloat16* w, int64_t N,
                                    int64_t K, void* y, bool y_bf16, int64_t y_stride, int64_t M, float beta,
                                    cudaStream_t stream) {
  return CheckedLaunch(x, x_stride, small_m::Bf16Rows{w}, N, K, y, y_bf16, y_stride, M, beta, stream);
}

}  // namespace gla::cuda
