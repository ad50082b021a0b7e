#include "models/dtype.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>

namespace gla {

namespace {
struct DTypeInfo {
  DType dtype;
  std::string_view name;
  size_t size;
};
constexpr DTypeInfo kDTypes[] = {
    {DType::kF64, "F64", 8},  {DType::kF32, "F32", 4}, {DType::kF16, "F16", 2},
    {DType::kBF16, "BF16", 2}, {DType::kF8E4M3, "F8_E4M3", 1}, {DType::kI64, "I64", 8}, {DType::kI32, "I32", 4},
    {DType::kI16, "I16", 2},  {DType::kI8, "I8", 1},   {DType::kU8, "U8", 1},
    {DType::kBool, "BOOL", 1},
};
}  // namespace

const char* DTypeName(DType dtype) {
  for (const auto& d : kDTypes)
    if (d.dtype == dtype) return d.name.data();
  return "?";
}

std::optional<DType> ParseDType(std::string_view name) {
  for (const auto& d : kDTypes)
    if (d.name == name) return d.dtype;
  return std::nullopt;
}

size_t DTypeSize(DType dtype) {
  for (const auto& d : kDTypes)
    if (d.dtype == dtype) return d.size;
  return 0;
}

bool IsFloatingPoint(DType dtype) {
  return dtype == DType::kF64 || dtype == DType::kF32 || dtype == DType::kF16 || dtype == DType::kBF16 ||
         dtype == DType::kF8E4M3;
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = (h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400u) == 0);
      bits = sign | (static_cast<uint32_t>(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

namespace {
// Every E4M3 code's value, made once (NaN for S.1111.111).
const std::array<float, 256>& Float8E4M3Table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int b = 0; b < 256; ++b) {
      const float sign = (b & 0x80) ? -1.0f : 1.0f;
      const int exp = (b >> 3) & 0xf, mant = b & 0x7;
      if (exp == 0xf && mant == 0x7) t[b] = std::numeric_limits<float>::quiet_NaN();
      else if (exp == 0) t[b] = sign * std::ldexp(static_cast<float>(mant), -9);  // subnormal: 2^-6 * m / 8
      else t[b] = sign * std::ldexp(1.0f + static_cast<float>(mant) / 8.0f, exp - 7);
    }
    return t;
  }();
  return table;
}
}  // namespace

float Float8E4M3ToFloat(uint8_t b) { return Float8E4M3Table()[b]; }

bool QuantizeFp8E4M3PerRow(const float* w, int64_t N, int64_t K, uint8_t* q, float* scale) {
  for (int64_t n = 0; n < N; ++n) {
    float mx = 0;
    for (int64_t k = 0; k < K; ++k) {
      const float v = w[n * K + k];
      if (!std::isfinite(v)) return false;
      mx = std::max(mx, std::fabs(v));
    }
    const float s = mx / 448.0f;
    scale[n] = s;
    for (int64_t k = 0; k < K; ++k) q[n * K + k] = s > 0 ? FloatToFloat8E4M3(w[n * K + k] / s) : 0;
  }
  return true;
}

uint8_t FloatToFloat8E4M3(float f) {
  if (std::isnan(f)) return 0x7f;
  const uint8_t sign = std::signbit(f) ? 0x80 : 0x00;
  const float a = std::min(std::fabs(f), 448.0f);
  // The finite magnitudes increase with their codes 0x00..0x7e: the first code above `a` and the
  // one below it bracket it; the nearer wins, the even code on a tie.
  const float* mag = Float8E4M3Table().data();
  const float* above = std::upper_bound(mag, mag + 0x7f, a);
  if (above == mag + 0x7f) return static_cast<uint8_t>(sign | 0x7e);  // a == 448
  const uint8_t hi = static_cast<uint8_t>(above - mag), lo = static_cast<uint8_t>(hi - 1);  // mag[0] = 0 <= a
  const float dl = a - mag[lo], dh = mag[hi] - a;
  return static_cast<uint8_t>(sign | (dl < dh ? lo : dh < dl ? hi : ((lo & 1) == 0 ? lo : hi)));
}

}  // namespace gla
