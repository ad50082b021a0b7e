// gla-random-model: writes a random-initialised checkpoint of a published GLA shape, for
// benchmarks (no download needed).
//   gla-random-model --preset 340M|1.3B --out DIR [--dtype bf16|f32] [--seed N]
#include <cstdio>
#include <cstring>
#include <string>

#include "tests/support/random_model.h"

int main(int argc, char** argv) {
  std::string preset, out, dtype = "bf16";
  unsigned seed = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--preset") preset = value;
    else if (flag == "--out") out = value;
    else if (flag == "--dtype") dtype = value;
    else if (flag == "--seed") seed = static_cast<unsigned>(std::stoul(value));
    else {
      std::fprintf(stderr, "gla-random-model: error: unknown option %s\n", flag.c_str());
      return 1;
    }
  }
  if ((preset != "340M" && preset != "1.3B") || out.empty() || (dtype != "bf16" && dtype != "f32")) {
    std::fprintf(stderr, "usage: gla-random-model --preset 340M|1.3B --out DIR [--dtype bf16|f32] [--seed N]\n");
    return 1;
  }
  const auto status = gla::testing::WriteRandomModel(
      out, {gla::testing::PresetConfigJson(preset), dtype == "bf16" ? gla::DType::kBF16 : gla::DType::kF32, seed, 1});
  if (!status.ok()) {
    std::fprintf(stderr, "gla-random-model: error: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
