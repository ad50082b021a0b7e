#include "tests/support/random_model.h"

#include <filesystem>
#include <fstream>
#include <cstring>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "models/config.h"
#include "models/safetensors.h"
#include "models/status_macros.h"
#include "models/weights.h"
#include "nlohmann/json.hpp"

namespace gla::testing {

namespace fs = std::filesystem;

std::string PresetConfigJson(const std::string& preset) {
  const int hidden = preset == "1.3B" ? 2048 : 1024;
  return absl::StrCat(R"({"model_type": "gla", "hidden_size": )", hidden,
                      R"(, "num_hidden_layers": 24, "num_heads": 4, "expand_k": 0.5, "expand_v": 1,
 "hidden_ratio": 4, "vocab_size": 32000, "norm_eps": 1e-6, "bos_token_id": 1, "eos_token_id": 2,
 "tie_word_embeddings": false, "use_short_conv": false, "use_output_gate": true})");
}

absl::Status WriteRandomModel(const std::string& dir, const RandomModelSpec& spec) {
  ASSIGN_OR_RETURN(GlaConfig config, ParseGlaConfigJson(spec.config_json, "config.json"));
  fs::create_directories(dir);
  {
    std::ofstream out(fs::path(dir) / "config.json");
    out << spec.config_json;
    if (!out) return absl::InternalError(absl::StrCat(dir, ": cannot write config.json"));
  }
  std::mt19937 rng(spec.seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const auto expected = ExpectedTensors(config);
  // Bytes of every tensor, in the requested dtype.
  std::vector<std::vector<uint8_t>> bytes(expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    const auto& e = expected[i];
    int64_t n = 1;
    for (int64_t d : e.shape) n *= d;
    const bool is_norm = e.name.find("norm") != std::string::npos;
    const bool is_bias = e.name.find("bias") != std::string::npos;
    const float fan_in = static_cast<float>(e.shape.back());
    std::vector<float> v(static_cast<size_t>(n));
    for (auto& x : v) {
      if (is_norm) x = 1.0f + 0.1f * normal(rng);        // norms near 1, not exactly (a misread shows)
      else if (is_bias) x = 2.0f + 0.5f * normal(rng);   // forget gate biased towards remembering
      else x = normal(rng) / std::sqrt(fan_in);
    }
    auto& b = bytes[i];
    if (spec.dtype == DType::kF32) {
      b.resize(v.size() * 4);
      std::memcpy(b.data(), v.data(), b.size());
    } else if (spec.dtype == DType::kBF16) {
      b.resize(v.size() * 2);
      for (size_t j = 0; j < v.size(); ++j) {
        const uint16_t h = FloatToBFloat16(v[j]);
        std::memcpy(b.data() + 2 * j, &h, 2);
      }
    } else {
      return absl::InvalidArgumentError("random models are written as F32 or BF16");
    }
  }
  const int shards = std::max(1, spec.shards);
  nlohmann::json weight_map = nlohmann::json::object();
  for (int s = 0; s < shards; ++s) {
    std::vector<TensorToWrite> tensors;
    for (size_t i = s; i < expected.size(); i += shards)
      tensors.push_back({expected[i].name, spec.dtype, expected[i].shape, bytes[i]});
    const std::string file = shards == 1 ? "model.safetensors"
                                         : absl::StrFormat("model-%05d-of-%05d.safetensors", s + 1, shards);
    for (const auto& t : tensors) weight_map[t.name] = file;
    RETURN_IF_ERROR(WriteSafetensors((fs::path(dir) / file).string(), tensors, {{"format", "pt"}}));
  }
  if (shards > 1) {
    std::ofstream out(fs::path(dir) / "model.safetensors.index.json");
    out << nlohmann::json{{"metadata", nlohmann::json::object()}, {"weight_map", weight_map}}.dump(1);
  }
  return absl::OkStatus();
}

}  // namespace gla::testing
