#include "models/lora_adapter.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <random>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "models/excerpt.h"
#include "models/file_io.h"
#include "models/safetensors.h"
#include "models/status_macros.h"
#include "models/json_fields.h"
#include "nlohmann/json.hpp"

namespace gla {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr const char* kTargetNames[kNumLoraTargets] = {"q_proj",    "k_proj",    "v_proj",    "g_proj",  "o_proj",
                                                       "gk_proj.0", "gk_proj.1", "gate_proj", "up_proj", "down_proj"};
// The base weight each target adapts, in LoraTarget order.
constexpr Weight LayerWeights::*kTargetWeights[kNumLoraTargets] = {
    &LayerWeights::q_proj,  &LayerWeights::k_proj,   &LayerWeights::v_proj,   &LayerWeights::g_proj,
    &LayerWeights::o_proj,  &LayerWeights::gk_proj0, &LayerWeights::gk_proj1, &LayerWeights::gate_proj,
    &LayerWeights::up_proj, &LayerWeights::down_proj};

bool IsMlp(LoraTarget t) { return t == LoraTarget::kGate || t == LoraTarget::kUp || t == LoraTarget::kDown; }

// PEFT's tensor names for an fla GLA model: base_model.model + the module path + lora_{A,B}.weight.
std::string TensorName(int layer, LoraTarget t, char ab) {
  return absl::StrCat("base_model.model.model.layers.", layer, IsMlp(t) ? ".mlp." : ".attn.", LoraTargetName(t),
                      ".lora_", std::string(1, ab), ".weight");
}

std::string ShapeString(const std::vector<int64_t>& s) { return absl::StrCat("[", absl::StrJoin(s, ", "), "]"); }

int64_t NumElements(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// A 2-D weight whose data holds exactly its shape's elements (hand-built ones may not).
absl::Status CheckMatrix(const Weight& w, absl::string_view what) {
  if (w.shape.size() != 2 || w.shape[0] < 0 || w.shape[1] < 0)
    return absl::InvalidArgumentError(absl::StrCat(what, " has shape ", ShapeString(w.shape), ", not a matrix"));
  if (static_cast<int64_t>(w.data.size()) != NumElements(w.shape))
    return absl::InvalidArgumentError(absl::StrCat(what, " holds ", w.data.size(), " values; its shape ",
                                                   ShapeString(w.shape), " needs ", NumElements(w.shape)));
  return absl::OkStatus();
}

// Both factors of the pair are matrices of rank r: A [r, in], B [out, r].
absl::Status CheckPair(const LoraPair& p, const std::string& where) {
  RETURN_IF_ERROR(CheckMatrix(p.a, absl::StrCat(where, " lora_A")));
  RETURN_IF_ERROR(CheckMatrix(p.b, absl::StrCat(where, " lora_B")));
  if (p.a.shape[0] != p.b.shape[1])
    return absl::InvalidArgumentError(absl::StrCat(where, ": lora_A ", ShapeString(p.a.shape), " and lora_B ",
                                                   ShapeString(p.b.shape), " differ in rank"));
  return absl::OkStatus();
}

bool TransformsLayer(const LoraConfig& c, int layer) {
  return c.layers_to_transform.empty() ||
         std::find(c.layers_to_transform.begin(), c.layers_to_transform.end(), layer) != c.layers_to_transform.end();
}

// adapter_config.json's fields (models/json_fields.h).
using FieldReader = JsonFields;

// The options of a PEFT LoRA config that change the computation in ways we do not apply.
absl::Status RefuseUnsupported(const FieldReader& f) {
  RETURN_IF_ERROR(f.RefuseUnlessString("peft_type", {"LORA"}, /*required=*/true));
  // Other task types add heads (modules_to_save) and name the tensors of another model class.
  RETURN_IF_ERROR(f.RefuseUnlessString("task_type", {"CAUSAL_LM"}, /*required=*/false));
  RETURN_IF_ERROR(f.RefuseUnlessString("bias", {"none"}, /*required=*/false));  // trained base biases
  // Transposed factors; weight-decomposed LoRA; a bias on lora_B; quantization-aware pooling.
  for (const char* field : {"fan_in_fan_out", "use_dora", "lora_bias", "use_qalora"})
    RETURN_IF_ERROR(f.RefuseUnlessBool(field, false));
  // Per-module ranks and alphas; fully trained modules, token rows or raw parameters saved beside
  // the factors; excluded modules; layers duplicated in the base; activated LoRA (applies only
  // after invocation tokens).
  for (const char* field : {"rank_pattern", "alpha_pattern", "modules_to_save", "trainable_token_indices",
                            "target_parameters", "exclude_modules", "layer_replication", "alora_invocation_tokens"})
    RETURN_IF_ERROR(f.RefuseUnlessEmpty(field));
  return absl::OkStatus();
}

absl::Status ReadRankAndAlpha(const FieldReader& f, LoraConfig* c) {
  absl::Status missing;
  const json* r = f.Require("r", &missing);
  const json* alpha = f.Require("lora_alpha", &missing);
  RETURN_IF_ERROR(missing);
  constexpr int64_t kMaxRank = int64_t{1} << 20;  // far beyond any model width; keeps r * in in range
  if (!r->is_number_integer() || r->get<int64_t>() < 1 || r->get<int64_t>() > kMaxRank)
    return f.Error("r", absl::StrCat("= ", Excerpt(r->dump()), " must be an integer in [1, ", kMaxRank, "]"));
  c->r = r->get<int>();
  if (!alpha->is_number() || !(alpha->get<double>() > 0) || !(alpha->get<double>() <= kMaxLoraAlpha))
    return f.Error("lora_alpha", absl::StrCat("= ", Excerpt(alpha->dump()), " must be a number in (0, ", kMaxLoraAlpha, "]"));
  c->alpha = alpha->get<double>();
  if (const json* d = f.Get("lora_dropout")) {
    if (!d->is_number() || !(d->get<double>() >= 0 && d->get<double>() < 1))
      return f.Error("lora_dropout", absl::StrCat("= ", Excerpt(d->dump()), " must be in [0, 1)"));
    c->dropout = d->get<double>();
  }
  return f.Bool("use_rslora", &c->use_rslora);
}

// Where the adapter applies. PEFT matches a target_modules string as a regex over module paths; we
// take it only when it is one module name, as a list entry would be. layers_to_transform is
// applied (the other layers carry no tensors); PEFT finds the layer index through layers_pattern,
// which for an fla model is "layers" (the default patterns find it too).
absl::Status ReadPlacement(const FieldReader& f, LoraConfig* c) {
  std::vector<std::string> names;
  RETURN_IF_ERROR(f.Strings("target_modules", &names));
  if (names.empty()) return f.Error("target_modules", "must name at least one module");
  auto targets = ParseLoraTargets(names);
  if (!targets.ok()) return f.Error("target_modules", absl::StrCat("holds an ", targets.status().message()));
  c->targets = *std::move(targets);
  RETURN_IF_ERROR(f.Indices("layers_to_transform", &c->layers_to_transform));
  std::vector<std::string> patterns;
  RETURN_IF_ERROR(f.Strings("layers_pattern", &patterns));
  for (const std::string& p : patterns)
    if (p != "layers")
      return f.Error("layers_pattern", absl::StrCat("= \"", Excerpt(p), "\" is not supported (an fla model's is \"layers\")"));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<LoraConfig> ParseAdapterConfig(const std::string& path, const std::string& text) {
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON"));
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
  const FieldReader f(j, path);
  LoraConfig c;
  RETURN_IF_ERROR(RefuseUnsupported(f));
  RETURN_IF_ERROR(ReadRankAndAlpha(f, &c));
  RETURN_IF_ERROR(ReadPlacement(f, &c));
  RETURN_IF_ERROR(f.String("base_model_name_or_path", &c.base_model));
  return c;
}

namespace {

// PEFT types lora_alpha as an int; write it as one when it is whole, as PEFT would.
json AlphaJson(double alpha) {
  if (alpha == std::floor(alpha) && std::fabs(alpha) < 1e15) return static_cast<int64_t>(alpha);
  return alpha;
}

json AdapterConfigJson(const LoraConfig& c) {
  json targets = json::array();
  for (LoraTarget t : c.targets) targets.push_back(LoraTargetName(t));
  return {{"peft_type", "LORA"},
          {"task_type", "CAUSAL_LM"},
          {"r", c.r},
          {"lora_alpha", AlphaJson(c.alpha)},
          {"lora_dropout", c.dropout},
          {"target_modules", targets},
          {"base_model_name_or_path", c.base_model.empty() ? json(nullptr) : json(c.base_model)},
          {"bias", "none"},
          {"fan_in_fan_out", false},
          {"use_rslora", c.use_rslora},
          {"use_dora", false},
          {"inference_mode", true},
          {"modules_to_save", nullptr},
          {"layers_to_transform", c.layers_to_transform.empty() ? json(nullptr) : json(c.layers_to_transform)},
          {"layers_pattern", nullptr},
          {"rank_pattern", json::object()},
          {"alpha_pattern", json::object()}};
}

// The options that make sense for any model.
absl::Status CheckHyperparameters(const LoraConfig& lora) {
  if (lora.r < 1) return absl::InvalidArgumentError(absl::StrCat("LoRA rank r = ", lora.r, " must be at least 1"));
  if (!(lora.alpha > 0) || !(lora.alpha <= kMaxLoraAlpha))
    return absl::InvalidArgumentError(absl::StrCat("lora_alpha = ", lora.alpha, " must be in (0, ", kMaxLoraAlpha, "]"));
  if (!(lora.dropout >= 0 && lora.dropout < 1))
    return absl::InvalidArgumentError(absl::StrCat("lora_dropout = ", lora.dropout, " must be in [0, 1)"));
  if (lora.targets.empty()) return absl::InvalidArgumentError("a LoRA adapter needs at least one target module");
  return absl::OkStatus();
}

// The options, and that this model has every target and layer they name.
absl::Status CheckOptions(const GlaConfig& config, const LoraConfig& lora) {
  RETURN_IF_ERROR(CheckHyperparameters(lora));
  for (LoraTarget t : lora.targets)
    if (t == LoraTarget::kG && !config.use_output_gate)
      return absl::InvalidArgumentError("target module g_proj: this model has no output gate");
  for (int l : lora.layers_to_transform)
    if (l < 0 || l >= config.num_hidden_layers)
      return absl::InvalidArgumentError(
          absl::StrCat("layers_to_transform: layer ", l, " is not one of the model's ", config.num_hidden_layers));
  return absl::OkStatus();
}

bool IsTarget(const LoraConfig& c, int t) {
  return std::find(c.targets.begin(), c.targets.end(), static_cast<LoraTarget>(t)) != c.targets.end();
}

// Before writing: every pair the config promises is there with rank r and consistent shapes, and
// nothing else is, so the directory loads again (LoadLoraAdapter checks the same from the file).
absl::Status CheckLayout(const LoraAdapter& adapter) {
  const LoraConfig& c = adapter.config;
  RETURN_IF_ERROR(CheckHyperparameters(c));
  for (int l : c.layers_to_transform)
    if (l < 0 || static_cast<size_t>(l) >= adapter.layers.size())
      return absl::InvalidArgumentError(
          absl::StrCat("layers_to_transform: layer ", l, " is not one of the adapter's ", adapter.layers.size()));
  for (size_t l = 0; l < adapter.layers.size(); ++l)
    for (int t = 0; t < kNumLoraTargets; ++t) {
      const auto& p = adapter.layers[l][t];
      const std::string where = absl::StrCat("layer ", l, " ", kTargetNames[t]);
      const bool expected = TransformsLayer(c, static_cast<int>(l)) && IsTarget(c, t);
      if (p.has_value() != expected)
        return absl::InvalidArgumentError(absl::StrCat(
            where, expected ? ": no LoRA pair, though the config targets it" : ": a LoRA pair the config does not target"));
      if (!p.has_value()) continue;
      RETURN_IF_ERROR(CheckPair(*p, where));
      if (p->a.shape[0] != c.r)
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": rank ", p->a.shape[0], ", but the config says r = ", c.r));
    }
  return absl::OkStatus();
}

absl::Status WriteTextAtomically(const std::string& path, const std::string& text) {
  return WriteFileAtomically(path, text);  // fsync'ed: a finished adapter survives a crash
}

// One factor from the file, as fp32, checked for presence, shape, dtype and finite values.
absl::StatusOr<Weight> ReadFactor(const SafetensorsFile& file, const std::string& name,
                                  const std::vector<int64_t>& shape) {
  const TensorView* v = file.Find(name);
  if (v == nullptr)
    return absl::InvalidArgumentError(
        absl::StrCat(file.path(), ": missing tensor '", name, "' (shape ", ShapeString(shape), ")"));
  if (v->shape != shape)
    return absl::InvalidArgumentError(absl::StrCat(file.path(), ": tensor '", name, "' has shape ", v->ShapeString(),
                                                   ", expected ", ShapeString(shape)));
  if (v->dtype != DType::kF32 && v->dtype != DType::kBF16 && v->dtype != DType::kF16)
    return absl::InvalidArgumentError(absl::StrCat(file.path(), ": tensor '", name, "' has dtype ",
                                                   DTypeName(v->dtype), "; adapters must be F32, BF16 or F16"));
  Weight w;
  ASSIGN_OR_RETURN(w.data, ToFloat32(*v));
  for (size_t i = 0; i < w.data.size(); ++i)
    if (!std::isfinite(w.data[i]))
      return absl::InvalidArgumentError(
          absl::StrCat(file.path(), ": tensor '", name, "' holds a non-finite value at element ", i));
  w.shape = shape;
  return w;
}

absl::Status RefuseUnusedTensors(const SafetensorsFile& file, const std::set<std::string>& used) {
  for (const TensorView& v : file.tensors())
    if (!used.count(v.name))
      return absl::InvalidArgumentError(
          absl::StrCat(file.path(), ": unexpected tensor '", v.name,
                       "' (not a LoRA factor of the modules and layers adapter_config.json names)"));
  return absl::OkStatus();
}

// The pair of (layer, target) fits its base weight W [out, in]: A [r, in], B [out, r].
absl::Status CheckMergeShapes(const LoraPair& p, const Weight& w, size_t layer, int t) {
  const std::string where = absl::StrCat("layer ", layer, " ", kTargetNames[t]);
  RETURN_IF_ERROR(CheckPair(p, where));
  RETURN_IF_ERROR(CheckMatrix(w, absl::StrCat(where, " base weight")));
  if (p.a.shape[1] != w.shape[1] || p.b.shape[0] != w.shape[0])
    return absl::InvalidArgumentError(absl::StrCat(where, ": adapter factors ", ShapeString(p.a.shape), " / ",
                                                   ShapeString(p.b.shape), " do not fit the weight ",
                                                   ShapeString(w.shape)));
  return absl::OkStatus();
}

// W[out, in] += scale * B[out, r] A[r, in].
void AddScaledProduct(float scale, const LoraPair& p, Weight* w) {
  const int64_t out = w->shape[0], in = w->shape[1], r = p.a.shape[0];
  for (int64_t i = 0; i < out; ++i) {
    float* wrow = w->data.data() + i * in;
    for (int64_t k = 0; k < r; ++k) {
      const float b = scale * p.b.data[i * r + k];
      const float* arow = p.a.data.data() + k * in;
      for (int64_t j = 0; j < in; ++j) wrow[j] += b * arow[j];
    }
  }
}

}  // namespace

const char* LoraTargetName(LoraTarget t) { return kTargetNames[static_cast<int>(t)]; }

absl::StatusOr<std::vector<LoraTarget>> ParseLoraTargets(const std::vector<std::string>& names) {
  std::set<LoraTarget> targets;  // ordered and without repeats, whatever order the names come in
  for (const std::string& n : names) {
    // fla's gk_proj is an nn.Sequential of two Linears; PEFT adapts each factor, not the Sequential.
    if (n == "gk_proj") {
      targets.insert({LoraTarget::kGk0, LoraTarget::kGk1});
      continue;
    }
    const auto* it = std::find(std::begin(kTargetNames), std::end(kTargetNames), n);
    if (it == std::end(kTargetNames))
      return absl::InvalidArgumentError(absl::StrCat("unknown LoRA target module '", Excerpt(n), "' (known: ",
                                                     absl::StrJoin(kTargetNames, ", "), ", gk_proj)"));
    targets.insert(static_cast<LoraTarget>(it - std::begin(kTargetNames)));
  }
  return std::vector<LoraTarget>(targets.begin(), targets.end());
}

std::pair<int64_t, int64_t> LoraTargetShape(const GlaConfig& c, LoraTarget t) {
  const int64_t D = c.hidden_size, I = c.intermediate_size;
  switch (t) {
    case LoraTarget::kQ: return {c.key_dim, D};
    case LoraTarget::kK: return {c.key_dim_per_group, D};
    case LoraTarget::kV: return {c.value_dim_per_group, D};
    case LoraTarget::kG: return {c.value_dim, D};
    case LoraTarget::kO: return {D, c.value_dim};
    case LoraTarget::kGk0: return {c.gate_low_rank_dim, D};
    case LoraTarget::kGk1: return {c.key_dim_per_group, c.gate_low_rank_dim};
    case LoraTarget::kGate: return {I, D};
    case LoraTarget::kUp: return {I, D};
    case LoraTarget::kDown: return {D, I};
  }
  return {0, 0};
}

double LoraConfig::scale() const { return use_rslora ? alpha / std::sqrt(static_cast<double>(r)) : alpha / r; }

absl::StatusOr<LoraAdapter> NewLoraAdapter(const GlaConfig& config, const LoraConfig& lora, uint64_t seed) {
  RETURN_IF_ERROR(CheckOptions(config, lora));
  LoraAdapter a;
  a.config = lora;
  a.layers.resize(config.num_hidden_layers);
  std::mt19937_64 rng(seed);
  for (int l = 0; l < config.num_hidden_layers; ++l) {
    if (!TransformsLayer(lora, l)) continue;
    for (LoraTarget t : lora.targets) {
      const auto [out, in] = LoraTargetShape(config, t);
      // torch's nn.Linear init of lora_A (Kaiming-uniform, a = sqrt(5)): U(-1/sqrt(in), 1/sqrt(in));
      // B = 0, so a new adapter changes nothing until it is trained.
      const float bound = 1.0f / std::sqrt(static_cast<float>(in));
      std::uniform_real_distribution<float> u(-bound, bound);
      LoraPair p;
      p.a.shape = {lora.r, in};
      p.a.data.resize(static_cast<size_t>(lora.r * in));
      for (float& v : p.a.data) v = u(rng);
      p.b.shape = {out, lora.r};
      p.b.data.assign(static_cast<size_t>(out * lora.r), 0.0f);
      a.layers[l][static_cast<int>(t)] = std::move(p);
    }
  }
  return a;
}

absl::Status SaveLoraAdapter(const std::string& dir, const LoraAdapter& adapter) {
  RETURN_IF_ERROR(CheckLayout(adapter));
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(dir, ": cannot create (", ec.message(), ")"));
  std::vector<TensorToWrite> tensors;
  for (size_t l = 0; l < adapter.layers.size(); ++l)
    for (int t = 0; t < kNumLoraTargets; ++t) {
      const auto& p = adapter.layers[l][t];
      if (!p.has_value()) continue;
      const int layer = static_cast<int>(l);
      tensors.push_back(F32Tensor(TensorName(layer, static_cast<LoraTarget>(t), 'A'), p->a.shape, p->a.data));
      tensors.push_back(F32Tensor(TensorName(layer, static_cast<LoraTarget>(t), 'B'), p->b.shape, p->b.data));
    }
  RETURN_IF_ERROR(WriteSafetensors((fs::path(dir) / "adapter_model.safetensors").string(), tensors, {{"format", "pt"}}));
  // The config last and atomically: a directory with a config has its weights.
  return WriteTextAtomically((fs::path(dir) / "adapter_config.json").string(),
                             AdapterConfigJson(adapter.config).dump(2) + "\n");
}

absl::StatusOr<LoraAdapter> LoadLoraAdapter(const std::string& dir, const GlaConfig& config) {
  const std::string config_path = (fs::path(dir) / "adapter_config.json").string();
  ASSIGN_OR_RETURN(const std::string text, ReadWholeFile(config_path));
  ASSIGN_OR_RETURN(LoraConfig lc, ParseAdapterConfig(config_path, text));
  if (absl::Status s = CheckOptions(config, lc); !s.ok())
    return absl::InvalidArgumentError(absl::StrCat(config_path, ": ", s.message()));
  ASSIGN_OR_RETURN(const SafetensorsFile file,
                   SafetensorsFile::Open((fs::path(dir) / "adapter_model.safetensors").string()));
  LoraAdapter a;
  a.config = lc;
  a.layers.resize(config.num_hidden_layers);
  std::set<std::string> used;
  for (int l = 0; l < config.num_hidden_layers; ++l) {
    if (!TransformsLayer(lc, l)) continue;
    for (LoraTarget t : lc.targets) {
      const auto [out, in] = LoraTargetShape(config, t);
      const std::string a_name = TensorName(l, t, 'A'), b_name = TensorName(l, t, 'B');
      const std::vector<int64_t> a_shape = {lc.r, in}, b_shape = {out, lc.r};
      LoraPair p;
      ASSIGN_OR_RETURN(p.a, ReadFactor(file, a_name, a_shape));
      ASSIGN_OR_RETURN(p.b, ReadFactor(file, b_name, b_shape));
      used.insert({a_name, b_name});
      a.layers[l][static_cast<int>(t)] = std::move(p);
    }
  }
  RETURN_IF_ERROR(RefuseUnusedTensors(file, used));
  return a;
}

absl::Status MergeLoraAdapter(const LoraAdapter& adapter, ModelWeights* weights) {
  if (adapter.layers.size() != weights->layers.size())
    return absl::InvalidArgumentError(absl::StrCat("the adapter has ", adapter.layers.size(), " layers; the model has ",
                                                   weights->layers.size()));
  // Every shape first, so that a mismatch changes nothing.
  for (size_t l = 0; l < adapter.layers.size(); ++l)
    for (int t = 0; t < kNumLoraTargets; ++t)
      if (const auto& p = adapter.layers[l][t])
        RETURN_IF_ERROR(CheckMergeShapes(*p, weights->layers[l].*kTargetWeights[t], l, t));
  const float scale = static_cast<float>(adapter.config.scale());
  for (size_t l = 0; l < adapter.layers.size(); ++l)
    for (int t = 0; t < kNumLoraTargets; ++t)
      if (const auto& p = adapter.layers[l][t]) AddScaledProduct(scale, *p, &(weights->layers[l].*kTargetWeights[t]));
  return absl::OkStatus();
}

}  // namespace gla
