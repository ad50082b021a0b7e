// The recurrent state of one sequence: everything its past contributes to its future.
// Per layer: S [H, dk, dv] fp32, then (use_short_conv) the conv tails of q, k, v, each
// [conv_size-1, width]. A plain value: copy it to fork, keep it to resume.
#pragma once

#include <cstdint>
#include <vector>

#include "models/config.h"

namespace gla {

class StateLayout {
 public:
  explicit StateLayout(const GlaConfig& c)
      : layers_(c.num_hidden_layers),
        s_floats_(int64_t{c.num_heads} * c.head_k_dim * c.head_v_dim),
        tail_rows_(c.use_short_conv ? c.conv_size - 1 : 0),
        q_w_(c.key_dim), k_w_(c.key_dim_per_group),
        per_layer_(c.StateFloatsPerLayer()) {}

  int64_t floats() const { return per_layer_ * layers_; }
  int64_t bytes() const { return floats() * static_cast<int64_t>(sizeof(float)); }
  // Offsets in floats from the start of a state (the GPU kernels take a base pointer + offsets).
  int64_t S_offset(int layer) const { return layer * per_layer_; }
  int64_t q_tail_offset(int layer) const { return S_offset(layer) + s_floats_; }
  int64_t k_tail_offset(int layer) const { return q_tail_offset(layer) + tail_rows_ * q_w_; }
  int64_t v_tail_offset(int layer) const { return k_tail_offset(layer) + tail_rows_ * k_w_; }
  float* S(float* base, int layer) const { return base + S_offset(layer); }
  float* q_tail(float* base, int layer) const { return base + q_tail_offset(layer); }
  float* k_tail(float* base, int layer) const { return base + k_tail_offset(layer); }
  float* v_tail(float* base, int layer) const { return base + v_tail_offset(layer); }

 private:
  int64_t layers_, s_floats_, tail_rows_, q_w_, k_w_, per_layer_;  // the v tail ends the layer
};

struct SequenceState {
  std::vector<float> data;  // StateLayout(config).floats() values; all zero = empty past
};

}  // namespace gla
