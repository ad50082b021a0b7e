// Dense projections through BLAS (OpenBLAS, multi-threaded). Framework-free.
#pragma once

#include <cstdint>

#if defined(GLA_HAVE_CUDA)
#include <cublas_v2.h>
#include <cuda_bf16.h>
#endif

namespace gla::cpu {

// y[M, N] = x[M, K] W[N, K]^T + beta * y      (W in PyTorch's [out, in] layout; row strides given)
// beta = 1 adds the product to y: that is how the residual adds are fused.
void Linear(const float* x, int64_t x_stride, const float* w, int64_t N, int64_t K, float* y, int64_t y_stride,
            int64_t M, float beta = 0.0f);

// Backward of Linear (y = x W^T):  dx[M, K] = dy[M, N] W[N, K] + dx_beta * dx   (dx may be null)
//                                  dW[N, K] += dy^T x                           (dw may be null)
void LinearBackward(const float* x, int64_t x_stride, const float* w, int64_t N, int64_t K, const float* dy,
                    int64_t dy_stride, float* dx, int64_t dx_stride, float dx_beta, float* dw, int64_t M);

// BLAS worker threads (0 keeps the library's default).
void SetLinearThreads(int threads);

}  // namespace gla::cpu

#if defined(GLA_HAVE_CUDA)
namespace gla::cuda {

// y[M, N] = x[M, K] W[N, K]^T + beta * y through cuBLAS: bf16 x and W, fp32 accumulation, y fp32
// (y_bf16 = false; beta = 1 fuses a residual add into an fp32 stream) or bf16. Runs on the
// handle's stream; graph-capturable once the handle has a workspace (cublasSetWorkspace).
cublasStatus_t LinearBf16(cublasHandle_t handle, const __nv_bfloat16* x, int64_t x_stride, const __nv_bfloat16* w,
                          int64_t N, int64_t K, void* y, bool y_bf16, int64_t y_stride, int64_t M, float beta = 0.0f);

}  // namespace gla::cuda
#endif

#if defined(GLA_HAVE_CUDA)
namespace gla::cuda {

// The decode-sized projection: y[M, N] = x[M, K] W[N, K]^T + beta * y for M <= kSmallM rows, a
// memory-bound matrix-vector product (each weight read once, 16-byte loads) that reaches more of
// the bandwidth than a GEMM tiled for large M. K % 8 == 0, rows 16-byte aligned;
// cudaErrorInvalidValue (no launch) otherwise. LinearSmallM takes the CUDA-core kernel for one row
// and the tensor-core kernel for 2 ... kSmallM; above kSmallM cuBLAS is faster at every gla-1.3B
// and gla-340M projection (H200, tests/cuda/linear_small_m_bench.cc, docs/performance.md).
constexpr int kSmallM = 8;
cudaError_t LinearSmallM(const __nv_bfloat16* x, int64_t x_stride, const __nv_bfloat16* w, int64_t N, int64_t K,
                         void* y, bool y_bf16, int64_t y_stride, int64_t M, float beta, cudaStream_t stream);
// CUDA cores, one warp per output feature, M FMAs per weight pair: for M <= kSmallMCudaCores.
constexpr int kSmallMCudaCores = 8;

// A weight [N, K] in FP8 E4M3 with one fp32 scale per output row, W[n, k] = scale[n] * q[n, k]
// (models/dtype.h's QuantizeFp8E4M3PerRow: what `--weights fp8` and FP8 checkpoints hold).
struct Fp8Weight {
  const uint8_t* q = nullptr;    // [N, K], rows 16-byte aligned
  const float* scale = nullptr;  // [N]
};
// The decode-sized projection with FP8 weights (issue 23): each weight byte read once (half of
// bf16's), widened in registers, each row's sum scaled once: y[m, n] = scale[n] sum_k q[n, k] x[m, k]
// (+ beta y). K % 16 == 0, x rows and q 16-byte aligned; otherwise cudaErrorInvalidValue (no
// launch). The CUDA-core form (M <= kSmallMCudaCores: FP8 widened to fp32) and the tensor-core one
// (M <= kSmallMByteTensorCores: FP8 widened exactly to bf16 fragments for mma.sync), and
// LinearSmallMFp8 taking the first for one row and the second from two (M <= kSmallM), as
// LinearSmallM does: the decode-sized projections of `--weights fp8` on the GPU.
cudaError_t LinearSmallMFp8CudaCores(const __nv_bfloat16* x, int64_t x_stride, const Fp8Weight& w, int64_t N,
                                     int64_t K, void* y, bool y_bf16, int64_t y_stride, int64_t M, float beta,
                                     cudaStream_t stream);
cudaError_t LinearSmallMFp8TensorCores(const __nv_bfloat16* x, int64_t x_stride, const Fp8Weight& w, int64_t N,
                                       int64_t K, void* y, bool y_bf16, int64_t y_stride, int64_t M, float beta,
                                       cudaStream_t stream);
cudaError_t LinearSmallMFp8(const __nv_bfloat16* x, int64_t x_stride, const Fp8Weight& w, int64_t N, int64_t K,
                            void* y, bool y_bf16, int64_t y_stride, int64_t M, float beta, cudaStream_t stream);

// A weight [N, K] in INT8 with one fp32 scale per output row, W[n, k] = scale[n] * q[n, k]
// (cpu::QuantizeInt8PerRow's rows: what `--weights int8` and INT8 checkpoints hold; the GPU form of
// cpu::Int8Weight). The decode-sized projections read it as they read FP8 rows (16 weights per
// 16-byte load, widened exactly: INT8 fits bf16), with the same contracts.
struct Int8Weight {
  const int8_t* q = nullptr;     // [N, K], rows 16-byte aligned
  const float* scale = nullptr;  // [N]
};
cudaError_t LinearSmallMInt8CudaCores(const __nv_bfloat16* x, int64_t x_stride, const Int8Weight& w, int64_t N,
                                      int64_t K, void* y, bool y_bf16, int64_t y_stride, int64_t M, float beta,
                                      cudaStream_t stream);
cudaError_t LinearSmallMInt8TensorCores(const __nv_bfloat16* x, int64_t x_stride, const Int8Weight& w, int64_t N,
                                        int64_t K, void* y, bool y_bf16, int64_t y_stride, int64_t M, float beta,
                                        cudaStream_t stream);
cudaError_t LinearSmallMInt8(const __nv_bfloat16* x, int64_t x_stride, const Int8Weight& w, int64_t N, int64_t K,
                             void* y, bool y_bf16, int64_t y_stride, int64_t M, float beta, cudaStream_t stream);
// Larger steps with INT8 weights: the rows dequantized to bf16 (bf16(scale[n] * q[n, k]), rounded
// to nearest even) for a bf16 GEMM. out [N, K] row-major; K % 16 == 0, q and out 16-byte aligned.
cudaError_t DequantizeInt8ToBf16(const Int8Weight& w, int64_t N, int64_t K, __nv_bfloat16* out, cudaStream_t stream);
cudaError_t LinearSmallMCudaCores(const __nv_bfloat16* x, int64_t x_stride, const __nv_bfloat16* w, int64_t N,
                                  int64_t K, void* y, bool y_bf16, int64_t y_stride, int64_t M, float beta,
                                  cudaStream_t stream);
// Tensor cores (mma.sync m16n8k16, 16 features per block, K split over its warps): M <= 16.
constexpr int kSmallMTensorCores = 16;
// The FP8 / INT8 tensor-core kernels take up to 256 rows (above 32 in blocks of 32 launched side by
// side, each feature tile's row blocks reading its weights through L2), but pay only to 16: from 32
// rows the input rows they reload per 16-feature tile (about 4 bytes of L1 reads per weight byte)
// make them slower than the FP8 GEMM and, at gla-340M, INT8's dequantizing pass (H100, 2026-12-06,
// docs/quantization.md). Which engine steps take it: ProjectionPaths::byte_weight_kernel_rows.
constexpr int kSmallMByteTensorCores = 256;
cudaError_t LinearSmallMTensorCores(const __nv_bfloat16* x, int64_t x_stride, const __nv_bfloat16* w, int64_t N,
                                    int64_t K, void* y, bool y_bf16, int64_t y_stride, int64_t M, float beta,
                                    cudaStream_t stream);


// Medium-sized projections, 17 to kMediumMMaxRows rows (decode at batch 32-256, short prompts):
// y[M, N] = x[M, K] W[N, K]^T (+ beta y) with bf16, FP8 or INT8 weight rows (one-byte rows widened
// exactly to bf16, each row's sum scaled once), bf16 inputs, fp32 sums, in one kernel that reads
// each weight once (kernels/cuda/linear_medium_m.cu: weight and input tiles staged in shared memory,
// split K across a thread-block cluster where the tiles alone leave SMs idle; Hopper). Deterministic.
// Rows 16-byte aligned, x_stride % 8 == 0, K % 8 == 0 (bf16) or % 16 == 0 (one-byte), y_stride >= N,
// scales given; otherwise cudaErrorInvalidValue (no launch). Which engine steps take it:
// ProjectionPaths::{,fp8_,int8_}medium_m_kernel_rows (measured in the engine: it beats the FP8 GEMM
// path to 32 rows and INT8's dequantize-then-GEMM to 64, and loses to cuBLAS with bf16 rows).
constexpr int kMediumMMaxRows = 256;
// Forms of the kernel that benchmarks compare (the engine passes none: the defaults are the form it
// measured best). max_split: at most this many blocks (a cluster) share a feature tile's K, 0-8 (0:
// as many as fill the GPU in one wave, at most 8 and at most one per 256 of K; either way no more
// than the GPU holds as clusters at once); narrow_features: at M <= 32, 64 features a block instead
// of 128 (twice the blocks, half the weight tile, a warp 16 features x 16 tokens); trace: where each
// block's time goes, kMediumMTraceFields values a block by linear block id (x fastest: the K split,
// then the feature tile, then the token tile), zeros where no block ran: the GPU's nanosecond clock
// at the block's start, when its first tile has landed, at the end of its K loop, when its cluster's
// partial sums are visible, when its outputs are written; then its SM. trace_blocks: the blocks
// trace has room for (8 x ceil(N / 64) x ceil(M / 32) is always enough); a launch of more is
// refused unlaunched.
constexpr int kMediumMTraceFields = 6;
struct MediumMTuning {
  int max_split = 0;
  bool narrow_features = false;
  uint64_t* trace = nullptr;
  int64_t trace_blocks = 0;
};
cudaError_t LinearMediumM(const __nv_bfloat16* x, int64_t x_stride, const __nv_bfloat16* w, int64_t N, int64_t K,
                          void* y, bool y_bf16, int64_t y_stride, int64_t M, float beta, cudaStream_t stream,
                          const MediumMTuning& tuning = {});
cudaError_t LinearMediumMFp8(const __nv_bfloat16* x, int64_t x_stride, const Fp8Weight& w, int64_t N, int64_t K,
                             void* y, bool y_bf16, int64_t y_stride, int64_t M, float beta, cudaStream_t stream,
                             const MediumMTuning& tuning = {});
cudaError_t LinearMediumMInt8(const __nv_bfloat16* x, int64_t x_stride, const Int8Weight& w, int64_t N, int64_t K,
                              void* y, bool y_bf16, int64_t y_stride, int64_t M, float beta, cudaStream_t stream,
                              const MediumMTuning& tuning = {});

// One row's projection whose input is made inside the kernel: each block makes the whole input row
// in shared memory (RMSNorm of an fp32 row, or SwiGLU of a bf16 [gate | up] row, computed exactly
// as cuda::RmsNorm and cuda::SwiGlu compute them: the same bits), then streams its weights as
// LinearSmallMCudaCores does. In a batch-1 decode step this removes the norm and activation
// kernels (three of nine per layer) and the launch and drain each costs; every block redoes an
// O(K) row, against its O(K x 8) weights. K % 8 == 0, K <= kOneRowMaxK, w 16-byte aligned.
constexpr int64_t kOneRowMaxK = 16384;  // the staged row's bf16 fit the default shared memory
struct OneRowInput {
  // kGatedHeadNorm (cuda::RmsNormSwishGate's rows: each head's RMSNorm times swish(gate)) is made
  // only by QuantizeMadeRowsFp8 (kernels/linear_fp8.h); the one-row projections refuse it.
  enum Kind { kRmsNorm, kSwiGlu, kGatedHeadNorm } kind = kRmsNorm;
  const void* x = nullptr;  // kRmsNorm, kGatedHeadNorm: fp32 [.., K] rows; kSwiGlu: bf16 [gate K | up K]
  int64_t x_stride = 0;
  const int32_t* row_id = nullptr;  // kRmsNorm: the row is x[*row_id] (device); null: row 0
  const float* norm_w = nullptr;    // kRmsNorm: [K]; kGatedHeadNorm: [head_dim], every head's
  float eps = 0.f;
  // kGatedHeadNorm: K = heads x head_dim; gate (null: none) fp32 rows of K, gate_stride apart.
  int heads = 0, head_dim = 0;
  const float* gate = nullptr;
  int64_t gate_stride = 0;
};
cudaError_t LinearOneRowStaged(const OneRowInput& in, const __nv_bfloat16* w, int64_t N, int64_t K, void* y,
                               bool y_bf16, float beta, cudaStream_t stream);
// The same with FP8 weights (the batch-1 step of `--weights fp8`): K % 16 == 0, each row's sum
// scaled once by its scale, as LinearSmallMFp8CudaCores does.
cudaError_t LinearOneRowStagedFp8(const OneRowInput& in, const Fp8Weight& w, int64_t N, int64_t K, void* y,
                                  bool y_bf16, float beta, cudaStream_t stream);
cudaError_t LinearOneRowStagedInt8(const OneRowInput& in, const Int8Weight& w, int64_t N, int64_t K, void* y,
                                   bool y_bf16, float beta, cudaStream_t stream);
}  // namespace gla::cuda
#endif

#if defined(GLA_HAVE_CUDA)
namespace gla::cuda {

// fp32 projections for training (kernels/cuda/linear.cc), cpu::Linear's and cpu::LinearBackward's
// contracts with an extra alpha (a LoRA branch's scale), on TF32 tensor cores with fp32
// accumulation (relative error ~1e-3 against fp32; the master weights and activations stay fp32):
//   y[M, N]  = alpha x W^T + beta y
//   dx[M, K] = alpha dy W + dx_beta dx     (dx may be null)
//   dW[N, K] += alpha dy^T x                (dw may be null)
cublasStatus_t LinearF32(cublasHandle_t handle, const float* x, int64_t x_stride, const float* w, int64_t N, int64_t K,
                         float* y, int64_t y_stride, int64_t M, float alpha, float beta);
cublasStatus_t LinearBackwardF32(cublasHandle_t handle, const float* x, int64_t x_stride, const float* w, int64_t N,
                                 int64_t K, const float* dy, int64_t dy_stride, float* dx, int64_t dx_stride,
                                 float dx_beta, float* dw, int64_t M, float alpha);

}  // namespace gla::cuda
#endif
