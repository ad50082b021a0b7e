// Input quoted back in an error message, bounded: a status message that repeats a 1,000-element
// list from a file (or a megabyte-long tensor name) is too large for a gRPC trailer, and the
// client then sees RESOURCE_EXHAUSTED instead of the error.
#pragma once

#include <cstddef>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace gla {

// `s` whole when it is at most `max` bytes; else its first `max` bytes (cut at a UTF-8 character
// boundary) and "... (N bytes)".
inline std::string Excerpt(absl::string_view s, size_t max = 64) {
  if (s.size() <= max) return std::string(s);
  size_t cut = max;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
  return absl::StrCat(s.substr(0, cut), "... (", s.size(), " bytes)");
}

// Every message that crosses to a client is kept under this many bytes (ToGrpcStatus).
inline constexpr size_t kMaxStatusMessageBytes = 1024;

}  // namespace gla
