// Projections larger than decode-sized with FP8 weights (issue 23, `--weights fp8` on the GPU):
// the input rows quantized to FP8 E4M3 with a scale per row, then one GEMM on Hopper's FP8 tensor
// cores through cuBLASLt with both scale vectors applied in its epilogue (cuBLAS 12.9+'s
// OUTER_VEC_32F scaling):
//   y[m, n] = x_scale[m] w.scale[n] sum_k xq[m, k] wq[n, k]  (+ beta y)
// The decode-sized forms (M <= 16: bf16 inputs, FP8 weights widened in registers) are in
// kernels/linear.h. Framework-free.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <tuple>

#if defined(GLA_HAVE_CUDA)
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include "kernels/linear.h"
#include "kernels/row_form.h"

namespace gla::cuda {

// x[M, K] (bf16, row stride x_stride) -> q[M, K] (FP8 E4M3, row stride q_stride) and scale[M]:
// scale[m] = max_k |x[m, k]| / 448, q[m, k] = x[m, k] / scale[m] rounded to nearest even (0 where a
// row is all zeros), as models/dtype.h's QuantizeFp8E4M3PerRow rounds (the same bits on the same
// values). K % 8 == 0, x 16-byte aligned, K <= q_stride; cudaErrorInvalidValue (no launch) otherwise.
// `form` (kernels/row_form.h): a block or a warp a row, the same bits.
cudaError_t QuantizeRowsFp8(const __nv_bfloat16* x, int64_t x_stride, int64_t M, int64_t K, uint8_t* q,
                            int64_t q_stride, float* scale, cudaStream_t stream, RowForm form = RowForm::kBlockPerRow);

// The same for rows made in the kernel from the previous kernel's output, as LinearOneRowStaged
// makes its one row (kernels/linear.h's OneRowInput): row m is the RMSNorm of fp32 row m of in.x
// (row stride in.x_stride, in.norm_w, in.eps), the SwiGLU of bf16 [gate K | up K] row m, or the gated
// head norm of fp32 row m (kGatedHeadNorm: each of in.heads heads of in.head_dim values normed,
// times swish of in.gate's row where given), rounded to bf16 exactly as cuda::RmsNorm /
// cuda::SwiGlu / cuda::RmsNormSwishGate round it, then quantized as QuantizeRowsFp8 does: the same
// bits as those two kernels in turn, without the bf16 rows written and read back or the second
// launch. in.row_id must be null; K % 8 == 0, K <= kOneRowMaxK, in.x 16-byte aligned, q
// 8-byte aligned; cudaErrorInvalidValue (no launch) otherwise.
cudaError_t QuantizeMadeRowsFp8(const OneRowInput& in, int64_t M, int64_t K, uint8_t* q, int64_t q_stride, float* scale,
                                cudaStream_t stream, RowForm form = RowForm::kBlockPerRow);

// FP8 inputs: rows of FP8 E4M3 with a scale per row (QuantizeRowsFp8's output).
struct Fp8Input {
  const uint8_t* q = nullptr;    // [M, K], rows `stride` bytes apart, 16-byte aligned
  const float* scale = nullptr;  // [M]
  int64_t stride = 0;
};

// The same product for 1 to kMediumMMaxRows rows in the medium-M kernel's split form
// (kernels/cuda/linear_medium_m.cu), mma.sync on the raw FP8 bytes of both operands (no widening),
// fp32 sums, each weight read once; deterministic. x.q and w.q 16-byte aligned, x.stride a multiple
// of 16 and >= K, K % 16 == 0, y_stride >= N; tuning: max_split and trace only; otherwise
// cudaErrorInvalidValue (no launch). Benchmarks and the kernel test only: measured (H100,
// 2026-12-06, linear_medium_m_bench's forms table), quantize + this never beat the bf16-input form
// (1.3B in-proj at 17 rows 11.9 us against 9.2); kept for the engine's made FP8 rows to feed it.
cudaError_t LinearMediumMFp8Inputs(const Fp8Input& x, const Fp8Weight& w, int64_t N, int64_t K, void* y, bool y_bf16,
                                   int64_t y_stride, int64_t M, float beta, cudaStream_t stream,
                                   const MediumMTuning& tuning = {});

// y[M, N] = (x_scale w.scale^T) o (xq wq^T) + beta y on FP8 tensor cores, fp32 accumulation
// (cuBLASLt's full-precision accumulation, not its fast mode), y fp32 or bf16. The plans (layouts,
// the chosen algorithm) are made once per shape and kept: a step's eager projections do not query
// cuBLASLt's heuristic again. Graph-capturable (its workspace is the caller's). One object per
// stream user; not thread-safe. K % 16 == 0, output rows of N values a multiple of 16 bytes long
// (N % 4 for fp32, N % 8 for bf16) and apart, 16-byte aligned operands (FP8 GEMMs need them:
// cuBLASLt 13.0 on an H100 found no algorithm for fp32 rows of N = 37 or 38 or bf16 rows of N = 36,
// and took fp32 rows of 36, 40, 44); CUBLAS_STATUS_INVALID_VALUE (nothing run) otherwise.
class LinearFp8Gemm {
 public:
  LinearFp8Gemm() = default;
  ~LinearFp8Gemm();
  LinearFp8Gemm(const LinearFp8Gemm&) = delete;
  LinearFp8Gemm& operator=(const LinearFp8Gemm&) = delete;

  // Creates the cuBLASLt handle; `workspace` (device memory, `bytes` of it) outlives this object.
  cublasStatus_t Init(void* workspace, size_t bytes);
  // CUBLAS_STATUS_NOT_SUPPORTED where the library or the device has no FP8 GEMM with these scales
  // (cuBLAS before 12.9, a GPU before Hopper).
  cublasStatus_t Run(const Fp8Input& x, const Fp8Weight& w, int64_t N, int64_t K, void* y, bool y_bf16,
                     int64_t y_stride, int64_t M, float beta, cudaStream_t stream);
  // Makes Run's plan for these operands without running anything: a caller about to capture a CUDA
  // graph makes its plans first, so cuBLASLt's heuristic never runs inside a capture.
  cublasStatus_t Prepare(const Fp8Input& x, const Fp8Weight& w, int64_t N, int64_t K, void* y, bool y_bf16,
                         int64_t y_stride, int64_t M);
  int plans() const { return static_cast<int>(plans_.size()); }

 private:
  // What the algorithm depends on: the shapes, the output's type and stride, and the operands'
  // alignments (the heuristic is told them).
  using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, bool, int, int, int>;
  struct Plan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
    cublasLtMatmulAlgo_t algo{};
  };
  cublasStatus_t MakePlan(const Key& key, const void* a_scale, const void* b_scale, Plan* plan);
  // Run's checks, then the kept plan for the shape (made on first use).
  cublasStatus_t FindPlan(const Fp8Input& x, const Fp8Weight& w, int64_t N, int64_t K, void* y, bool y_bf16,
                          int64_t y_stride, int64_t M, Plan** found);
  static void Destroy(Plan& plan);

  cublasLtHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  std::map<Key, Plan> plans_;
};

}  // namespace gla::cuda
#endif
