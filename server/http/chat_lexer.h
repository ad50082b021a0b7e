// Splits a chat template into text and tag tokens the way jinja2's lexer does with
// trim_blocks=True and lstrip_blocks=True (Hugging Face's settings): newlines normalised to "\n",
// one trailing newline dropped, `-` and `+` whitespace control, brackets balanced inside tags.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace gla::chat {

enum class TokenKind {
  kData,        // text outside tags (text)
  kVarBegin,    // {{
  kVarEnd,      // }}
  kBlockBegin,  // {%
  kBlockEnd,    // %}
  kName,        // identifiers and keywords (text)
  kString,      // a string literal, unescaped (text)
  kInt,         // (int_value)
  kFloat,       // (float_value)
  kOp,          // an operator or bracket (text)
  kEof,
};

struct Token {
  TokenKind kind = TokenKind::kEof;
  std::string text;
  int64_t int_value = 0;
  double float_value = 0;
  int line = 1;
};

// Limits that keep hostile templates cheap: the source size and how deep brackets may nest.
inline constexpr size_t kMaxTemplateBytes = size_t{1} << 20;
inline constexpr int kMaxNesting = 64;

// Errors are INVALID_ARGUMENT naming the line.
absl::StatusOr<std::vector<Token>> Lex(std::string_view source);

}  // namespace gla::chat
