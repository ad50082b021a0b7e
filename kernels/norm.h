// Normalisations. Framework-free. Rows are tokens; `*_stride` = floats between rows.
#pragma once

#include <cstdint>

#if defined(GLA_HAVE_CUDA)
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include "kernels/row_form.h"
#endif

namespace gla::cpu {

// y = x * rsqrt(mean(x^2) + eps) * w   over rows of width n.
void RmsNorm(const float* x, int64_t x_stride, const float* w, float* y, int64_t y_stride, int64_t rows,
             int64_t n, float eps);

// GLA output norm, per head of width dv: y = RmsNorm(o_h) * w * swish(gate), swish(z) = z sigmoid(z).
// gate == nullptr: the norm alone (use_output_gate = false). o and y are [rows, heads * dv].
void RmsNormSwishGate(const float* o, int64_t o_stride, const float* gate, int64_t gate_stride, const float* w,
                      float* y, int64_t y_stride, int64_t rows, int heads, int dv, float eps);

// Backward passes (fine-tuning). Each recomputes what it needs from the forward's inputs.
// dx (+)= dL/dx: written when accumulate_dx is false, added when true (a residual stream's
// gradient already holds the skip path's part). dw, when not null, is accumulated (+=) over rows.
void RmsNormBackward(const float* x, int64_t x_stride, const float* w, const float* dy, int64_t dy_stride, float* dx,
                     int64_t dx_stride, bool accumulate_dx, float* dw, int64_t rows, int64_t n, float eps);

// Backward of RmsNormSwishGate: d_o written; d_gate written (ignored when gate == nullptr); dw += .
void RmsNormSwishGateBackward(const float* o, int64_t o_stride, const float* gate, int64_t gate_stride,
                              const float* w, const float* dy, int64_t dy_stride, float* d_o, int64_t d_o_stride,
                              float* d_gate, int64_t d_gate_stride, float* dw, int64_t rows, int heads, int dv,
                              float eps);

}  // namespace gla::cpu

#if defined(GLA_HAVE_CUDA)
namespace gla::cuda {

// RmsNorm on the GPU: fp32 rows in, bf16 out (the input of the next GEMM); w is fp32. Row r of y
// reads row row_ids[r] of x when row_ids (a device array) is given, row r otherwise: the final norm
// gathers only the rows whose logits are wanted. `form` (kernels/row_form.h): a block or a warp a
// row, the same bits.
cudaError_t RmsNorm(const float* x, int64_t x_stride, const int32_t* row_ids, const float* w, __nv_bfloat16* y,
                    int64_t y_stride, int64_t rows, int n, float eps, cudaStream_t stream,
                    RowForm form = RowForm::kBlockPerRow);
// The same with fp32 out (training: the backward reads the saved activation).
cudaError_t RmsNorm(const float* x, int64_t x_stride, const int32_t* row_ids, const float* w, float* y,
                    int64_t y_stride, int64_t rows, int n, float eps, cudaStream_t stream,
                    RowForm form = RowForm::kBlockPerRow);

// The GLA output norm x swish gate (see cpu::RmsNormSwishGate): fp32 o and gate in, bf16 out.
cudaError_t RmsNormSwishGate(const float* o, int64_t o_stride, const float* gate, int64_t gate_stride, const float* w,
                             __nv_bfloat16* y, int64_t y_stride, int64_t rows, int heads, int dv, float eps,
                             cudaStream_t stream, RowForm form = RowForm::kBlockPerRow);
cudaError_t RmsNormSwishGate(const float* o, int64_t o_stride, const float* gate, int64_t gate_stride, const float* w,
                             float* y, int64_t y_stride, int64_t rows, int heads, int dv, float eps,
                             cudaStream_t stream, RowForm form = RowForm::kBlockPerRow);

// Backward passes for fine-tuning on the GPU (kernels/cuda/norm_backward.cu), fp32 throughout, with
// the cpu:: functions' contracts (those are their references). dw is accumulated: each block sums
// its rows' contributions in shared memory and adds them with one atomic per column, so the
// order of the additions (and the last bits) may differ from run to run. n (or dv) <= 16384.
cudaError_t RmsNormBackward(const float* x, int64_t x_stride, const float* w, const float* dy, int64_t dy_stride,
                            float* dx, int64_t dx_stride, bool accumulate_dx, float* dw, int64_t rows, int n, float eps,
                            cudaStream_t stream);
cudaError_t RmsNormSwishGateBackward(const float* o, int64_t o_stride, const float* gate, int64_t gate_stride,
                                     const float* w, const float* dy, int64_t dy_stride, float* d_o, int64_t d_o_stride,
                                     float* d_gate, int64_t d_gate_stride, float* dw, int64_t rows, int heads, int dv,
                                     float eps, cudaStream_t stream);

}  // namespace gla::cuda
#endif
