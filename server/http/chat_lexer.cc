#include "server/http/chat_lexer.h"

#include <cerrno>
#include <cstdlib>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace gla::chat {
namespace {

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsNameStart(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool IsNameChar(char c) { return IsNameStart(c) || IsDigit(c); }

absl::Status LexError(int line, std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("chat template line ", line, ": ", std::string(what)));
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    *out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    *out += static_cast<char>(0xC0 | (cp >> 6));
    *out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    *out += static_cast<char>(0xE0 | (cp >> 12));
    *out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    *out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    *out += static_cast<char>(0xF0 | (cp >> 18));
    *out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    *out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    *out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

int HexValue(char c) {
  if (IsDigit(c)) return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Python's "unicode-escape" decoding, which jinja2 applies to string literals: unknown escapes
// keep their backslash.
absl::StatusOr<std::string> Unescape(std::string_view s, int line) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\' || i + 1 == s.size()) {
      out += s[i];
      continue;
    }
    const char c = s[++i];
    switch (c) {
      case '\n': break;  // a backslash-newline continues the line
      case '\\': out += '\\'; break;
      case '\'': out += '\''; break;
      case '"': out += '"'; break;
      case 'a': out += '\a'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      case 't': out += '\t'; break;
      case 'v': out += '\v'; break;
      case 'x':
      case 'u':
      case 'U': {
        const size_t n = c == 'x' ? 2 : c == 'u' ? 4 : 8;
        uint32_t cp = 0;
        if (i + n >= s.size()) return LexError(line, "truncated \\x, \\u or \\U escape");
        for (size_t k = 1; k <= n; ++k) {
          const int h = HexValue(s[i + k]);
          if (h < 0) return LexError(line, "bad \\x, \\u or \\U escape");
          cp = cp * 16 + static_cast<uint32_t>(h);
        }
        if (cp > 0x10FFFF) return LexError(line, "escape outside Unicode");
        AppendUtf8(cp, &out);
        i += n;
        break;
      }
      default:
        if (c >= '0' && c <= '7') {  // up to three octal digits
          uint32_t cp = 0;
          size_t k = 0;
          while (k < 3 && i + k < s.size() && s[i + k] >= '0' && s[i + k] <= '7') cp = cp * 8 + (s[i + k++] - '0');
          AppendUtf8(cp, &out);
          i += k - 1;
        } else {
          out += '\\';
          out += c;
        }
    }
  }
  return out;
}

class Lexer {
 public:
  explicit Lexer(std::string src) : src_(std::move(src)) {}

  absl::StatusOr<std::vector<Token>> Run() {
    size_t pos = 0;
    bool line_starting = true;  // jinja2: the text before a tag starts a line (lstrip_blocks)
    while (pos < src_.size()) {
      size_t tag = src_.find('{', pos);
      while (tag != std::string::npos && tag + 1 < src_.size() && src_[tag + 1] != '{' && src_[tag + 1] != '%' &&
             src_[tag + 1] != '#') {
        tag = src_.find('{', tag + 1);
      }
      if (tag == std::string::npos || tag + 1 >= src_.size()) {
        Emit(TokenKind::kData, src_.substr(pos));
        break;
      }
      const char kind = src_[tag + 1];
      const char sign = tag + 2 < src_.size() ? src_[tag + 2] : '\0';
      std::string text = src_.substr(pos, tag - pos);
      if (sign == '-') {
        size_t end = text.size();
        while (end > 0 && IsSpace(text[end - 1])) --end;
        text.resize(end);
      } else if (sign != '+' && kind != '{') {
        // lstrip_blocks: spaces and tabs between the line's start and a block or comment tag go.
        const size_t l_pos = text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1;
        if (l_pos > 0 || line_starting) {
          bool blank = l_pos < text.size();
          for (size_t i = l_pos; i < text.size(); ++i) blank = blank && IsSpace(text[i]);
          if (blank) text.resize(l_pos);
        }
      }
      Emit(TokenKind::kData, std::move(text));
      Advance(tag);
      pos = tag + 2 + ((sign == '-' || sign == '+') ? 1 : 0);
      const int tag_line = line_;
      if (kind == '#') {
        const size_t end = src_.find("#}", pos);
        if (end == std::string::npos) return LexError(tag_line, "unterminated comment: missing '#}'");
        const char before = end > pos ? src_[end - 1] : '\0';
        pos = AfterEnd(end + 2, before, /*trim=*/true);
      } else {
        const bool block = kind == '%';
        Emit(block ? TokenKind::kBlockBegin : TokenKind::kVarBegin, "");
        auto end = LexTag(pos, block);
        if (!end.ok()) return end.status();
        pos = *end;
      }
      line_starting = pos > 0 && src_[pos - 1] == '\n';
    }
    Emit(TokenKind::kEof, "");
    return std::move(tokens_);
  }

 private:
  // Counts lines up to `pos` (the lexer only moves forward).
  void Advance(size_t pos) {
    for (; counted_ < pos && counted_ < src_.size(); ++counted_) line_ += src_[counted_] == '\n';
  }
  void Emit(TokenKind kind, std::string text) {
    if (kind == TokenKind::kData && text.empty()) return;
    Token t;
    t.kind = kind;
    t.text = std::move(text);
    t.line = line_;
    tokens_.push_back(std::move(t));
  }
  // Past an end marker at [.., p): `-` strips all following whitespace, `+` nothing, else
  // trim_blocks drops one newline (block and comment tags only).
  size_t AfterEnd(size_t p, char before, bool trim) {
    if (before == '-') {
      while (p < src_.size() && IsSpace(src_[p])) ++p;
    } else if (before != '+' && trim && p < src_.size() && src_[p] == '\n') {
      ++p;
    }
    Advance(p);
    return p;
  }

  absl::StatusOr<size_t> LexTag(size_t p, bool block) {
    std::string brackets;  // open ( [ { not yet closed: end markers inside them are operators
    const std::string_view end = block ? "%}" : "}}";
    while (true) {
      while (p < src_.size() && IsSpace(src_[p])) ++p;
      Advance(p);
      if (p >= src_.size()) {
        return LexError(line_, absl::StrCat("unexpected end of template: missing '", std::string(end), "'"));
      }
      if (brackets.empty()) {
        const std::string_view rest = std::string_view(src_).substr(p);
        if (rest.substr(0, 2) == end) {
          Emit(block ? TokenKind::kBlockEnd : TokenKind::kVarEnd, "");
          return AfterEnd(p + 2, '\0', block);
        }
        if ((rest[0] == '-' || (block && rest[0] == '+')) && rest.substr(1, 2) == end) {
          Emit(block ? TokenKind::kBlockEnd : TokenKind::kVarEnd, "");
          return AfterEnd(p + 3, rest[0], block);
        }
      }
      const char c = src_[p];
      if (IsNameStart(c)) {
        size_t q = p;
        while (q < src_.size() && IsNameChar(src_[q])) ++q;
        Emit(TokenKind::kName, src_.substr(p, q - p));
        p = q;
      } else if (IsDigit(c)) {
        auto q = LexNumber(p);
        if (!q.ok()) return q.status();
        p = *q;
      } else if (c == '\'' || c == '"') {
        size_t q = p + 1;
        while (q < src_.size() && src_[q] != c) q += src_[q] == '\\' ? 2 : 1;
        if (q >= src_.size()) return LexError(line_, "unterminated string literal");
        auto s = Unescape(std::string_view(src_).substr(p + 1, q - p - 1), line_);
        if (!s.ok()) return s.status();
        Emit(TokenKind::kString, std::move(*s));
        p = q + 1;
      } else {
        static constexpr std::string_view kTwo[] = {"//", "**", "==", "!=", "<=", ">="};
        std::string op(1, c);
        for (std::string_view two : kTwo) {
          if (std::string_view(src_).substr(p, 2) == two) op = std::string(two);
        }
        if (op.size() == 1 && std::string_view("+-/*%~[](){}<>=.:|,;").find(c) == std::string_view::npos) {
          return LexError(line_, absl::StrCat("unexpected character '", std::string(1, c), "'"));
        }
        if (c == '(' || c == '[' || c == '{') {
          if (static_cast<int>(brackets.size()) >= kMaxNesting) {
            return LexError(line_, absl::StrCat("brackets nested deeper than ", kMaxNesting));
          }
          brackets += c;
        } else if (c == ')' || c == ']' || c == '}') {
          const char open = c == ')' ? '(' : c == ']' ? '[' : '{';
          if (brackets.empty() || brackets.back() != open) {
            return LexError(line_, absl::StrCat("unexpected '", std::string(1, c), "'"));
          }
          brackets.pop_back();
        }
        Emit(TokenKind::kOp, op);
        p += op.size();
      }
    }
  }

  absl::StatusOr<size_t> LexNumber(size_t p) {
    auto digits = [&](size_t q) {
      while (q < src_.size() && (IsDigit(src_[q]) || (src_[q] == '_' && q + 1 < src_.size() && IsDigit(src_[q + 1])))) {
        ++q;
      }
      return q;
    };
    size_t q = digits(p);
    bool is_float = false;
    // jinja2: no float right after a '.', so that foo.0.1 is two item lookups.
    const bool after_dot = p > 0 && src_[p - 1] == '.';
    if (!after_dot && q + 1 < src_.size() && src_[q] == '.' && IsDigit(src_[q + 1])) {
      q = digits(q + 1);
      is_float = true;
    }
    if (!after_dot && q < src_.size() && (src_[q] == 'e' || src_[q] == 'E')) {
      size_t r = q + 1;
      if (r < src_.size() && (src_[r] == '+' || src_[r] == '-')) ++r;
      if (r < src_.size() && IsDigit(src_[r])) {
        q = digits(r);
        is_float = true;
      }
    }
    std::string text;
    for (size_t i = p; i < q; ++i) {
      if (src_[i] != '_') text += src_[i];
    }
    Token t;
    t.line = line_;
    if (is_float) {
      t.kind = TokenKind::kFloat;
      t.float_value = std::strtod(text.c_str(), nullptr);
    } else {
      t.kind = TokenKind::kInt;
      errno = 0;
      char* endp = nullptr;
      const long long v = std::strtoll(text.c_str(), &endp, 10);
      if (errno == ERANGE) return LexError(line_, "integer literal out of range");
      t.int_value = v;
    }
    tokens_.push_back(std::move(t));
    return q;
  }

  std::string src_;
  std::vector<Token> tokens_;
  int line_ = 1;
  size_t counted_ = 0;
};

}  // namespace

absl::StatusOr<std::vector<Token>> Lex(std::string_view source) {
  if (source.size() > kMaxTemplateBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("chat template of ", source.size(), " bytes is over the limit of ", kMaxTemplateBytes));
  }
  // jinja2 turns \r\n and \r into \n and drops one trailing newline (keep_trailing_newline=False).
  std::string src;
  src.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      src += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      src += source[i];
    }
  }
  if (!src.empty() && src.back() == '\n') src.pop_back();
  return Lexer(std::move(src)).Run();
}

}  // namespace gla::chat
