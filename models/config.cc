#include "models/config.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "models/excerpt.h"
#include "models/status_macros.h"
#include "nlohmann/json.hpp"

namespace gla {

namespace {

using json = nlohmann::json;

// Largest size or width a config may give (FieldReader::Int's bound).
constexpr int64_t kMaxDim = int64_t{1} << 30;

// Reads typed fields of one JSON object; every error names the file and the field.
class FieldReader {
 public:
  FieldReader(const json& j, const std::string& source) : j_(j), source_(source) {}

  absl::Status Error(absl::string_view field, absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(source_, ": field '", field, "' ", what));
  }
  const json* Get(absl::string_view field) const {
    auto it = j_.find(std::string(field));
    return (it == j_.end() || it->is_null()) ? nullptr : &*it;
  }
  absl::Status Int(absl::string_view field, int* out, int min_value) const {
    const json* v = Get(field);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_number_integer()) return Error(field, "must be an integer");
    const int64_t x = v->get<int64_t>();
    if (x < min_value || x > kMaxDim) return Error(field, absl::StrCat("= ", x, " is out of range"));
    *out = static_cast<int>(x);
    return absl::OkStatus();
  }
  absl::Status OptInt(absl::string_view field, std::optional<int>* out) const {
    if (Get(field) == nullptr) return absl::OkStatus();
    int x = 0;
    RETURN_IF_ERROR(Int(field, &x, 0));
    *out = x;
    return absl::OkStatus();
  }
  absl::Status Double(absl::string_view field, double* out) const {
    const json* v = Get(field);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_number()) return Error(field, "must be a number");
    *out = v->get<double>();
    if (!std::isfinite(*out)) return Error(field, "must be finite");
    return absl::OkStatus();
  }
  absl::Status Bool(absl::string_view field, bool* out) const {
    const json* v = Get(field);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_boolean()) return Error(field, "must be true or false");
    *out = v->get<bool>();
    return absl::OkStatus();
  }
  // Options that change the computation in ways we do not implement: refuse unless at `ok`.
  absl::Status RefuseUnlessNull(absl::string_view field) const {
    if (Get(field) != nullptr)
      return Error(field, absl::StrCat("= ", Excerpt(Get(field)->dump()), " is not supported (only null)"));
    return absl::OkStatus();
  }
  absl::Status RefuseUnlessBool(absl::string_view field, bool ok) const {
    bool v = ok;
    RETURN_IF_ERROR(Bool(field, &v));
    if (v != ok) return Error(field, absl::StrCat("= ", v ? "true" : "false", " is not supported"));
    return absl::OkStatus();
  }
  absl::Status RefuseUnlessString(absl::string_view field, std::initializer_list<absl::string_view> ok) const {
    const json* v = Get(field);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_string()) return Error(field, "must be a string");
    for (auto s : ok)
      if (v->get<std::string>() == s) return absl::OkStatus();
    return Error(field, absl::StrCat("= \"", v->get<std::string>(), "\" is not supported"));
  }

 private:
  const json& j_;
  const std::string& source_;
};

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
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::stringstream text;
  text << in.rdbuf();
  return ParseGlaConfigJson(text.str(), path);
}

}  // namespace gla
