#include "models/weights.h"

#include <cmath>
#include <cstring>
#include <deque>
#include <random>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "models/status_macros.h"

namespace gla {

namespace {

std::string LayerPrefix(int i) { return absl::StrCat("model.layers.", i, "."); }

// One table drives both the expected-name list and the loader, so they cannot drift apart.
template <typename Fn>
void ForEachTensor(const GlaConfig& c, ModelWeights* w, Fn&& fn) {
  const int64_t D = c.hidden_size, I = c.intermediate_size, V = c.vocab_size;
  const int64_t r = c.gate_low_rank_dim, K = c.conv_size;
  fn("model.embeddings.weight", std::vector<int64_t>{V, D}, w ? &w->embeddings : nullptr);
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    LayerWeights* l = w ? &w->layers[i] : nullptr;
    auto at = [&](Weight LayerWeights::*m) { return l ? &(l->*m) : nullptr; };
    const std::string p = LayerPrefix(i);
    fn(p + "attn_norm.weight", std::vector<int64_t>{D}, at(&LayerWeights::attn_norm));
    fn(p + "attn.q_proj.weight", std::vector<int64_t>{c.key_dim, D}, at(&LayerWeights::q_proj));
    fn(p + "attn.k_proj.weight", std::vector<int64_t>{c.key_dim_per_group, D}, at(&LayerWeights::k_proj));
    fn(p + "attn.v_proj.weight", std::vector<int64_t>{c.value_dim_per_group, D}, at(&LayerWeights::v_proj));
    if (c.use_output_gate)
      fn(p + "attn.g_proj.weight", std::vector<int64_t>{c.value_dim, D}, at(&LayerWeights::g_proj));
    if (c.use_short_conv) {
      fn(p + "attn.q_conv1d.weight", std::vector<int64_t>{c.key_dim, 1, K}, at(&LayerWeights::q_conv));
      fn(p + "attn.k_conv1d.weight", std::vector<int64_t>{c.key_dim_per_group, 1, K}, at(&LayerWeights::k_conv));
      fn(p + "attn.v_conv1d.weight", std::vector<int64_t>{c.value_dim_per_group, 1, K}, at(&LayerWeights::v_conv));
    }
    fn(p + "attn.gk_proj.0.weight", std::vector<int64_t>{r, D}, at(&LayerWeights::gk_proj0));
    fn(p + "attn.gk_proj.1.weight", std::vector<int64_t>{c.key_dim_per_group, r}, at(&LayerWeights::gk_proj1));
    fn(p + "attn.gk_proj.1.bias", std::vector<int64_t>{c.key_dim_per_group}, at(&LayerWeights::gk_proj1_bias));
    // fla names the per-head norm g_norm_swish_gate when it fuses norm and swish gate, else g_norm.
    const bool fused = c.use_output_gate && c.fuse_norm;
    fn(p + (fused ? "attn.g_norm_swish_gate.weight" : "attn.g_norm.weight"), std::vector<int64_t>{c.head_v_dim},
       at(&LayerWeights::g_norm));
    fn(p + "attn.o_proj.weight", std::vector<int64_t>{D, c.value_dim}, at(&LayerWeights::o_proj));
    fn(p + "mlp_norm.weight", std::vector<int64_t>{D}, at(&LayerWeights::mlp_norm));
    fn(p + "mlp.gate_proj.weight", std::vector<int64_t>{I, D}, at(&LayerWeights::gate_proj));
    fn(p + "mlp.up_proj.weight", std::vector<int64_t>{I, D}, at(&LayerWeights::up_proj));
    fn(p + "mlp.down_proj.weight", std::vector<int64_t>{D, I}, at(&LayerWeights::down_proj));
  }
  fn("model.norm.weight", std::vector<int64_t>{D}, w ? &w->norm : nullptr);
  if (!c.tie_word_embeddings) fn("lm_head.weight", std::vector<int64_t>{V, D}, w ? &w->lm_head : nullptr);
}

std::string ShapeString(const std::vector<int64_t>& s) { return absl::StrCat("[", absl::StrJoin(s, ", "), "]"); }

// A quantized Linear weight [N, K] (I8, or F8_E4M3 for a float-quantized checkpoint) with its
// `_scale` ([N, 1] or [N] per channel, one value per tensor) and optional all-zero `_zero_point`:
// its values into dst->data, its codes and scales into dst->int8 (I8) or dst->fp8 (F8_E4M3), the names
// used into *used.
absl::Status LoadQuantizedLinear(const GlaConfig& c, const TensorStore& store, const TensorView& t, Weight* dst,
                                 std::set<std::string>* used) {
  const std::string& name = t.name;
  if (!c.quantization)
    return absl::InvalidArgumentError(absl::StrCat(t.file, ": tensor '", name, "' is ", DTypeName(t.dtype),
                                                   " (a quantized weight) but config.json has no "
                                                   "quantization_config"));
  const bool fp8 = t.dtype == DType::kF8E4M3;
  if (fp8 != (c.quantization->kind == CheckpointQuantization::Kind::kFp8E4M3))
    return absl::InvalidArgumentError(absl::StrCat(t.file, ": tensor '", name, "' is ", DTypeName(t.dtype),
                                                   "; config.json's quantization_config says ",
                                                   fp8 ? "int" : "float", " weights"));
  if (!IsLinearWeight(name))
    return absl::InvalidArgumentError(absl::StrCat(t.file, ": tensor '", name, "' is ", DTypeName(t.dtype),
                                                   "; only Linear layers' weights may be quantized"));
  const int64_t N = t.shape[0], K = t.shape[1];
  const std::string scale_name = name + "_scale", zero_name = name + "_zero_point";
  const TensorView* s = store.Find(scale_name);
  if (s == nullptr)
    return absl::NotFoundError(
        absl::StrCat("checkpoint: missing tensor '", scale_name, "' (the scales of the ", DTypeName(t.dtype),
                     " weight '", name, "')"));
  const bool per_channel = c.quantization->per_channel;
  const bool shape_ok = per_channel ? (s->shape == std::vector<int64_t>{N, 1} || s->shape == std::vector<int64_t>{N})
                                    : s->numel() == 1;
  if (!shape_ok)
    return absl::InvalidArgumentError(absl::StrCat(s->file, ": tensor '", scale_name, "' has shape ", s->ShapeString(),
                                                   per_channel ? absl::StrCat(", expected [", N, ", 1] (strategy channel)")
                                                               : std::string(", expected one value (strategy tensor)")));
  if (!IsFloatingPoint(s->dtype))
    return absl::InvalidArgumentError(
        absl::StrCat(s->file, ": tensor '", scale_name, "' has dtype ", DTypeName(s->dtype), "; scales are floats"));
  ASSIGN_OR_RETURN(std::vector<float> scale, ToFloat32(*s));
  for (size_t n = 0; n < scale.size(); ++n)
    if (!std::isfinite(scale[n]) || scale[n] < 0)
      return absl::InvalidArgumentError(absl::StrCat(s->file, ": tensor '", scale_name, "' holds ", scale[n], " at row ",
                                                     n, "; a scale must be finite and not negative"));
  if (!per_channel) scale.assign(static_cast<size_t>(N), scale[0]);
  used->insert(scale_name);
  if (const TensorView* z = store.Find(zero_name)) {
    if (z->numel() != s->numel())
      return absl::InvalidArgumentError(absl::StrCat(z->file, ": tensor '", zero_name, "' has shape ", z->ShapeString(),
                                                     ", not its scales' ", s->ShapeString()));
    ASSIGN_OR_RETURN(std::vector<int64_t> zero, ToInt64(*z));
    for (int64_t v : zero)
      if (v != 0)
        return absl::InvalidArgumentError(absl::StrCat(z->file, ": tensor '", zero_name, "' holds ", v,
                                                       "; only symmetric quantization (zero points 0) is supported"));
    used->insert(zero_name);
  }
  dst->data.resize(static_cast<size_t>(N * K));
  if (fp8) {
    Fp8Rows rows;
    rows.q.resize(static_cast<size_t>(N * K));
    std::memcpy(rows.q.data(), t.data, rows.q.size());
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k) {
        const float v = Float8E4M3ToFloat(rows.q[n * K + k]);
        if (std::isnan(v))
          return absl::InvalidArgumentError(
              absl::StrCat(t.file, ": tensor '", name, "' holds a NaN at [", n, ", ", k, "]"));
        dst->data[n * K + k] = scale[n] * v;
      }
    rows.scale = std::move(scale);
    dst->fp8 = std::move(rows);
    return absl::OkStatus();
  }
  Int8Rows rows;
  rows.q.resize(static_cast<size_t>(N * K));
  std::memcpy(rows.q.data(), t.data, rows.q.size());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) dst->data[n * K + k] = scale[n] * static_cast<float>(rows.q[n * K + k]);
  rows.scale = std::move(scale);
  dst->int8 = std::move(rows);
  return absl::OkStatus();
}

}  // namespace

bool IsLinearWeight(const std::string& name) {
  return absl::EndsWith(name, "_proj.weight") || absl::EndsWith(name, "gk_proj.0.weight") ||
         absl::EndsWith(name, "gk_proj.1.weight") || name == "lm_head.weight";
}

std::vector<ExpectedTensor> ExpectedTensors(const GlaConfig& config) {
  std::vector<ExpectedTensor> out;
  ForEachTensor(config, nullptr, [&](const std::string& name, std::vector<int64_t> shape, Weight*) {
    out.push_back({name, std::move(shape)});
  });
  return out;
}

absl::Status WriteModelWeights(const std::string& path, const GlaConfig& config, const ModelWeights& weights,
                               DType dtype) {
  if (dtype != DType::kF32 && dtype != DType::kBF16)
    return absl::InvalidArgumentError("weights are written as F32 or BF16");
  if (static_cast<int>(weights.layers.size()) != config.num_hidden_layers)
    return absl::InvalidArgumentError(absl::StrCat("weights have ", weights.layers.size(), " layers; config.json says ",
                                                   config.num_hidden_layers));
  std::vector<TensorToWrite> tensors;
  std::deque<std::vector<uint8_t>> bf16;  // the bytes TensorToWrite points at (stable addresses)
  absl::Status status;
  // ForEachTensor hands out mutable pointers for the loader; here they are only read.
  ForEachTensor(config, const_cast<ModelWeights*>(&weights),
                [&](const std::string& name, std::vector<int64_t> shape, Weight* w) {
                  int64_t n = 1;
                  for (int64_t d : shape) n *= d;
                  if (status.ok() && static_cast<int64_t>(w->data.size()) != n)
                    status = absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' holds ", w->data.size(),
                                                                     " values; its shape ", ShapeString(shape),
                                                                     " needs ", n));
                  if (dtype == DType::kF32) {
                    tensors.push_back(F32Tensor(name, std::move(shape), w->data));
                    return;
                  }
                  std::vector<uint8_t>& bytes = bf16.emplace_back(w->data.size() * 2);
                  for (size_t i = 0; i < w->data.size(); ++i) {
                    const uint16_t h = FloatToBFloat16(w->data[i]);
                    std::memcpy(bytes.data() + 2 * i, &h, 2);
                  }
                  tensors.push_back({name, DType::kBF16, std::move(shape), bytes});
                });
  RETURN_IF_ERROR(status);
  return WriteSafetensors(path, tensors, {{"format", "pt"}});
}

absl::StatusOr<ModelWeights> LoadModelWeights(const GlaConfig& config, const TensorStore& store) {
  ModelWeights w;
  w.layers.resize(config.num_hidden_layers);
  std::set<std::string> used;
  absl::Status status;
  ForEachTensor(config, &w, [&](const std::string& name, std::vector<int64_t> shape, Weight* dst) {
    if (!status.ok()) return;
    const TensorView* t = store.Find(name);
    if (t == nullptr) {
      status = absl::NotFoundError(absl::StrCat("checkpoint: missing tensor '", name, "' (expected shape ",
                                                ShapeString(shape), ")"));
      return;
    }
    if (t->shape != shape) {
      status = absl::InvalidArgumentError(absl::StrCat(t->file, ": tensor '", name, "' has shape ",
                                                       t->ShapeString(), ", expected ", ShapeString(shape)));
      return;
    }
    if ((t->dtype == DType::kI8 || t->dtype == DType::kF8E4M3) && shape.size() == 2) {
      status = LoadQuantizedLinear(config, store, *t, dst, &used);
      if (!status.ok()) return;
      dst->shape = std::move(shape);
      used.insert(name);
      return;
    }
    if (t->dtype != DType::kF32 && t->dtype != DType::kBF16 && t->dtype != DType::kF16) {
      status = absl::InvalidArgumentError(absl::StrCat(t->file, ": tensor '", name, "' has dtype ",
                                                       DTypeName(t->dtype), "; weights must be F32, BF16 or F16"));
      return;
    }
    auto data = ToFloat32(*t);
    if (!data.ok()) {
      status = data.status();
      return;
    }
    dst->data = std::move(*data);
    dst->shape = std::move(shape);
    used.insert(name);
  });
  RETURN_IF_ERROR(status);
  for (const std::string& name : store.Names()) {
    // Tied checkpoints sometimes still carry lm_head.weight; with tie_word_embeddings it is unused.
    if (used.count(name) || (config.tie_word_embeddings && name == "lm_head.weight")) continue;
    return absl::InvalidArgumentError(absl::StrCat(store.Find(name)->file, ": unexpected tensor '", name,
                                                   "' (not part of a GLA model with this config.json)"));
  }
  return w;
}

ModelWeights InitModelWeights(const GlaConfig& config, uint64_t seed, double std) {
  ModelWeights w;
  w.layers.resize(config.num_hidden_layers);
  std::mt19937_64 rng(seed);
  const double residual_scale = 1.0 / std::sqrt(2.0 * std::max(1, config.num_hidden_layers));
  ForEachTensor(config, &w, [&](const std::string& name, std::vector<int64_t> shape, Weight* dst) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    dst->shape = shape;
    dst->data.assign(static_cast<size_t>(n), 0.0f);
    const auto ends_with = [&](const char* suffix) { return absl::EndsWith(name, suffix); };
    if (name.find("norm") != std::string::npos) {
      std::fill(dst->data.begin(), dst->data.end(), 1.0f);
      return;
    }
    if (ends_with(".bias")) return;  // zeros
    double s = std;
    if (name.find("conv1d") != std::string::npos) s = 1.0 / std::sqrt(static_cast<double>(config.conv_size));
    if (ends_with("o_proj.weight") || ends_with("down_proj.weight")) s *= residual_scale;
    std::normal_distribution<double> normal(0.0, s);
    for (float& x : dst->data) x = static_cast<float>(normal(rng));
  });
  return w;
}

}  // namespace gla
