// Cross-entropy of next-token prediction fused with the lm_head projection (fine-tuning).
//
// For rows r with target t_r >= 0:  z_r = h_r W^T ([V]),  loss_r = logsumexp(z_r) - z_r[t_r].
// The logits are formed one block of rows at a time, so a long sequence never holds [T, V]
// floats at once: the block's softmax becomes its gradient in place, then feeds dh and dW.
#pragma once

#include <cstdint>

#if defined(GLA_HAVE_CUDA)
#include <cuda_runtime_api.h>
#endif

namespace gla::cpu {

struct CrossEntropyResult {
  double loss_sum = 0.0;  // sum of loss_r over counted rows
  int64_t count = 0;      // rows with a target >= 0
};

// h [rows, D] (h_stride), W [V, D], targets [rows] (< 0: row ignored, no gradient).
// Gradients of grad_scale * sum_r loss_r (grad_scale = 1 / count gives the mean):
//   dh[r] written (zero for ignored rows; dh may be null), dw [V, D] accumulated (may be null).
// block_rows bounds the logits held at once (block_rows * V floats).
CrossEntropyResult LinearCrossEntropy(const float* h, int64_t h_stride, const float* w, int64_t V, int64_t D,
                                      const int32_t* targets, int64_t rows, float grad_scale, float* dh,
                                      int64_t dh_stride, float* dw, int64_t block_rows = 256);

}  // namespace gla::cpu

#if defined(GLA_HAVE_CUDA)
namespace gla::cuda {

// The softmax part of LinearCrossEntropy on the GPU, for one block of rows whose logits a GEMM has
// formed (the caller loops over blocks and runs the dh / dW GEMMs: engine/finetune/cuda_train_model):
// logits [rows, V] (ld floats apart) become grad_scale * (softmax - onehot(target)) in place (all
// zero where target < 0), and *loss_sum, a device double, gains the rows' logsumexp(z) - z[target].
// One block per row; fp32 exponentials summed in double.
cudaError_t SoftmaxCrossEntropyGrad(float* logits, int64_t ld, const int32_t* targets, int64_t rows, int64_t V,
                                    float grad_scale, double* loss_sum, cudaStream_t stream);

}  // namespace gla::cuda
#endif
