#include "models/utf8.h"

#include <cstdint>

namespace gla {

namespace {
bool IsTrail(unsigned char c) { return (c & 0xC0) == 0x80; }

// Expected length from the lead byte, 0 for a byte that cannot start a character.
size_t LeadLength(unsigned char c) {
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) return 2;
  if ((c & 0xF0) == 0xE0) return 3;
  if ((c & 0xF8) == 0xF0) return 4;
  return 0;
}
}  // namespace

size_t Utf8CharLength(std::string_view s) {
  if (s.empty()) return 0;
  const auto* b = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = LeadLength(b[0]);
  if (n == 0 || s.size() < n) return 0;
  if (n == 1) return 1;
  uint32_t cp = b[0] & (0x7F >> n);
  for (size_t i = 1; i < n; ++i) {
    if (!IsTrail(b[i])) return 0;
    cp = (cp << 6) | (b[i] & 0x3F);
  }
  static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n;
}

bool IsUtf8Prefix(std::string_view s) {
  if (s.empty()) return true;
  const auto* b = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = LeadLength(b[0]);
  if (n == 0 || s.size() >= n) return false;
  for (size_t i = 1; i < s.size(); ++i)
    if (!IsTrail(b[i])) return false;
  return true;
}

bool IsValidUtf8(std::string_view s) {
  while (!s.empty()) {
    const size_t n = Utf8CharLength(s);
    if (n == 0) return false;
    s.remove_prefix(n);
  }
  return true;
}

}  // namespace gla
