// The fused input projection both model runners use: one GEMM over the normed hidden state gives,
// per token, the columns [q | k | v | g (output gate, when used) | gk low-rank], in that order.
#pragma once

#include <cstdint>

#include "models/config.h"

namespace gla {

struct InProjLayout {
  explicit InProjLayout(const GlaConfig& c)
      : q(0),
        k(q + c.key_dim),
        v(k + c.key_dim_per_group),
        g(v + c.value_dim_per_group),
        r(g + (c.use_output_gate ? c.value_dim : 0)),
        width(r + c.gate_low_rank_dim) {}
  int64_t q, k, v, g, r, width;  // column offsets, and the fused width
};

}  // namespace gla
