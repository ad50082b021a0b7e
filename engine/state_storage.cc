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

// Words hold bf16 pairs, not floats: values go through a uint16 block and memcpy (no aliasing),
// in blocks the compiler can vectorize (a bf16 pool converts whole states every step).
namespace {
constexpr int64_t kBlock = 1024;
}  // namespace

void PackBf16State(const float* values, int64_t n, float* words) {
  auto* out = reinterpret_cast<unsigned char*>(words);
  uint16_t block[kBlock];
  for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
    const int64_t m = n - i0 < kBlock ? n - i0 : kBlock;
    for (int64_t i = 0; i < m; ++i) block[i] = FloatToBFloat16(values[i0 + i]);
    std::memcpy(out + 2 * i0, block, static_cast<size_t>(m) * 2);
  }
  if (n % 2 != 0) std::memset(out + 2 * n, 0, 2);  // the last word's unused half
}

void UnpackBf16State(const float* words, int64_t n, float* values) {
  const auto* in = reinterpret_cast<const unsigned char*>(words);
  uint16_t block[kBlock];
  for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
    const int64_t m = n - i0 < kBlock ? n - i0 : kBlock;
    std::memcpy(block, in + 2 * i0, static_cast<size_t>(m) * 2);
    for (int64_t i = 0; i < m; ++i) values[i0 + i] = BFloat16ToFloat(block[i]);
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
