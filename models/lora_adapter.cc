#include "models/lora_adapter.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "models/safetensors.h"
#include "models/status_macros.h"
#include "nlohmann/json.hpp"

namespace gla {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr const char* kTargetNames[kNumLoraTargets] = {"q_proj",    "k_proj",    "v_proj",    "g_proj",  "o_proj",
                                                       "gk_proj.0", "gk_proj.1", "gate_proj", "up_proj", "down_proj"};

// PEFT's tensor names for an fla GLA model: base_model.model + the module path + lora_{A,B}.weight.
std::string TensorName(int layer, LoraTarget t, char ab) {
  const bool mlp = t == LoraTarget::kGate || t == LoraTarget::kUp || t == LoraTarget::kDown;
  return absl::StrCat("base_model.model.model.layers.", layer, mlp ? ".mlp." : ".attn.", LoraTargetName(t), ".lora_",
                      std::string(1, ab), ".weight");
}

std::string ShapeString(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) absl::StrAppend(&out, i ? ", " : "", s[i]);
  return out + "]";
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::Status ConfigError(const std::string& path, const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": field '", field, "' ", what));
}

// adapter_config.json -> LoraConfig; refuses, by field, what changes the computation in ways we
// do not apply (bias training, DoRA, per-module ranks, saved full modules, transposed weights).
absl::StatusOr<LoraConfig> ParseAdapterConfig(const std::string& path, const std::string& text) {
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
  auto get = [&](const char* f) -> const json* {
    auto it = j.find(f);
    return it == j.end() || it->is_null() ? nullptr : &*it;
  };
  const json* type = get("peft_type");
  if (type == nullptr || !type->is_string() || type->get<std::string>() != "LORA")
    return ConfigError(path, "peft_type", absl::StrCat("= ", type ? type->dump() : "null", " is not supported (only \"LORA\")"));
  LoraConfig c;
  const json* r = get("r");
  if (r == nullptr || !r->is_number_integer() || r->get<int64_t>() < 1 || r->get<int64_t>() > 4096)
    return ConfigError(path, "r", "must be an integer in [1, 4096]");
  c.r = r->get<int>();
  if (const json* a = get("lora_alpha")) {
    if (!a->is_number() || !std::isfinite(a->get<double>()) || a->get<double>() <= 0)
      return ConfigError(path, "lora_alpha", "must be a positive number");
    c.alpha = a->get<double>();
  }
  if (const json* d = get("lora_dropout")) {
    if (!d->is_number() || d->get<double>() < 0 || d->get<double>() >= 1)
      return ConfigError(path, "lora_dropout", "must be in [0, 1)");
    c.dropout = d->get<double>();
  }
  if (const json* b = get("bias"); b != nullptr && (!b->is_string() || b->get<std::string>() != "none"))
    return ConfigError(path, "bias", absl::StrCat("= ", b->dump(), " is not supported (only \"none\")"));
  for (const char* f : {"fan_in_fan_out", "use_dora"})
    if (const json* v = get(f); v != nullptr && (!v->is_boolean() || v->get<bool>()))
      return ConfigError(path, f, absl::StrCat("= ", v->dump(), " is not supported (only false)"));
  if (const json* v = get("use_rslora")) {
    if (!v->is_boolean()) return ConfigError(path, "use_rslora", "must be true or false");
    c.use_rslora = v->get<bool>();
  }
  for (const char* f : {"modules_to_save", "rank_pattern", "alpha_pattern", "layers_to_transform"})
    if (const json* v = get(f); v != nullptr && !v->empty())
      return ConfigError(path, f, absl::StrCat("= ", v->dump(), " is not supported (only empty or null)"));
  std::vector<std::string> names;
  const json* t = get("target_modules");
  if (t != nullptr && t->is_string()) {
    names.push_back(t->get<std::string>());
  } else if (t != nullptr && t->is_array()) {
    for (const json& e : *t) {
      if (!e.is_string()) return ConfigError(path, "target_modules", "must hold strings");
      names.push_back(e.get<std::string>());
    }
  }
  if (names.empty()) return ConfigError(path, "target_modules", "must name at least one module");
  auto targets = ParseLoraTargets(names);
  if (!targets.ok()) return ConfigError(path, "target_modules", std::string(targets.status().message()));
  c.targets = *targets;
  if (const json* b = get("base_model_name_or_path"); b != nullptr && b->is_string()) c.base_model = b->get<std::string>();
  return c;
}

absl::Status CheckOptions(const GlaConfig& config, const LoraConfig& lora) {
  if (lora.r < 1) return absl::InvalidArgumentError(absl::StrCat("LoRA rank ", lora.r, " must be at least 1"));
  if (!(lora.alpha > 0) || !std::isfinite(lora.alpha))
    return absl::InvalidArgumentError(absl::StrCat("LoRA alpha ", lora.alpha, " must be positive"));
  if (!(lora.dropout >= 0 && lora.dropout < 1))
    return absl::InvalidArgumentError(absl::StrCat("LoRA dropout ", lora.dropout, " must be in [0, 1)"));
  if (lora.targets.empty()) return absl::InvalidArgumentError("a LoRA adapter needs at least one target module");
  for (LoraTarget t : lora.targets)
    if (t == LoraTarget::kG && !config.use_output_gate)
      return absl::InvalidArgumentError("target module g_proj: this model has no output gate");
  return absl::OkStatus();
}

}  // namespace

const char* LoraTargetName(LoraTarget t) { return kTargetNames[static_cast<int>(t)]; }

absl::StatusOr<std::vector<LoraTarget>> ParseLoraTargets(const std::vector<std::string>& names) {
  std::set<int> seen;
  for (const std::string& n : names) {
    bool found = false;
    for (int i = 0; i < kNumLoraTargets; ++i)
      if (n == kTargetNames[i] || (n == "gk_proj" && (i == 5 || i == 6))) {
        seen.insert(i);
        found = true;
      }
    if (!found)
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown LoRA target module '", n,
          "' (known: q_proj, k_proj, v_proj, g_proj, o_proj, gk_proj, gk_proj.0, gk_proj.1, gate_proj, up_proj, down_proj)"));
  }
  std::vector<LoraTarget> out;
  for (int i : seen) out.push_back(static_cast<LoraTarget>(i));
  return out;
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
  for (auto& layer : a.layers)
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
      layer[static_cast<int>(t)] = std::move(p);
    }
  return a;
}

absl::Status SaveLoraAdapter(const std::string& dir, const LoraAdapter& adapter) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(dir, ": cannot create (", ec.message(), ")"));
  const LoraConfig& c = adapter.config;
  json targets = json::array();
  for (LoraTarget t : c.targets) targets.push_back(LoraTargetName(t));
  const json config = {{"peft_type", "LORA"},
                       {"task_type", "CAUSAL_LM"},
                       {"r", c.r},
                       {"lora_alpha", c.alpha},
                       {"lora_dropout", c.dropout},
                       {"target_modules", targets},
                       {"base_model_name_or_path", c.base_model},
                       {"bias", "none"},
                       {"fan_in_fan_out", false},
                       {"use_rslora", c.use_rslora},
                       {"use_dora", false},
                       {"inference_mode", true},
                       {"modules_to_save", nullptr},
                       {"layers_to_transform", nullptr},
                       {"rank_pattern", json::object()},
                       {"alpha_pattern", json::object()}};
  std::vector<TensorToWrite> tensors;
  for (size_t l = 0; l < adapter.layers.size(); ++l)
    for (int t = 0; t < kNumLoraTargets; ++t) {
      const auto& p = adapter.layers[l][t];
      if (!p.has_value()) continue;
      tensors.push_back(F32Tensor(TensorName(static_cast<int>(l), static_cast<LoraTarget>(t), 'A'), p->a.shape, p->a.data));
      tensors.push_back(F32Tensor(TensorName(static_cast<int>(l), static_cast<LoraTarget>(t), 'B'), p->b.shape, p->b.data));
    }
  RETURN_IF_ERROR(WriteSafetensors((fs::path(dir) / "adapter_model.safetensors").string(), tensors, {{"format", "pt"}}));
  // The config last and atomically: a directory with a config has its weights.
  const std::string path = (fs::path(dir) / "adapter_config.json").string(), tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    out << config.dump(2) << "\n";
    if (!out) return absl::InternalError(absl::StrCat(tmp, ": cannot write"));
  }
  fs::rename(tmp, path, ec);
  if (ec) return absl::InternalError(absl::StrCat(path, ": cannot write (", ec.message(), ")"));
  return absl::OkStatus();
}

absl::StatusOr<LoraAdapter> LoadLoraAdapter(const std::string& dir, const GlaConfig& config) {
  const std::string config_path = (fs::path(dir) / "adapter_config.json").string();
  ASSIGN_OR_RETURN(std::string text, ReadFile(config_path));
  ASSIGN_OR_RETURN(LoraConfig lc, ParseAdapterConfig(config_path, text));
  if (absl::Status s = CheckOptions(config, lc); !s.ok())
    return absl::InvalidArgumentError(absl::StrCat(config_path, ": ", s.message()));
  const std::string weights_path = (fs::path(dir) / "adapter_model.safetensors").string();
  ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::Open(weights_path));
  LoraAdapter a;
  a.config = lc;
  a.layers.resize(config.num_hidden_layers);
  std::set<std::string> used;
  for (int l = 0; l < config.num_hidden_layers; ++l)
    for (LoraTarget t : lc.targets) {
      const auto [out, in] = LoraTargetShape(config, t);
      LoraPair p;
      for (char ab : {'A', 'B'}) {
        const std::string name = TensorName(l, t, ab);
        const std::vector<int64_t> shape = ab == 'A' ? std::vector<int64_t>{lc.r, in} : std::vector<int64_t>{out, lc.r};
        const TensorView* v = file.Find(name);
        if (v == nullptr)
          return absl::InvalidArgumentError(absl::StrCat(weights_path, ": missing tensor '", name, "' (shape ",
                                                         ShapeString(shape), ")"));
        if (v->shape != shape)
          return absl::InvalidArgumentError(absl::StrCat(weights_path, ": tensor '", name, "' has shape ",
                                                         v->ShapeString(), ", expected ", ShapeString(shape)));
        if (v->dtype != DType::kF32 && v->dtype != DType::kBF16 && v->dtype != DType::kF16)
          return absl::InvalidArgumentError(absl::StrCat(weights_path, ": tensor '", name, "' has dtype ",
                                                         DTypeName(v->dtype), "; adapters must be F32, BF16 or F16"));
        ASSIGN_OR_RETURN(std::vector<float> data, ToFloat32(*v));
        for (float x : data)
          if (!std::isfinite(x))
            return absl::InvalidArgumentError(absl::StrCat(weights_path, ": tensor '", name, "' holds a non-finite value"));
        Weight& w = ab == 'A' ? p.a : p.b;
        w.data = std::move(data);
        w.shape = shape;
        used.insert(name);
      }
      a.layers[l][static_cast<int>(t)] = std::move(p);
    }
  for (const TensorView& v : file.tensors())
    if (!used.count(v.name))
      return absl::InvalidArgumentError(absl::StrCat(weights_path, ": unexpected tensor '", v.name,
                                                     "' (not a LoRA factor of the modules adapter_config.json names)"));
  return a;
}

absl::Status MergeLoraAdapter(const LoraAdapter& adapter, ModelWeights* weights) {
  if (adapter.layers.size() != weights->layers.size())
    return absl::InvalidArgumentError(absl::StrCat("the adapter has ", adapter.layers.size(), " layers; the model has ",
                                                   weights->layers.size()));
  auto target = [](LayerWeights& w, int t) -> Weight& {
    Weight* table[kNumLoraTargets] = {&w.q_proj,   &w.k_proj,   &w.v_proj,    &w.g_proj,  &w.o_proj,
                                      &w.gk_proj0, &w.gk_proj1, &w.gate_proj, &w.up_proj, &w.down_proj};
    return *table[t];
  };
  // Every shape first, so a mismatch changes nothing.
  for (size_t l = 0; l < adapter.layers.size(); ++l)
    for (int t = 0; t < kNumLoraTargets; ++t) {
      const auto& p = adapter.layers[l][t];
      if (!p.has_value()) continue;
      const Weight& w = target(weights->layers[l], t);
      if (w.shape.size() != 2 || p->a.shape.size() != 2 || p->b.shape.size() != 2 || p->a.shape[1] != w.shape[1] ||
          p->b.shape[0] != w.shape[0] || p->a.shape[0] != p->b.shape[1])
        return absl::InvalidArgumentError(absl::StrCat("layer ", l, " ", kTargetNames[t], ": adapter shapes ",
                                                       ShapeString(p->a.shape), " / ", ShapeString(p->b.shape),
                                                       " do not fit the weight ", ShapeString(w.shape)));
    }
  const float scale = static_cast<float>(adapter.config.scale());
  for (size_t l = 0; l < adapter.layers.size(); ++l)
    for (int t = 0; t < kNumLoraTargets; ++t) {
      const auto& p = adapter.layers[l][t];
      if (!p.has_value()) continue;
      Weight& w = target(weights->layers[l], t);
      const int64_t out = w.shape[0], in = w.shape[1], r = p->a.shape[0];
      for (int64_t i = 0; i < out; ++i)
        for (int64_t k = 0; k < r; ++k) {
          const float b = scale * p->b.data[i * r + k];
          const float* arow = p->a.data.data() + k * in;
          float* wrow = w.data.data() + i * in;
          for (int64_t j = 0; j < in; ++j) wrow[j] += b * arow[j];
        }
    }
  return absl::OkStatus();
}

}  // namespace gla
