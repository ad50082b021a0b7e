#include "models/config.h"

#include <cmath>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "models/excerpt.h"
#include "models/file_io.h"
#include "models/status_macros.h"
#include "models/json_fields.h"
#include "models/quantization_config.h"
#include "nlohmann/json.hpp"

namespace gla {

namespace {

using json = nlohmann::json;
using FieldReader = JsonFields;  // config.json's fields (models/json_fields.h)
constexpr int64_t kMaxDim = JsonFields::kMaxDim;  // largest size or width a config may give

}  // namespace

absl::StatusOr<GlaConfig> ParseGlaConfigJson(const std::string& text, const std::string& source) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(source, ": not valid JSON"));
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(source, ": not a JSON object"));
  FieldReader r(j, source);
  GlaConfig c;

  RETURN_IF_ERROR(r.RefuseUnlessString("model_type", {"gla"}));
  RETURN_IF_ERROR(r.RefuseUnlessNull("feature_map"));
  RETURN_IF_ERROR(r.RefuseUnlessNull("attn"));  // hybrid softmax-attention layers
  RETURN_IF_ERROR(r.RefuseUnlessNull("attnres_block_size"));
  RETURN_IF_ERROR(r.RefuseUnlessBool("use_gv", false));
  RETURN_IF_ERROR(r.RefuseUnlessBool("use_gk", true));
  RETURN_IF_ERROR(r.RefuseUnlessBool("elementwise_affine", true));
  RETURN_IF_ERROR(r.RefuseUnlessBool("conv_bias", false));
  RETURN_IF_ERROR(r.RefuseUnlessString("hidden_act", {"swish", "silu"}));
  RETURN_IF_ERROR(r.RefuseUnlessString("attn_mode", {"chunk", "fused_recurrent", "fused_chunk"}));

  RETURN_IF_ERROR(r.Int("hidden_size", &c.hidden_size, 1));
  RETURN_IF_ERROR(r.Int("num_hidden_layers", &c.num_hidden_layers, 1));
  RETURN_IF_ERROR(r.Int("num_heads", &c.num_heads, 1));
  c.num_kv_heads = c.num_heads;
  RETURN_IF_ERROR(r.Int("num_kv_heads", &c.num_kv_heads, 1));
  RETURN_IF_ERROR(r.Double("expand_k", &c.expand_k));
  RETURN_IF_ERROR(r.Double("expand_v", &c.expand_v));
  double hidden_ratio = 4;
  RETURN_IF_ERROR(r.Double("hidden_ratio", &hidden_ratio));
  if (hidden_ratio <= 0) return r.Error("hidden_ratio", "must be positive");
  // Sizes are ints of at most 2^30 (FieldReader::Int); the casts below stay inside that.
  if (hidden_ratio > kMaxDim) return r.Error("hidden_ratio", absl::StrCat("must be at most ", kMaxDim));
  c.hidden_ratio = static_cast<int>(hidden_ratio);
  RETURN_IF_ERROR(r.Int("intermediate_size", &c.intermediate_size, 1));
  if (r.Get("intermediate_size") == nullptr) {
    // fla GatedMLP: int(D * ratio * 2 / 3), rounded up to a multiple of 256.
    if (c.hidden_size * hidden_ratio * 2 / 3 > kMaxDim)
      return r.Error("hidden_ratio", absl::StrCat("gives an intermediate size over ", kMaxDim));
    const int raw = static_cast<int>(c.hidden_size * hidden_ratio * 2 / 3);
    c.intermediate_size = 256 * ((raw + 255) / 256);
  }
  RETURN_IF_ERROR(r.Double("norm_eps", &c.norm_eps));
  if (c.norm_eps <= 0) return r.Error("norm_eps", "must be positive");
  RETURN_IF_ERROR(r.Bool("use_short_conv", &c.use_short_conv));
  RETURN_IF_ERROR(r.Int("conv_size", &c.conv_size, 1));
  if (r.Get("clamp_min") != nullptr) {
    double v = 0;
    RETURN_IF_ERROR(r.Double("clamp_min", &v));
    c.clamp_min = v;
  }
  RETURN_IF_ERROR(r.Double("gate_logit_normalizer", &c.gate_logit_normalizer));
  if (c.gate_logit_normalizer <= 0) return r.Error("gate_logit_normalizer", "must be positive");
  RETURN_IF_ERROR(r.Int("gate_low_rank_dim", &c.gate_low_rank_dim, 1));
  RETURN_IF_ERROR(r.Bool("use_output_gate", &c.use_output_gate));
  RETURN_IF_ERROR(r.Bool("fuse_norm", &c.fuse_norm));
  RETURN_IF_ERROR(r.Bool("tie_word_embeddings", &c.tie_word_embeddings));
  RETURN_IF_ERROR(r.Int("vocab_size", &c.vocab_size, 1));
  RETURN_IF_ERROR(r.OptInt("bos_token_id", &c.bos_token_id));
  RETURN_IF_ERROR(r.OptInt("pad_token_id", &c.pad_token_id));
  if (const json* eos = r.Get("eos_token_id")) {
    if (eos->is_array()) {
      for (const json& e : *eos) {
        if (!e.is_number_integer() || e.get<int64_t>() < 0) return r.Error("eos_token_id", "must hold non-negative integers");
        c.eos_token_ids.push_back(e.get<int>());
      }
    } else {
      std::optional<int> one;
      RETURN_IF_ERROR(r.OptInt("eos_token_id", &one));
      c.eos_token_ids.push_back(*one);
    }
  }
  if (const json* q = r.Get("quantization_config")) {
    ASSIGN_OR_RETURN(c.quantization, ParseQuantizationConfig(*q, source + ": quantization_config"));
  }
  RETURN_IF_ERROR(c.Validate());
  return c;
}

absl::Status GlaConfig::Validate() {
  auto bad = [](absl::string_view field, absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("config.json: field '", field, "' ", what));
  };
  if (!(expand_k > 0)) return bad("expand_k", "must be positive");
  if (!(expand_v > 0)) return bad("expand_v", "must be positive");
  if (hidden_size * expand_k > kMaxDim) return bad("expand_k", absl::StrCat("gives a key dim over ", kMaxDim));
  if (hidden_size * expand_v > kMaxDim) return bad("expand_v", absl::StrCat("gives a value dim over ", kMaxDim));
  key_dim = static_cast<int>(hidden_size * expand_k);
  value_dim = static_cast<int>(hidden_size * expand_v);
  if (key_dim <= 0 || key_dim % num_heads != 0)
    return bad("expand_k", absl::StrCat("gives key dim ", key_dim, ", not a positive multiple of num_heads ", num_heads));
  if (value_dim <= 0 || value_dim % num_heads != 0)
    return bad("expand_v", absl::StrCat("gives value dim ", value_dim, ", not a positive multiple of num_heads ", num_heads));
  if (num_kv_heads > num_heads || num_heads % num_kv_heads != 0)
    return bad("num_kv_heads", absl::StrCat("= ", num_kv_heads, " does not divide num_heads = ", num_heads));
  head_k_dim = key_dim / num_heads;
  head_v_dim = value_dim / num_heads;
  kv_groups = num_heads / num_kv_heads;
  key_dim_per_group = key_dim / kv_groups;
  value_dim_per_group = value_dim / kv_groups;
  if (use_short_conv && conv_size < 2) return bad("conv_size", "must be at least 2");
  if (clamp_min && *clamp_min > 0) return bad("clamp_min", "must be <= 0 (it clamps a log gate)");
  auto in_vocab = [&](int id) { return id >= 0 && id < vocab_size; };
  if (bos_token_id && !in_vocab(*bos_token_id)) return bad("bos_token_id", "is outside the vocabulary");
  for (int e : eos_token_ids)
    if (!in_vocab(e)) return bad("eos_token_id", "is outside the vocabulary");
  if (pad_token_id && !in_vocab(*pad_token_id)) return bad("pad_token_id", "is outside the vocabulary");
  return absl::OkStatus();
}

int64_t GlaConfig::ConvTailFloatsPerLayer() const {
  if (!use_short_conv) return 0;
  return int64_t{conv_size - 1} * (key_dim + key_dim_per_group + value_dim_per_group);
}

int64_t GlaConfig::StateFloatsPerLayer() const {
  return int64_t{num_heads} * head_k_dim * head_v_dim + ConvTailFloatsPerLayer();
}

absl::StatusOr<GlaConfig> LoadGlaConfig(const std::string& model_dir) {
  const std::string path = (std::filesystem::path(model_dir) / "config.json").string();
  ASSIGN_OR_RETURN(const std::string text, ReadWholeFile(path));
  return ParseGlaConfigJson(text, path);
}

}  // namespace gla
