// What one token costs a GLA model, for the floors of the end-to-end benchmarks (gla-engine-bench,
// gla-n-bench): the FLOPs of a prefill token (every layer's GEMMs, 2 per weight, plus the GLA
// operator's chunkwise matmuls at chunk 64: q k^T, A v, q S, k^T v per head; the lm_head runs on
// the last token only) and the bytes a decode step reads once whatever the batch (the weights; the
// embedding table is gathered, not read whole), beside each sequence's state (read and written).
#pragma once

#include "engine/backend.h"

namespace gla::bench {

struct ModelCosts {
  double flops_per_token = 0;    // prefill
  double projection_flops_per_token = 0;  // of which the layers' projections (FP8 GEMMs under --weights fp8)
  double step_weight_bytes = 0;  // decode, once per step
  double state_bytes = 0;        // one sequence's state (a step reads and writes it)
};

inline ModelCosts CostsOf(Backend& b) {
  const GlaConfig& c = b.config();
  const double D = c.hidden_size, I = c.intermediate_size;
  const double layer_weights = D * (c.key_dim + c.key_dim_per_group + c.value_dim_per_group +
                                    (c.use_output_gate ? c.value_dim : 0) + c.gate_low_rank_dim) +
                               c.gate_low_rank_dim * c.key_dim_per_group + c.value_dim * D + 3 * D * I;
  const double gla_flops =
      2.0 * c.num_heads * (64.0 * c.head_k_dim + 64.0 * c.head_v_dim + 2.0 * c.head_k_dim * c.head_v_dim);
  ModelCosts m;
  m.flops_per_token = c.num_hidden_layers * (2 * layer_weights + gla_flops);
  m.projection_flops_per_token = c.num_hidden_layers * 2 * layer_weights;
  m.step_weight_bytes = static_cast<double>(b.weight_bytes()) - 2.0 * c.vocab_size * D * (c.tie_word_embeddings ? 0 : 1);
  m.state_bytes = static_cast<double>(b.pool().state_bytes());
  return m;
}

}  // namespace gla::bench
