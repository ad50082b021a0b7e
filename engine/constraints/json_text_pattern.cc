#include "engine/constraints/json_text_pattern.h"

#include <cctype>
#include <cstdint>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace gla::constraints {

namespace {

// The characters JSON writes escaped inside a string.
bool Special(int b) { return b < 0x20 || b == '"' || b == '\\'; }

// The specials a one-character atom takes, found by compiling it alone.
std::vector<int> SpecialsOf(const std::string& atom) {
  std::vector<int> out;
  absl::StatusOr<Regex> re = Regex::Compile(atom);
  if (!re.ok()) return out;  // left as written: the whole pattern's compile says what is wrong
  for (int b = 0; b < 0x80; ++b)
    if (Special(b) && re->Matches(std::string(1, static_cast<char>(b)))) out.push_back(b);
  return out;
}

// The JSON text of each special, as regex alternatives: \" \\, the short escapes, and \u00XX for
// every control, the controls grouped by their high digit into one class of low digits (a pattern
// like . takes 30 of them: one alternative each would multiply the automaton).
std::string Escapes(const std::vector<int>& specials) {
  std::string out;
  auto add = [&](const std::string& e) { absl::StrAppend(&out, out.empty() ? "" : "|", e); };
  std::string lows[2];
  for (int b : specials) {
    if (b == '"') add(R"(\\")");
    if (b == '\\') add(R"(\\\\)");
    if (b >= 0x20) continue;
    switch (b) {
      case 0x08: add(R"(\\b)"); break;
      case 0x0c: add(R"(\\f)"); break;
      case 0x0a: add(R"(\\n)"); break;
      case 0x0d: add(R"(\\r)"); break;
      case 0x09: add(R"(\\t)"); break;
      default: break;
    }
    const int low = b & 0xf;
    lows[b >> 4] += low < 10 ? std::to_string(low) : absl::StrFormat("%c%c", 'a' + low - 10, 'A' + low - 10);
  }
  std::string u;
  for (int high = 0; high < 2; ++high)
    if (!lows[high].empty()) absl::StrAppend(&u, u.empty() ? "" : "|", high, "[", lows[high], "]");
  if (!u.empty()) add(absl::StrCat(R"(\\u00(?:)", u, ")"));
  return out;
}

// The end (exclusive) of the escape at p[i] == '\\'.
size_t EscapeEnd(std::string_view p, size_t i) {
  size_t j = i + 1;
  if (j >= p.size()) return p.size();
  const char e = p[j];
  if (e == 'x') return std::min(p.size(), j + 3);
  if (e == 'u') {
    if (j + 1 < p.size() && p[j + 1] == '{') {
      const size_t close = p.find('}', j);
      return close == std::string_view::npos ? p.size() : close + 1;
    }
    return std::min(p.size(), j + 5);
  }
  if (e == 'c') return std::min(p.size(), j + 2);
  return j + 1;
}

// A positive class's items less the specials: \s becomes the whitespace that is not a control,
// single specials go, ASCII ranges are split around them. nullopt: an item this does not rewrite
// (\S, \W, \D inside a positive class).
std::optional<std::string> ClassWithoutSpecials(std::string_view body) {
  std::string out;
  size_t i = 0;
  auto single = [&](size_t at, int* code, size_t* end) {  // a plain or \xHH character
    if (body[at] == '\\') {
      *end = EscapeEnd(body, at);
      const std::string_view esc = body.substr(at, *end - at);
      if (esc.size() == 4 && esc[1] == 'x') {
        if (!std::isxdigit(static_cast<unsigned char>(esc[2])) || !std::isxdigit(static_cast<unsigned char>(esc[3])))
          return false;  // not an escape the regex layer takes: left as written, its compile says why
        *code = std::stoi(std::string(esc.substr(2)), nullptr, 16);
        return true;
      }
      if (esc.size() == 2 && !std::isalnum(static_cast<unsigned char>(esc[1]))) {
        *code = static_cast<unsigned char>(esc[1]);
        return true;
      }
      return false;
    }
    *end = at + 1;
    *code = static_cast<unsigned char>(body[at]);
    return true;
  };
  auto write = [&](int c) { absl::StrAppendFormat(&out, "\\x%02x", c); };
  while (i < body.size()) {
    int a = 0;
    size_t end = 0;
    if (body[i] == '\\' && i + 1 < body.size() && std::string_view("sSWD").find(body[i + 1]) != std::string_view::npos) {
      if (body[i + 1] != 's') return std::nullopt;
      absl::StrAppend(&out, R"( \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff)");
      i += 2;
      continue;
    }
    if (!single(i, &a, &end)) {  // \d, \w, \uHHHH, ...: as written
      const size_t e = EscapeEnd(body, i);
      out.append(body.substr(i, e - i));
      i = e;
      continue;
    }
    int b = a;
    size_t next = end;
    if (end + 1 < body.size() && body[end] == '-') {
      size_t end2 = 0;
      if (single(end + 1, &b, &end2)) next = end2;
      else b = a;
    }
    if (b < a || a >= 0x80 || b >= 0x80) {  // past ASCII: as written (no specials there)
      out.append(body.substr(i, next - i));
      i = next;
      continue;
    }
    for (int c = a; c <= b;) {  // the runs between specials
      if (Special(c)) {
        ++c;
        continue;
      }
      int d = c;
      while (d + 1 <= b && !Special(d + 1)) ++d;
      write(c);
      if (d > c) out += "-", write(d);
      c = d + 1;
    }
    i = next;
  }
  return out;
}

}  // namespace

PatternAnchors SplitAnchors(std::string p) {
  PatternAnchors a;
  a.head = !p.empty() && p[0] == '^';
  if (a.head) p.erase(0, 1);
  size_t slashes = 0;  // backslashes before a final $: an odd count escapes it
  for (size_t i = p.size() >= 2 ? p.size() - 1 : 0; i-- > 0 && p[i] == '\\';) ++slashes;
  a.tail = !p.empty() && p.back() == '$' && slashes % 2 == 0;
  if (a.tail) p.pop_back();
  a.top_alternation = FindTopLevel(p, "|") != std::string_view::npos;
  a.body = std::move(p);
  return a;
}

absl::StatusOr<std::string> PatternOverJsonText(std::string_view p) {
  static constexpr char kRaw[] = R"("\\\x00-\x1f)";  // appended to a negated class: no raw special
  std::string out;
  size_t i = 0;
  while (i < p.size()) {
    const char c = p[i];
    std::string atom, base;
    bool rewrite = true;
    if (c == '\\') {
      const size_t end = EscapeEnd(p, i);
      atom = std::string(p.substr(i, end - i));
      i = end;
      const char e = atom.size() > 1 ? atom[1] : 0;
      // \S is "not \s": the rest of it is a class of neither \s nor a special.
      if (e == 'S' || e == 'W' || e == 'D') base = absl::StrCat("[^\\", std::string(1, static_cast<char>(std::tolower(e))), kRaw, "]");
      else if (e == 's') base = absl::StrCat(R"([^\S)", kRaw, "]");
      else if (e == 'b' || e == 'B' || (e >= '1' && e <= '9')) rewrite = false;  // not a character: the compile refuses
    } else if (c == '[') {
      size_t j = i + 1;
      const bool negated = j < p.size() && p[j] == '^';
      if (negated) ++j;
      if (j < p.size() && p[j] == ']') ++j;
      while (j < p.size() && p[j] != ']') j = p[j] == '\\' ? EscapeEnd(p, j) : j + 1;
      if (j >= p.size()) return absl::InvalidArgumentError("pattern: a class without its ]");
      atom = std::string(p.substr(i, j + 1 - i));
      i = j + 1;
      if (negated) {
        base = absl::StrCat(atom.substr(0, atom.size() - 1), kRaw, "]");
      } else {
        std::optional<std::string> body = ClassWithoutSpecials(std::string_view(atom).substr(1, atom.size() - 2));
        if (!body) return absl::InvalidArgumentError("a character class with \\S, \\W or \\D beside other items");
        base = body->empty() ? "" : absl::StrCat("[", *body, "]");
      }
    } else if (c == '.') {
      atom = ".";
      ++i;
      base = absl::StrCat(R"([^\u2028\u2029)", kRaw, "]");
    } else if (Special(static_cast<unsigned char>(c))) {  // a raw " or control in the pattern
      atom = std::string(1, c);
      ++i;
    } else {
      out += c;
      ++i;
      continue;
    }
    const std::vector<int> specials = rewrite ? SpecialsOf(atom) : std::vector<int>{};
    if (specials.empty()) {
      out += atom;
      continue;
    }
    absl::StrAppend(&out, "(?:", base, base.empty() ? "" : "|", Escapes(specials), ")");
  }
  return out;
}

bool WritesOnlyJsonStrings(const Regex& re) {
  static const Regex* json_string = [] {
    absl::StatusOr<Regex> r = Regex::Compile(R"("([^"\\\x00-\x1f]|\\(["\\/bfnrt]|u[0-9a-fA-F]{4}))*")");
    return new Regex(std::move(*r));
  }();
  if (re.start() == Regex::kDead) return true;
  std::set<std::pair<int, int>> seen = {{re.start(), json_string->start()}};
  std::vector<std::pair<int, int>> todo(seen.begin(), seen.end());
  while (!todo.empty()) {
    const auto [a, b] = todo.back();
    todo.pop_back();
    if (re.Accepting(a) && !json_string->Accepting(b)) return false;
    for (int byte = 0; byte < 0x100; ++byte) {
      const int na = re.Next(a, static_cast<uint8_t>(byte));
      if (na == Regex::kDead) continue;
      const int nb = json_string->Next(b, static_cast<uint8_t>(byte));
      if (nb == Regex::kDead) return false;
      if (seen.insert({na, nb}).second) todo.emplace_back(na, nb);
    }
  }
  return true;
}

}  // namespace gla::constraints
