#include "engine/state_storage.h"

#include <cstring>

#include "models/dtype.h"

namespace gla {

const char* StateDTypeName(StateDType dtype) { return dtype == StateDType::kBF16 ? "bf16" : "f32"; }

std::optional<StateDType> ParseStateDType(std::string_view name) {
  if (name == "f32" || name == "fp32" || name == "float32") return StateDType::kF32;
  if (name == "bf16" || name == "bfloat16") return StateDType::kBF16;
  return std::nullopt;
}

// Words are moved through memcpy: a word's bytes are two bf16 values, not a float.
void PackBf16State(const float* values, int64_t n, float* words) {
  auto* out = reinterpret_cast<unsigned char*>(words);
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t b = FloatToBFloat16(values[i]);
    std::memcpy(out + 2 * i, &b, 2);
  }
  if (n % 2 != 0) std::memset(out + 2 * n, 0, 2);  // the last word's unused half
}

void UnpackBf16State(const float* words, int64_t n, float* values) {
  const auto* in = reinterpret_cast<const unsigned char*>(words);
  for (int64_t i = 0; i < n; ++i) {
    uint16_t b;
    std::memcpy(&b, in + 2 * i, 2);
    values[i] = BFloat16ToFloat(b);
  }
}

void ConvertStateWords(const float* from, StateDType from_dtype, float* to, StateDType to_dtype, int64_t n) {
  if (from_dtype == to_dtype) {
    std::memcpy(to, from, static_cast<size_t>(StateWords(n, from_dtype)) * sizeof(float));
  } else if (from_dtype == StateDType::kBF16) {
    UnpackBf16State(from, n, to);
  } else {
    PackBf16State(from, n, to);
  }
}

}  // namespace gla
