// LoRA adapters in the PEFT layout: a directory with `adapter_config.json` and
// `adapter_model.safetensors`, tensor names as PEFT writes them for an fla GLA model:
//   base_model.model.model.layers.{i}.attn.{q,k,v,g,o}_proj.lora_{A,B}.weight
//   base_model.model.model.layers.{i}.attn.gk_proj.{0,1}.lora_{A,B}.weight
//   base_model.model.model.layers.{i}.mlp.{gate,up,down}_proj.lora_{A,B}.weight
// A is [r, in], B is [out, r] (PyTorch's [out, in] layout); the adapted projection is
//   y = x W^T + scale * (x A^T) B^T,   scale = lora_alpha / r  (lora_alpha / sqrt(r) with use_rslora).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "models/config.h"
#include "models/weights.h"

namespace gla {

// The projections a LoRA adapter may target, by their fla module names (also PEFT's
// target_modules entries). gk_proj.0 and gk_proj.1 are the two factors of the low-rank forget gate.
enum class LoraTarget { kQ, kK, kV, kG, kO, kGk0, kGk1, kGate, kUp, kDown };
inline constexpr int kNumLoraTargets = 10;
const char* LoraTargetName(LoraTarget t);  // "q_proj", ..., "gk_proj.0", "gk_proj.1", "gate_proj", ...
// Accepts the names above, and "gk_proj" for both gate factors; INVALID_ARGUMENT naming it otherwise.
absl::StatusOr<std::vector<LoraTarget>> ParseLoraTargets(const std::vector<std::string>& names);
// The [out, in] shape of the adapted projection in this model (g_proj needs use_output_gate).
std::pair<int64_t, int64_t> LoraTargetShape(const GlaConfig& config, LoraTarget t);

// lora_alpha's bound: PEFT's are 8-512 in practice; 1e308 loaded and made every logprob NaN.
inline constexpr double kMaxLoraAlpha = 65536;

struct LoraConfig {
  int r = 8;
  double alpha = 16.0;
  double dropout = 0.0;  // training only; recorded in adapter_config.json
  bool use_rslora = false;
  std::vector<LoraTarget> targets;
  // PEFT's layers_to_transform: the only layers that carry the adapter; empty for every layer.
  std::vector<int> layers_to_transform;
  std::string base_model;  // base_model_name_or_path (informational)
  double scale() const;    // alpha / r, or alpha / sqrt(r) with use_rslora
};

struct LoraPair {
  Weight a;  // [r, in]
  Weight b;  // [out, r]
};

struct LoraAdapter {
  LoraConfig config;
  // layers[l][t]: the pair for target t of layer l; absent when t is not a target or l is not
  // one of layers_to_transform. One entry per model layer either way.
  std::vector<std::array<std::optional<LoraPair>, kNumLoraTargets>> layers;
};

// Zero-initialised B and Kaiming-uniform A (PEFT's default init: the adapter starts as a no-op),
// from a seeded generator. INVALID_ARGUMENT when r < 1, alpha <= 0, dropout outside [0, 1), no
// targets, a target the model lacks (g_proj without use_output_gate), or a layer it lacks.
absl::StatusOr<LoraAdapter> NewLoraAdapter(const GlaConfig& config, const LoraConfig& lora, uint64_t seed);

// Writes `dir`/adapter_config.json and `dir`/adapter_model.safetensors (F32), creating `dir`.
// INVALID_ARGUMENT (nothing written) when the options are invalid or the pairs do not match the
// config's targets, layers and rank, so that whatever is written loads again.
absl::Status SaveLoraAdapter(const std::string& dir, const LoraAdapter& adapter);

// The options of adapter_config.json `text` (read from `path`, which errors name), checked as
// LoadLoraAdapter checks them before it looks at the model: the same refusals, by field.
absl::StatusOr<LoraConfig> ParseAdapterConfig(const std::string& path, const std::string& text);

// Reads a PEFT adapter directory for this model. Refused by name (the file, the tensor or the
// field): a missing or unparsable file, peft_type other than LORA, a target module we do not
// know, a missing, extra or mis-shaped tensor, an unsupported dtype, non-finite values, and the
// PEFT options that change the computation in ways we do not apply (bias, DoRA, fan_in_fan_out,
// rank/alpha patterns, modules_to_save, ...). layers_to_transform is applied.
absl::StatusOr<LoraAdapter> LoadLoraAdapter(const std::string& dir, const GlaConfig& config);

// W += scale * B A for every target (the merged model generates what the adapted one does).
// INVALID_ARGUMENT (weights unchanged) when the adapter's shapes do not fit `weights`.
absl::Status MergeLoraAdapter(const LoraAdapter& adapter, ModelWeights* weights);

}  // namespace gla
