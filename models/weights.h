// Weight map: fla-hub tensor names -> per-layer fp32 tensors (F32/F16/BF16 on disk).
//
// Linear weights keep PyTorch's [out, in] row-major layout. The CPU backend fuses the
// projections that read the same input into one matrix (see engine/model/cpu_model.cc); this
// module only loads and checks them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "models/config.h"
#include "models/dtype.h"
#include "models/tensor_store.h"

namespace gla {

// A Linear weight as a pre-quantized checkpoint stores it (config.json's quantization_config):
// symmetric INT8 rows with one scale each (a per-tensor scale repeated), kept as they are so a
// backend that serves INT8 uses the checkpoint's own values rather than quantizing again.
struct Int8Rows {
  std::vector<int8_t> q;     // [N, K]
  std::vector<float> scale;  // [N]
};
// The same for a float-quantized (FP8 E4M3) checkpoint: its codes and one scale per row, so a
// backend that runs FP8 rows takes the checkpoint's own codes (quantizing scale x code again per
// row would round twice where the checkpoint's scale is per tensor).
struct Fp8Rows {
  std::vector<uint8_t> q;    // [N, K] E4M3 codes
  std::vector<float> scale;  // [N]
};

struct Weight {
  std::vector<float> data;  // fp32; for a pre-quantized weight, its values (scale * q)
  std::vector<int64_t> shape;
  std::optional<Int8Rows> int8;  // set only for a pre-quantized (INT8) Linear weight
  std::optional<Fp8Rows> fp8;    // set only for a pre-quantized (FP8) Linear weight
  bool empty() const { return data.empty(); }
};

struct LayerWeights {
  Weight attn_norm;             // [D]
  Weight q_proj, k_proj, v_proj;  // [key_dim, D], [kdpg, D], [vdpg, D]
  Weight g_proj;                // [value_dim, D]   (use_output_gate)
  Weight gk_proj0;              // [r, D]            low-rank forget gate, first factor
  Weight gk_proj1, gk_proj1_bias;  // [kdpg, r], [kdpg]
  Weight q_conv, k_conv, v_conv;   // [width, 1, conv_size] (use_short_conv)
  Weight g_norm;                // [dv]  g_norm_swish_gate or g_norm
  Weight o_proj;                // [D, value_dim]
  Weight mlp_norm;              // [D]
  Weight gate_proj, up_proj;    // [I, D]
  Weight down_proj;             // [D, I]
};

struct ModelWeights {
  Weight embeddings;  // [V, D]
  std::vector<LayerWeights> layers;
  Weight norm;        // [D]
  Weight lm_head;     // [V, D]; empty when tied to embeddings
  const Weight& output_embeddings() const { return lm_head.empty() ? embeddings : lm_head; }
};

// Every tensor the config needs must be present with its exact shape; any tensor left over is an
// error too (a checkpoint for another architecture should not half-load). Errors name the tensor.
// With config.quantization, a Linear weight stored as I8 (or F8_E4M3) comes with `<name>_scale`
// (and perhaps an all-zero `<name>_zero_point`): `data` is filled with scale * q, and for I8 `int8`
// with the checkpoint's rows and scales; the scales are checked finite and non-negative, FP8 values
// not NaN.
absl::StatusOr<ModelWeights> LoadModelWeights(const GlaConfig& config, const TensorStore& store);

// Writes the weights as one safetensors file with the fla-hub tensor names (the weights of a full
// fine-tune or a model trained from scratch), in F32 or BF16 (round to nearest even: half the
// bytes of a model that ships in the repository). INVALID_ARGUMENT naming the tensor whose size
// does not match the config, or for another dtype.
absl::Status WriteModelWeights(const std::string& path, const GlaConfig& config, const ModelWeights& weights,
                               DType dtype = DType::kF32);

// A fresh model to train from scratch, initialised as fla's GLA models are: every matrix (and the
// embeddings) from N(0, std^2), the residual outputs (o_proj, down_proj) scaled by
// 1 / sqrt(2 * layers) (GPT-2's rescale of pre-norm residual branches), norms 1, the forget gate's
// bias 0, short-conv kernels from N(0, 1 / conv_size). Deterministic in `seed`.
ModelWeights InitModelWeights(const GlaConfig& config, uint64_t seed, double std = 0.02);

// Every nn.Linear weight of fla's GLA (the projections, both gate factors, lm_head): what a
// quantized checkpoint may keep as INT8.
bool IsLinearWeight(const std::string& name);

// The tensor names and shapes a config expects, in a stable order (loader, writers and tests).
struct ExpectedTensor {
  std::string name;
  std::vector<int64_t> shape;
};
std::vector<ExpectedTensor> ExpectedTensors(const GlaConfig& config);

}  // namespace gla
