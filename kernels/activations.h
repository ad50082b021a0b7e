// Element-wise activations of the GLA block. Framework-free.
#pragma once

#include <cstdint>

#if defined(GLA_HAVE_CUDA)
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>
#endif

namespace gla {

// The forget gate's activation: gk = logsigmoid(z) / normalizer, then max(gk, clamp_min) when
// has_clamp (fla's gate_logit_normalizer and clamp_min). One struct, filled in one place
// (engine/model/layer_plan.h), read by every gate kernel below.
struct ForgetGate {
  float normalizer = 16.0f;
  bool has_clamp = false;
  float clamp_min = 0.0f;
};

}  // namespace gla

namespace gla::cpu {

// SwiGLU: out[r, i] = silu(gate[r, i]) * up[r, i]; gate_up holds [gate | up] per row ([M, 2I]).
void SwiGlu(const float* gate_up, int64_t gate_up_stride, float* out, int64_t out_stride, int64_t M, int64_t I);

// Low-rank forget gate, second half, in place on x [rows, n] (already x = h Wg1 Wg2^T):
//   x = gate(x + bias)   (ForgetGate above).
void LogSigmoidGate(float* x, int64_t stride, const float* bias, int64_t rows, int64_t n, const ForgetGate& gate);

// Embedding gather: out[r] = table[ids[r]] (ids already checked against the vocabulary).
void EmbeddingGather(const float* table, int64_t D, const int32_t* ids, int64_t n, float* out);

// Backward passes (fine-tuning).
// SwiGLU: d_gate_up ([M, 2I]: [d_gate | d_up] per row) written from the forward input and d_out.
void SwiGluBackward(const float* gate_up, int64_t gate_up_stride, const float* d_out, int64_t d_out_stride,
                    float* d_gate_up, int64_t d_gate_up_stride, int64_t M, int64_t I);

// LogSigmoidGate: `pre` is the gate's input before the bias (what the forward read in place),
// d_out the gradient of its output. d_pre written; d_bias (when not null) accumulated over rows.
// With the clamp, the gradient passes where the unclamped value >= clamp_min and is zero below
// (torch's clamp_min convention).
void LogSigmoidGateBackward(const float* pre, int64_t pre_stride, const float* bias, const float* d_out,
                            int64_t d_out_stride, float* d_pre, int64_t d_pre_stride, float* d_bias, int64_t rows,
                            int64_t n, const ForgetGate& gate);

// Embedding backward: d_table[ids[r]] += d_out[r] (rows of width D).
void EmbeddingScatterAdd(const float* d_out, int64_t D, const int32_t* ids, int64_t n, float* d_table);

}  // namespace gla::cpu

#if defined(GLA_HAVE_CUDA)
namespace gla::cuda {

// SwiGLU on bf16 rows (the gate_up GEMM writes bf16; the down GEMM reads bf16).
cudaError_t SwiGlu(const __nv_bfloat16* gate_up, int64_t gate_up_stride, __nv_bfloat16* out, int64_t out_stride,
                   int64_t M, int64_t I, cudaStream_t stream);
// fp32 rows (training keeps the activations the backward reads).
cudaError_t SwiGlu(const float* gate_up, int64_t gate_up_stride, float* out, int64_t out_stride, int64_t M, int64_t I,
                   cudaStream_t stream);

// cpu::LogSigmoidGate on device rows (training: the gate's pre-activation comes from a GEMM that
// may carry a LoRA delta, so the fused LowRankGate does not apply).
cudaError_t LogSigmoidGate(float* x, int64_t stride, const float* bias, int64_t rows, int64_t n, const ForgetGate& gate,
                           cudaStream_t stream);

// The whole second half of the low-rank forget gate in one pass (decode steps are launch-bound):
//   out[r, j] = gate(sum_k lowrank[r, k] * w1[j, k] + bias[j])   with gate = cpu::LogSigmoidGate's,
// w1 [n, rank] fp32. The CPU reference is cpu::Linear followed by cpu::LogSigmoidGate.
cudaError_t LowRankGate(const float* lowrank, int64_t lowrank_stride, const float* w1, int rank, const float* bias,
                        float* out, int64_t out_stride, int64_t rows, int n, const ForgetGate& gate,
                        cudaStream_t stream);

// out[r] = float(table[ids[r]]): bf16 table, device ids (checked against the vocabulary before).
cudaError_t EmbeddingGather(const __nv_bfloat16* table, int64_t D, const int32_t* ids, int64_t n, float* out,
                            cudaStream_t stream);
// The same from an fp32 table (training's master weights).
cudaError_t EmbeddingGather(const float* table, int64_t D, const int32_t* ids, int64_t n, float* out,
                            cudaStream_t stream);

// Backward passes for fine-tuning on the GPU (kernels/cuda/activations_backward.cu), fp32, with the
// cpu:: functions' contracts. d_bias and d_table are accumulated with atomics (order may vary).
cudaError_t SwiGluBackward(const float* gate_up, int64_t gate_up_stride, const float* d_out, int64_t d_out_stride,
                           float* d_gate_up, int64_t d_gate_up_stride, int64_t M, int64_t I, cudaStream_t stream);
cudaError_t LogSigmoidGateBackward(const float* pre, int64_t pre_stride, const float* bias, const float* d_out,
                                   int64_t d_out_stride, float* d_pre, int64_t d_pre_stride, float* d_bias,
                                   int64_t rows, int64_t n, const ForgetGate& gate, cudaStream_t stream);
cudaError_t EmbeddingScatterAdd(const float* d_out, int64_t D, const int32_t* ids, int64_t n, float* d_table,
                                cudaStream_t stream);

}  // namespace gla::cuda
#endif
