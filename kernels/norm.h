// Normalisations. Framework-free. Rows are tokens; `*_stride` = floats between rows.
#pragma once

#include <cstdint>

namespace gla::cpu {

// y = x * rsqrt(mean(x^2) + eps) * w   over rows of width n.
void RmsNorm(const float* x, int64_t x_stride, const float* w, float* y, int64_t y_stride, int64_t rows,
             int64_t n, float eps);

// GLA output norm, per head of width dv: y = RmsNorm(o_h) * w * swish(gate), swish(z) = z sigmoid(z).
// gate == nullptr: the norm alone (use_output_gate = false). o and y are [rows, heads * dv].
void RmsNormSwishGate(const float* o, int64_t o_stride, const float* gate, int64_t gate_stride, const float* w,
                      float* y, int64_t y_stride, int64_t rows, int heads, int dv, float eps);

}  // namespace gla::cpu
