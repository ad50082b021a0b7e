// Element types of safetensors tensors and their conversion to the float types we compute in.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace gla {

// kF8E4M3: OCP FP8 E4M3 "fn" (torch.float8_e4m3fn; safetensors "F8_E4M3"): no infinities, one NaN
// pattern per sign, largest finite 448.
enum class DType { kF64, kF32, kF16, kBF16, kF8E4M3, kI64, kI32, kI16, kI8, kU8, kBool };

// Name as safetensors spells it ("F32", "BF16", ...).
const char* DTypeName(DType dtype);
std::optional<DType> ParseDType(std::string_view name);
size_t DTypeSize(DType dtype);
bool IsFloatingPoint(DType dtype);

// IEEE half / bfloat16 <-> float. bf16 rounding is round-to-nearest-even (NaN kept NaN).
float HalfToFloat(uint16_t h);
// Inline: state packing and the bf16-state rounding run them over whole states every step.
inline float BFloat16ToFloat(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
inline uint16_t FloatToBFloat16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);  // NaN
  const uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}
// FP8 E4M3 (fn) <-> float. The conversion to FP8 rounds to nearest even and saturates at +-448
// (what quantizers do after scaling); NaN stays NaN.
float Float8E4M3ToFloat(uint8_t b);
uint8_t FloatToFloat8E4M3(float f);

// FP8 E4M3 rows: w [N, K] as q [N, K] with one fp32 scale per row, scale = max |row| / 448 (the
// format's largest value; a row of zeros has scale 0) and q = FloatToFloat8E4M3(w / scale): what
// compressed-tensors' "channel" strategy stores, and what `--weights fp8` and `gla-eval quantize
// --scheme fp8` make. False (q and scale unspecified) when a weight is not finite.
bool QuantizeFp8E4M3PerRow(const float* w, int64_t N, int64_t K, uint8_t* q, float* scale);

}  // namespace gla
