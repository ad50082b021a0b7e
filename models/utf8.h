// Strict UTF-8 decoding (no overlong forms, no surrogates, nothing past U+10FFFF).
#pragma once

#include <cstddef>
#include <string_view>

namespace gla {

// Length of the valid UTF-8 character at the start of `s`, or 0 when it does not start with one
// (including when `s` holds only the first bytes of a character).
size_t Utf8CharLength(std::string_view s);

// True when `s` could still become a valid character if more bytes were appended.
bool IsUtf8Prefix(std::string_view s);

bool IsValidUtf8(std::string_view s);

inline constexpr std::string_view kUtf8Replacement = "\xEF\xBF\xBD";  // U+FFFD

}  // namespace gla
