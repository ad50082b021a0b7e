// Fuzzes loading a pre-quantized checkpoint's weights (models/weights.h LoadModelWeights with a
// compressed-tensors quantization_config, models/quantization_config.h): the input's first byte
// picks INT8 or FP8, per row or per tensor (quantized_checkpoint_config.h); the rest is the
// model.safetensors of that small config.
// Promise: the weights are refused with INVALID_ARGUMENT or NOT_FOUND and a message, or loaded so
// that every quantized Linear weight's values are its scales times its codes (INT8: the rows and
// one finite, non-negative scale per row kept beside them), with no UB, crash or leak.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#include "models/config.h"
#include "models/tensor_store.h"
#include "models/weights.h"
#include "tests/fuzz/fuzz_util.h"
#include "tests/fuzz/quantized_checkpoint_config.h"

namespace {

const gla::GlaConfig& Config(int mode) {
  static const auto* configs = [] {
    auto* c = new gla::GlaConfig[4];
    for (int m = 0; m < 4; ++m) {
      auto parsed = gla::ParseGlaConfigJson(gla::fuzz::QuantizedFuzzConfigJson(m & 1, (m & 2) == 0), "config.json");
      if (!parsed.ok()) std::abort();
      c[m] = *parsed;
    }
    return c;
  }();
  return configs[mode];
}

void CheckWeight(const gla::Weight& w, const char* what) {
  if (!w.int8) return;
  const int64_t N = w.shape.at(0), K = w.shape.at(1);
  GLA_FUZZ_CHECK(static_cast<int64_t>(w.int8->q.size()) == N * K && static_cast<int64_t>(w.int8->scale.size()) == N &&
                     static_cast<int64_t>(w.data.size()) == N * K,
                 "%s: sizes", what);
  for (int64_t n = 0; n < N; ++n) {
    const float s = w.int8->scale[n];
    GLA_FUZZ_CHECK(std::isfinite(s) && s >= 0, "%s: scale %g at row %lld", what, s, static_cast<long long>(n));
    for (int64_t k = 0; k < K; ++k)
      GLA_FUZZ_CHECK(w.data[n * K + k] == s * static_cast<float>(w.int8->q[n * K + k]), "%s: a value is not scale * q",
                     what);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const gla::GlaConfig& config = Config(data[0] & 3);
  const std::string path = gla::fuzz::TempDir() + "/model.safetensors";
  gla::fuzz::WriteFileOrDie(path, std::string_view(reinterpret_cast<const char*>(data + 1), size - 1));
  auto store = gla::TensorStore::OpenFiles({path});
  if (!store.ok()) return 0;  // the reader's own harness (safetensors_fuzz) covers its refusals
  auto w = gla::LoadModelWeights(config, *store);
  if (!w.ok()) {
    GLA_FUZZ_CHECK(w.status().code() == absl::StatusCode::kInvalidArgument ||
                       w.status().code() == absl::StatusCode::kNotFound,
                   "refused with %s", w.status().ToString().c_str());
    GLA_FUZZ_CHECK(!w.status().message().empty(), "a refusal without a message");
    return 0;
  }
  for (const gla::LayerWeights& l : w->layers) {
    CheckWeight(l.q_proj, "q_proj");
    CheckWeight(l.k_proj, "k_proj");
    CheckWeight(l.v_proj, "v_proj");
    CheckWeight(l.g_proj, "g_proj");
    CheckWeight(l.gk_proj0, "gk_proj.0");
    CheckWeight(l.gk_proj1, "gk_proj.1");
    CheckWeight(l.o_proj, "o_proj");
    CheckWeight(l.gate_proj, "gate_proj");
    CheckWeight(l.up_proj, "up_proj");
    CheckWeight(l.down_proj, "down_proj");
  }
  return 0;
}
