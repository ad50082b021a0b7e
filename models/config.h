// GLA model configuration: the fields of fla's GLAConfig that change the computation, read from
// an HF `config.json`. Options we cannot run are refused by name.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace gla {

// A checkpoint quantized elsewhere (config.json's quantization_config; models/quantization_config.h).
struct CheckpointQuantization {
  // The weights' element type: symmetric INT8 (format int-quantized / naive-quantized, I8
  // tensors) or FP8 E4M3 (float-quantized, F8_E4M3 tensors).
  enum class Kind { kInt8, kFp8E4M3 } kind = Kind::kInt8;
  // One scale per output row (strategy channel) or one for the whole tensor (strategy tensor).
  bool per_channel = true;
  // The checkpoint was made for W8A8 (activations quantized per token at run time, `dynamic`).
  // We keep activations in fp32 and run weight-only: closer to the unquantized model than W8A8.
  bool dynamic_activations = false;
};

struct GlaConfig {
  // As written in config.json.
  int hidden_size = 2048;
  int num_hidden_layers = 24;
  int num_heads = 4;
  int num_kv_heads = 4;  // null in config.json -> num_heads
  double expand_k = 0.5;
  double expand_v = 1.0;
  int hidden_ratio = 4;
  int intermediate_size = 0;  // null -> 256 * ceil(int(D * ratio * 2/3) / 256)
  double norm_eps = 1e-6;
  bool use_short_conv = false;
  int conv_size = 4;
  std::optional<double> clamp_min;
  double gate_logit_normalizer = 16;
  int gate_low_rank_dim = 16;
  bool use_output_gate = true;
  bool fuse_norm = true;  // selects the tensor name g_norm_swish_gate (true) or g_norm (false)
  bool tie_word_embeddings = false;
  int vocab_size = 32000;
  std::optional<int> bos_token_id;
  std::vector<int> eos_token_ids;
  std::optional<int> pad_token_id;
  // Set when the checkpoint's Linear weights are pre-quantized (their tensors say which).
  std::optional<CheckpointQuantization> quantization;

  // Derived (filled by Validate()).
  int key_dim = 0;             // int(hidden_size * expand_k): q width
  int value_dim = 0;           // int(hidden_size * expand_v): o width
  int head_k_dim = 0;          // dk
  int head_v_dim = 0;          // dv
  int kv_groups = 1;           // num_heads / num_kv_heads
  int key_dim_per_group = 0;   // k / gk width
  int value_dim_per_group = 0; // v width

  // Fills derived fields; error naming the field when the combination is invalid.
  absl::Status Validate();

  // fp32 state bytes per sequence: L * (H*dk*dv + conv tails).
  int64_t StateFloatsPerLayer() const;
  int64_t ConvTailFloatsPerLayer() const;  // (conv_size-1) * (key_dim + kdpg + vdpg) when use_short_conv
};

absl::StatusOr<GlaConfig> ParseGlaConfigJson(const std::string& text, const std::string& source_name);
absl::StatusOr<GlaConfig> LoadGlaConfig(const std::string& model_dir);

}  // namespace gla
