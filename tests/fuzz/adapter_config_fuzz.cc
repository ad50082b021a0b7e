// Fuzzes PEFT adapter_config.json (models/lora_adapter.h ParseAdapterConfig) with arbitrary text,
// and, when it parses, LoadLoraAdapter of a directory holding that config beside the factors of
// a rank-2 q_proj + v_proj adapter for a 2-layer, 16-wide model (so a config that agrees with the
// factors loads, and every other combination is refused by the tensor checks).
// Promise: refused with INVALID_ARGUMENT naming the file, or the options are in their documented
// ranges (r in [1, 2^20], lora_alpha > 0 and finite, lora_dropout in [0, 1), at least one target,
// layers_to_transform non-negative); a loaded adapter has one entry per model layer and pairs of
// rank r exactly where the config targets; no UB, crash or leak.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "models/config.h"
#include "models/lora_adapter.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

const gla::GlaConfig& Model() {
  static const gla::GlaConfig c = [] {
    auto parsed = gla::ParseGlaConfigJson(
        R"({"model_type": "gla", "hidden_size": 16, "num_hidden_layers": 2, "num_heads": 2, "expand_k": 0.5,
            "expand_v": 1, "intermediate_size": 32, "vocab_size": 64})",
        "config.json");
    if (!parsed.ok()) std::abort();
    return *parsed;
  }();
  return c;
}

const std::string& AdapterDir() {
  static const std::string dir = [] {
    const std::string d = gla::fuzz::TempDir() + "/adapter";
    gla::LoraConfig lora;
    lora.r = 2;
    lora.alpha = 4;
    lora.targets = {gla::LoraTarget::kQ, gla::LoraTarget::kV};
    auto adapter = gla::NewLoraAdapter(Model(), lora, /*seed=*/1);
    if (!adapter.ok() || !gla::SaveLoraAdapter(d, *adapter).ok()) std::abort();
    return d;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto c = gla::ParseAdapterConfig("adapter_config.json", text);
  if (!c.ok()) {
    GLA_FUZZ_CHECK(c.status().code() == absl::StatusCode::kInvalidArgument &&
                       c.status().message().find("adapter_config.json") != std::string::npos,
                   "refused with %s", c.status().ToString().c_str());
    return 0;
  }
  GLA_FUZZ_CHECK(c->r >= 1 && c->r <= (1 << 20), "r = %d", c->r);
  GLA_FUZZ_CHECK(c->alpha > 0 && std::isfinite(c->alpha), "lora_alpha = %g", c->alpha);
  GLA_FUZZ_CHECK(c->dropout >= 0 && c->dropout < 1, "lora_dropout = %g", c->dropout);
  GLA_FUZZ_CHECK(!c->targets.empty(), "no targets");
  for (int l : c->layers_to_transform) GLA_FUZZ_CHECK(l >= 0, "layer %d", l);
  GLA_FUZZ_CHECK(std::isfinite(c->scale()) && c->scale() > 0, "scale %g", c->scale());

  const std::string& dir = AdapterDir();
  gla::fuzz::WriteFileOrDie(dir + "/adapter_config.json", text);
  auto a = gla::LoadLoraAdapter(dir, Model());
  if (!a.ok()) return 0;
  GLA_FUZZ_CHECK(a->layers.size() == static_cast<size_t>(Model().num_hidden_layers), "%zu layers", a->layers.size());
  for (const auto& layer : a->layers)
    for (const auto& pair : layer)
      if (pair) GLA_FUZZ_CHECK(pair->a.shape[0] == a->config.r && pair->b.shape[1] == a->config.r, "rank");
  return 0;
}
