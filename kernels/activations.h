// Element-wise activations of the GLA block. Framework-free.
#pragma once

#include <cstdint>

namespace gla::cpu {

// SwiGLU: out[r, i] = silu(gate[r, i]) * up[r, i]; gate_up holds [gate | up] per row ([M, 2I]).
void SwiGlu(const float* gate_up, int64_t gate_up_stride, float* out, int64_t out_stride, int64_t M, int64_t I);

// Low-rank forget gate, second half, in place on x [rows, n] (already x = h Wg1 Wg2^T):
//   x = logsigmoid(x + bias) / normalizer,  then max(x, clamp_min) when has_clamp.
void LogSigmoidGate(float* x, int64_t stride, const float* bias, int64_t rows, int64_t n, float normalizer,
                    bool has_clamp, float clamp_min);

// Embedding gather: out[r] = table[ids[r]] (ids already checked against the vocabulary).
void EmbeddingGather(const float* table, int64_t D, const int32_t* ids, int64_t n, float* out);

}  // namespace gla::cpu
