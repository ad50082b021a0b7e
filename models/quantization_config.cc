#include "models/quantization_config.h"

#include "absl/strings/str_cat.h"
#include "models/excerpt.h"
#include "models/json_fields.h"
#include "models/status_macros.h"

namespace gla {

namespace {

using json = nlohmann::json;

absl::Status NotAnObject(const std::string& source, const json& v) {
  return absl::InvalidArgumentError(absl::StrCat(source, " must be an object, not ", Excerpt(v.dump())));
}

// The weights' scheme: symmetric 8-bit integers or FP8 E4M3 (as `format` said), per channel or
// per tensor, made before serving.
absl::Status ParseWeights(const json& w, const std::string& source, CheckpointQuantization* out) {
  if (!w.is_object()) return NotAnObject(source, w);
  JsonFields r(w, source);
  if (out->kind == CheckpointQuantization::Kind::kInt8) {
    RETURN_IF_ERROR(r.RefuseUnlessString("type", {"int"}, /*required=*/true));
  } else {
    RETURN_IF_ERROR(r.RefuseUnlessString("type", {"float"}, /*required=*/true));
  }
  int bits = 0;
  if (r.Get("num_bits") == nullptr) return r.Error("num_bits", "is missing");
  RETURN_IF_ERROR(r.Int("num_bits", &bits, 1, 64));
  if (bits != 8) return r.Error("num_bits", absl::StrCat("= ", bits, " is not supported (only 8)"));
  RETURN_IF_ERROR(r.RefuseUnlessBool("symmetric", true));
  if (r.Get("symmetric") == nullptr) return r.Error("symmetric", "is missing (only symmetric weights load)");
  RETURN_IF_ERROR(r.RefuseUnlessString("strategy", {"channel", "tensor"}, /*required=*/true));
  out->per_channel = w.at("strategy").get<std::string>() == "channel";
  RETURN_IF_ERROR(r.RefuseUnlessNull("group_size"));
  RETURN_IF_ERROR(r.RefuseUnlessNull("block_structure"));
  RETURN_IF_ERROR(r.RefuseUnlessBool("dynamic", false));
  // actorder only reorders GPTQ's rounding at quantization time; "static"/"group" change the layout.
  RETURN_IF_ERROR(r.RefuseUnlessNull("actorder"));
  return absl::OkStatus();
}

// Activations quantized per token at run time are what W8A8 means; we keep them in fp32 (the
// weight-only form of the same checkpoint). Static scales (an input_scale tensor per layer) are not run.
absl::Status ParseInputActivations(const json& a, const std::string& source, CheckpointQuantization* out) {
  if (!a.is_object()) return NotAnObject(source, a);
  JsonFields r(a, source);
  bool dynamic = false;
  RETURN_IF_ERROR(r.Bool("dynamic", &dynamic));
  if (!dynamic)
    return r.Error("dynamic", "is not true: static activation scales are not supported (dynamic per-token ones are, "
                              "run weight-only)");
  out->dynamic_activations = true;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<CheckpointQuantization> ParseQuantizationConfig(const json& q, const std::string& source) {
  if (!q.is_object()) return NotAnObject(source, q);
  JsonFields r(q, source);
  RETURN_IF_ERROR(r.RefuseUnlessString("quant_method", {"compressed-tensors"}, /*required=*/true));
  // int-quantized and naive-quantized keep each weight as I8 next to its scale, float-quantized as
  // F8_E4M3; packed 4-bit formats are not loaded.
  RETURN_IF_ERROR(
      r.RefuseUnlessString("format", {"int-quantized", "naive-quantized", "float-quantized"}, /*required=*/true));
  CheckpointQuantization out;
  if (q.at("format").get<std::string>() == "float-quantized") out.kind = CheckpointQuantization::Kind::kFp8E4M3;
  RETURN_IF_ERROR(r.RefuseUnlessString("quantization_status", {"compressed", "frozen"}));
  RETURN_IF_ERROR(r.RefuseUnlessNull("kv_cache_scheme"));
  if (const json* sparsity = r.Get("sparsity_config"); sparsity != nullptr && !sparsity->empty()) {
    if (!sparsity->is_object()) return NotAnObject(source + ": sparsity_config", *sparsity);
    RETURN_IF_ERROR(JsonFields(*sparsity, source + ": sparsity_config").RefuseUnlessString("format", {"dense"}));
  }
  std::vector<std::string> ignore;  // checked for form only: the tensors say what is quantized
  RETURN_IF_ERROR(r.Strings("ignore", &ignore));
  const json* groups = r.Get("config_groups");
  if (groups == nullptr) return r.Error("config_groups", "is missing");
  if (!groups->is_object() || groups->size() != 1)
    return r.Error("config_groups", "must hold exactly one group (several schemes in one model are not supported)");
  const std::string name = groups->begin().key();
  const std::string group_source = absl::StrCat(source, ": config_groups.", Excerpt(name));
  const json& group = groups->begin().value();
  if (!group.is_object()) return NotAnObject(group_source, group);
  JsonFields g(group, group_source);
  std::vector<std::string> targets;
  RETURN_IF_ERROR(g.Strings("targets", &targets));
  if (targets.empty()) return g.Error("targets", "is missing or empty");
  RETURN_IF_ERROR(g.RefuseUnlessNull("output_activations"));
  const json* weights = g.Get("weights");
  if (weights == nullptr) return g.Error("weights", "is missing (only weight quantization is supported)");
  RETURN_IF_ERROR(ParseWeights(*weights, group_source + ".weights", &out));
  if (const json* a = g.Get("input_activations"))
    RETURN_IF_ERROR(ParseInputActivations(*a, group_source + ".input_activations", &out));
  return out;
}

}  // namespace gla
