// Parses lexed chat-template tokens into statements and expressions (jinja2's grammar and
// precedence: filters and tests bind tighter than arithmetic, `**` is left-associative).
// Tags outside the subset (include, extends, block, call, filter, raw, ...) are refused by name.
#pragma once

#include <string_view>

#include "absl/status/statusor.h"
#include "server/http/chat_ast.h"

namespace gla::chat {

// How deep statements and expressions may nest, together.
inline constexpr int kMaxParseDepth = 128;

// Errors are INVALID_ARGUMENT naming the line.
absl::StatusOr<Body> ParseTemplate(std::string_view source);

}  // namespace gla::chat
