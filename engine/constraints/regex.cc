#include "engine/constraints/regex.h"

#include <algorithm>
#include <map>
#include <unordered_map>
#include <utility>

#include "absl/strings/str_cat.h"

namespace gla::constraints {

namespace {

constexpr uint32_t kMaxCodePoint = 0x10FFFF;

// A set of code points: sorted, disjoint, non-adjacent ranges.
using Ranges = std::vector<std::pair<uint32_t, uint32_t>>;

Ranges Normalize(Ranges r) {
  std::sort(r.begin(), r.end());
  Ranges out;
  for (const auto& [lo, hi] : r) {
    if (!out.empty() && lo <= out.back().second + 1) out.back().second = std::max(out.back().second, hi);
    else out.emplace_back(lo, hi);
  }
  return out;
}

// Every code point (surrogates excluded: UTF-8 cannot carry them) not in r.
Ranges Complement(const Ranges& r) {
  Ranges out;
  uint32_t next = 0;
  for (const auto& [lo, hi] : Normalize(r)) {
    if (lo > next) out.emplace_back(next, lo - 1);
    next = hi + 1;
  }
  if (next <= kMaxCodePoint) out.emplace_back(next, kMaxCodePoint);
  return out;
}

Ranges WithoutSurrogates(const Ranges& r) {
  Ranges out;
  for (auto [lo, hi] : r) {
    if (hi < 0xD800 || lo > 0xDFFF) {
      out.emplace_back(lo, hi);
      continue;
    }
    if (lo < 0xD800) out.emplace_back(lo, 0xD7FF);
    if (hi > 0xDFFF) out.emplace_back(0xE000, hi);
  }
  return out;
}

const Ranges& Digits() {
  static const Ranges r = {{'0', '9'}};
  return r;
}
const Ranges& Word() {
  static const Ranges r = Normalize({{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}});
  return r;
}
const Ranges& Space() {  // ECMAScript's WhiteSpace and LineTerminator
  static const Ranges r = Normalize({{'\t', '\r'}, {' ', ' '}, {0xA0, 0xA0}, {0x1680, 0x1680}, {0x2000, 0x200A},
                                     {0x2028, 0x2029}, {0x202F, 0x202F}, {0x205F, 0x205F}, {0x3000, 0x3000},
                                     {0xFEFF, 0xFEFF}});
  return r;
}

int EncodeUtf8(uint32_t c, uint8_t* out) {
  if (c < 0x80) {
    out[0] = static_cast<uint8_t>(c);
    return 1;
  }
  if (c < 0x800) {
    out[0] = static_cast<uint8_t>(0xC0 | (c >> 6));
    out[1] = static_cast<uint8_t>(0x80 | (c & 0x3F));
    return 2;
  }
  if (c < 0x10000) {
    out[0] = static_cast<uint8_t>(0xE0 | (c >> 12));
    out[1] = static_cast<uint8_t>(0x80 | ((c >> 6) & 0x3F));
    out[2] = static_cast<uint8_t>(0x80 | (c & 0x3F));
    return 3;
  }
  out[0] = static_cast<uint8_t>(0xF0 | (c >> 18));
  out[1] = static_cast<uint8_t>(0x80 | ((c >> 12) & 0x3F));
  out[2] = static_cast<uint8_t>(0x80 | ((c >> 6) & 0x3F));
  out[3] = static_cast<uint8_t>(0x80 | (c & 0x3F));
  return 4;
}

using ByteSeq = std::vector<std::pair<uint8_t, uint8_t>>;  // one byte range per position

// The code points [lo, hi] as sequences of byte ranges (the classic UTF-8 range split): first at
// the encoded-length boundaries, then until every continuation byte spans its full range or
// lo and hi share the prefix above it.
void Utf8Sequences(uint32_t lo, uint32_t hi, std::vector<ByteSeq>* out) {
  static constexpr uint32_t kLengthEnds[] = {0x7F, 0x7FF, 0xFFFF, kMaxCodePoint};
  for (uint32_t end : kLengthEnds) {
    if (lo <= end && hi > end) {
      Utf8Sequences(lo, end, out);
      Utf8Sequences(end + 1, hi, out);
      return;
    }
  }
  for (int i = 1; i < 4; ++i) {
    const uint32_t m = (1u << (6 * i)) - 1;
    if ((lo & ~m) != (hi & ~m)) {
      if ((lo & m) != 0) {
        Utf8Sequences(lo, lo | m, out);
        Utf8Sequences((lo | m) + 1, hi, out);
        return;
      }
      if ((hi & m) != m) {
        Utf8Sequences(lo, (hi & ~m) - 1, out);
        Utf8Sequences(hi & ~m, hi, out);
        return;
      }
    }
  }
  uint8_t a[4], b[4];
  const int n = EncodeUtf8(lo, a);
  EncodeUtf8(hi, b);
  ByteSeq seq;
  for (int i = 0; i < n; ++i) seq.emplace_back(a[i], b[i]);
  out->push_back(std::move(seq));
}

// ---- Syntax tree
struct Node {
  enum Kind { kEmpty, kSet, kConcat, kAlt, kRepeat } kind = kEmpty;
  Ranges set;             // kSet
  std::vector<int> kids;  // kConcat, kAlt; kRepeat: one
  int min = 0, max = 0;   // kRepeat; max -1: unbounded
};

class Parser {
 public:
  Parser(std::string_view p, const RegexLimits& limits) : p_(p), limits_(limits) {}

  absl::StatusOr<int> Parse() {
    if (!p_.empty() && p_.front() == '^') ++pos_;
    end_ = p_.size();
    if (end_ > pos_ && p_.back() == '$' && !EscapedAt(end_ - 1)) --end_;
    absl::StatusOr<int> root = Alternation(0);
    if (!root.ok()) return root;
    if (pos_ != end_) return Error(p_[pos_] == ')' ? "unbalanced ')'" : "unexpected character");
    return root;
  }
  std::vector<Node>& nodes() { return nodes_; }

 private:
  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat("pattern: ", what, " at offset ", pos_));
  }
  absl::Status Unsupported(absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat("pattern: ", what, " (offset ", pos_,
                                                   ") cannot be enforced by a finite automaton: refused"));
  }
  // Whether p_[i] is preceded by an odd number of backslashes.
  bool EscapedAt(size_t i) const {
    size_t n = 0;
    while (i > n && p_[i - 1 - n] == '\\') ++n;
    return n % 2 == 1;
  }
  int Add(Node n) {
    nodes_.push_back(std::move(n));
    return static_cast<int>(nodes_.size()) - 1;
  }
  bool AtEnd() const { return pos_ >= end_; }

  absl::StatusOr<int> Alternation(int depth) {
    if (depth > 200) return absl::ResourceExhaustedError("pattern: groups nested more than 200 deep");
    Node alt;
    alt.kind = Node::kAlt;
    for (;;) {
      absl::StatusOr<int> c = Concatenation(depth);
      if (!c.ok()) return c;
      alt.kids.push_back(*c);
      if (AtEnd() || p_[pos_] != '|') break;
      ++pos_;
    }
    return alt.kids.size() == 1 ? alt.kids[0] : Add(std::move(alt));
  }

  absl::StatusOr<int> Concatenation(int depth) {
    Node cat;
    cat.kind = Node::kConcat;
    while (!AtEnd() && p_[pos_] != '|' && p_[pos_] != ')') {
      absl::StatusOr<int> atom = Atom(depth);
      if (!atom.ok()) return atom;
      absl::StatusOr<int> q = Quantified(*atom);
      if (!q.ok()) return q;
      cat.kids.push_back(*q);
    }
    if (cat.kids.empty()) return Add(Node{});
    return cat.kids.size() == 1 ? cat.kids[0] : Add(std::move(cat));
  }

  // {n}, {n,}, {n,m} at pos_: true and the bounds, or false (then '{' is a literal).
  bool Braces(int* min, int* max, size_t* after) const {
    size_t i = pos_ + 1;
    auto number = [&](int* v) {
      const size_t s = i;
      int64_t x = 0;
      while (i < end_ && p_[i] >= '0' && p_[i] <= '9') x = std::min<int64_t>(x * 10 + (p_[i++] - '0'), 1 << 30);
      *v = static_cast<int>(x);
      return i > s;
    };
    if (!number(min)) return false;
    *max = *min;
    if (i < end_ && p_[i] == ',') {
      ++i;
      if (!number(max)) *max = -1;
    }
    if (i >= end_ || p_[i] != '}') return false;
    *after = i + 1;
    return true;
  }

  absl::StatusOr<int> Quantified(int atom) {
    if (AtEnd()) return atom;
    int min = 0, max = 0;
    const char c = p_[pos_];
    size_t after = pos_ + 1;
    if (c == '*') min = 0, max = -1;
    else if (c == '+') min = 1, max = -1;
    else if (c == '?') min = 0, max = 1;
    else if (c != '{' || !Braces(&min, &max, &after)) return atom;
    if (min > limits_.max_repeat || max > limits_.max_repeat)
      return absl::ResourceExhaustedError(
          absl::StrCat("pattern: a repeat count over ", limits_.max_repeat, " at offset ", pos_));
    if (max >= 0 && max < min) return Error("a repeat range out of order");
    pos_ = after;
    if (!AtEnd() && p_[pos_] == '?') ++pos_;  // lazy: the same language
    int unused_min = 0, unused_max = 0;
    size_t unused_after = 0;
    if (!AtEnd() && (p_[pos_] == '*' || p_[pos_] == '+' || p_[pos_] == '?' ||
                     (p_[pos_] == '{' && Braces(&unused_min, &unused_max, &unused_after))))
      return Error("nothing to repeat");
    Node r;
    r.kind = Node::kRepeat;
    r.kids = {atom};
    r.min = min;
    r.max = max;
    return Add(std::move(r));
  }

  // One UTF-8 code point of the pattern.
  absl::StatusOr<uint32_t> CodePoint() {
    const uint8_t b = static_cast<uint8_t>(p_[pos_]);
    int n = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 0;
    if (n == 0 || pos_ + n > end_) return Error("invalid UTF-8");
    uint32_t c = n == 1 ? b : n == 2 ? (b & 0x1F) : n == 3 ? (b & 0x0F) : (b & 0x07);
    for (int i = 1; i < n; ++i) {
      const uint8_t x = static_cast<uint8_t>(p_[pos_ + i]);
      if ((x >> 6) != 2) return Error("invalid UTF-8");
      c = (c << 6) | (x & 0x3F);
    }
    static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (c < kMin[n] || c > kMaxCodePoint || (c >= 0xD800 && c <= 0xDFFF)) return Error("invalid UTF-8");
    pos_ += n;
    return c;
  }

  absl::StatusOr<uint32_t> Hex(int digits) {
    uint32_t v = 0;
    for (int i = 0; i < digits; ++i, ++pos_) {
      if (AtEnd()) return Error("a short hex escape");
      const char c = p_[pos_];
      const int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
      if (d < 0) return Error("a bad hex escape");
      v = v * 16 + static_cast<uint32_t>(d);
    }
    return v;
  }

  // After a backslash: the set it stands for (a single code point is a one-element set).
  absl::StatusOr<Ranges> Escape(bool in_class) {
    if (AtEnd()) return Error("a pattern ending in '\\'");
    const char c = p_[pos_++];
    auto one = [](uint32_t v) { return Ranges{{v, v}}; };
    switch (c) {
      case 'd': return Digits();
      case 'D': return Complement(Digits());
      case 'w': return Word();
      case 'W': return Complement(Word());
      case 's': return Space();
      case 'S': return Complement(Space());
      case 'n': return one('\n');
      case 'r': return one('\r');
      case 't': return one('\t');
      case 'f': return one('\f');
      case 'v': return one('\v');
      case '0': return one(0);
      case 'b':
        if (in_class) return one('\b');
        --pos_;
        return Unsupported("a word boundary \\b");
      case 'B': --pos_; return Unsupported("a word boundary \\B");
      case 'k': --pos_; return Unsupported("a backreference \\k<...>");
      case 'p': case 'P': --pos_; return Unsupported("a Unicode property escape");
      case 'c': {
        if (AtEnd() || !((p_[pos_] >= 'a' && p_[pos_] <= 'z') || (p_[pos_] >= 'A' && p_[pos_] <= 'Z')))
          return Error("a bad control escape");
        return one(static_cast<uint32_t>(p_[pos_++]) % 32);
      }
      case 'x': {
        absl::StatusOr<uint32_t> v = Hex(2);
        if (!v.ok()) return v.status();
        return one(*v);
      }
      case 'u': {
        if (!AtEnd() && p_[pos_] == '{') {
          ++pos_;
          uint32_t v = 0;
          int n = 0;
          while (!AtEnd() && p_[pos_] != '}') {
            absl::StatusOr<uint32_t> d = Hex(1);
            if (!d.ok()) return d.status();
            v = v * 16 + *d;
            if (++n > 6 || v > kMaxCodePoint) return Error("a code point out of range");
          }
          if (AtEnd() || n == 0) return Error("an unterminated \\u{...}");
          ++pos_;
          return one(v);
        }
        absl::StatusOr<uint32_t> v = Hex(4);
        if (!v.ok()) return v.status();
        if (*v >= 0xD800 && *v <= 0xDBFF && pos_ + 1 < end_ && p_[pos_] == '\\' && p_[pos_ + 1] == 'u') {
          const size_t save = pos_;
          pos_ += 2;
          absl::StatusOr<uint32_t> lo = Hex(4);
          if (lo.ok() && *lo >= 0xDC00 && *lo <= 0xDFFF) return one(0x10000 + ((*v - 0xD800) << 10) + (*lo - 0xDC00));
          pos_ = save;
        }
        if (*v >= 0xD800 && *v <= 0xDFFF) return Error("a lone surrogate");
        return one(*v);
      }
      default: break;
    }
    if (c >= '1' && c <= '9') {
      --pos_;
      return Unsupported("a backreference");
    }
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
      --pos_;
      return Error(absl::StrCat("an unknown escape \\", std::string(1, c)));
    }
    --pos_;  // punctuation (or any other code point) escaped: itself
    absl::StatusOr<uint32_t> v = CodePoint();
    if (!v.ok()) return v.status();
    return one(*v);
  }

  absl::StatusOr<int> Class() {
    bool negate = false;
    if (!AtEnd() && p_[pos_] == '^') negate = true, ++pos_;
    Ranges set;
    bool first = true;
    for (;;) {
      if (AtEnd()) return Error("an unterminated class [...]");
      if (p_[pos_] == ']' && !first) break;
      first = false;
      auto item = [&]() -> absl::StatusOr<Ranges> {
        if (p_[pos_] == '\\') {
          ++pos_;
          return Escape(/*in_class=*/true);
        }
        absl::StatusOr<uint32_t> v = CodePoint();
        if (!v.ok()) return v.status();
        return Ranges{{*v, *v}};
      };
      absl::StatusOr<Ranges> lo = item();
      if (!lo.ok()) return lo.status();
      if (pos_ + 1 < end_ && p_[pos_] == '-' && p_[pos_ + 1] != ']') {
        ++pos_;
        absl::StatusOr<Ranges> hi = item();
        if (!hi.ok()) return hi.status();
        if (lo->size() != 1 || hi->size() != 1 || (*lo)[0].first != (*lo)[0].second ||
            (*hi)[0].first != (*hi)[0].second)
          return Error("a class range with a class at one end");
        if ((*hi)[0].first < (*lo)[0].first) return Error("a class range out of order");
        set.emplace_back((*lo)[0].first, (*hi)[0].first);
      } else {
        set.insert(set.end(), lo->begin(), lo->end());
      }
    }
    ++pos_;  // ']'
    Node n;
    n.kind = Node::kSet;
    n.set = negate ? Complement(set) : Normalize(set);
    return Add(std::move(n));
  }

  absl::StatusOr<int> Atom(int depth) {
    const char c = p_[pos_];
    Node n;
    n.kind = Node::kSet;
    switch (c) {
      case '(': {
        ++pos_;
        if (!AtEnd() && p_[pos_] == '?') {
          ++pos_;
          if (!AtEnd() && p_[pos_] == ':') {
            ++pos_;
          } else if (!AtEnd() && (p_[pos_] == '<' || p_[pos_] == 'P') &&
                     !(pos_ + 1 < end_ && p_[pos_] == '<' && (p_[pos_ + 1] == '=' || p_[pos_ + 1] == '!'))) {
            if (p_[pos_] == 'P') ++pos_;
            if (AtEnd() || p_[pos_] != '<') return Error("a bad group name");
            while (!AtEnd() && p_[pos_] != '>') ++pos_;  // a named group: its name is not needed
            if (AtEnd()) return Error("an unterminated group name");
            ++pos_;
          } else if (!AtEnd() && (p_[pos_] == '=' || p_[pos_] == '!' || p_[pos_] == '<')) {
            pos_ -= 2;
            return Unsupported("a lookaround (?= (?! (?<= (?<!");
          } else {
            pos_ -= 2;
            return Unsupported("an inline flag or other (?...) group");
          }
        }
        absl::StatusOr<int> inner = Alternation(depth + 1);
        if (!inner.ok()) return inner;
        if (AtEnd() || p_[pos_] != ')') return Error("a '(' without its ')'");
        ++pos_;
        return inner;
      }
      case ')': return Error("unbalanced ')'");
      case '[': ++pos_; return Class();
      case '.': ++pos_; n.set = Complement({{'\n', '\n'}, {'\r', '\r'}, {0x2028, 0x2029}}); return Add(std::move(n));
      case '*': case '+': case '?': return Error("nothing to repeat");
      case '^': case '$': return Unsupported("an anchor inside the pattern (only a leading ^ and a trailing $)");
      case '\\': {
        ++pos_;
        absl::StatusOr<Ranges> r = Escape(/*in_class=*/false);
        if (!r.ok()) return r.status();
        n.set = *std::move(r);
        return Add(std::move(n));
      }
      default: {
        absl::StatusOr<uint32_t> v = CodePoint();
        if (!v.ok()) return v.status();
        n.set = {{*v, *v}};
        return Add(std::move(n));
      }
    }
  }

  std::string_view p_;
  const RegexLimits& limits_;
  size_t pos_ = 0, end_ = 0;
  std::vector<Node> nodes_;
};

// ---- Thompson NFA over bytes
struct NfaState {
  std::vector<int> eps;
  int lo = -1, hi = -1, out = -1;  // one byte-range edge (lo < 0: none)
};

class NfaBuilder {
 public:
  NfaBuilder(const std::vector<Node>& nodes, int max_states) : nodes_(nodes), max_states_(max_states) {}

  absl::StatusOr<int> New() {
    if (static_cast<int>(states_.size()) >= max_states_)
      return absl::ResourceExhaustedError(
          absl::StrCat("pattern: more than ", max_states_, " automaton states (its counted repeats are too large)"));
    states_.emplace_back();
    return static_cast<int>(states_.size()) - 1;
  }

  // The fragment of node i from state `in`; returns its exit state.
  absl::StatusOr<int> Emit(int i, int in) {
    const Node& n = nodes_[i];
    switch (n.kind) {
      case Node::kEmpty: return in;
      case Node::kSet: {
        absl::StatusOr<int> end = New();
        if (!end.ok()) return end;
        std::vector<ByteSeq> seqs;
        for (const auto& [lo, hi] : WithoutSurrogates(n.set)) Utf8Sequences(lo, hi, &seqs);
        for (const ByteSeq& seq : seqs) {
          absl::StatusOr<int> s = New();
          if (!s.ok()) return s;
          states_[in].eps.push_back(*s);
          int at = *s;
          for (size_t k = 0; k < seq.size(); ++k) {
            int to = *end;
            if (k + 1 < seq.size()) {
              absl::StatusOr<int> t = New();
              if (!t.ok()) return t;
              to = *t;
            }
            states_[at].lo = seq[k].first;
            states_[at].hi = seq[k].second;
            states_[at].out = to;
            at = to;
          }
        }
        return *end;
      }
      case Node::kConcat: {
        int at = in;
        for (int k : n.kids) {
          absl::StatusOr<int> next = Emit(k, at);
          if (!next.ok()) return next;
          at = *next;
        }
        return at;
      }
      case Node::kAlt: {
        absl::StatusOr<int> end = New();
        if (!end.ok()) return end;
        for (int k : n.kids) {
          absl::StatusOr<int> entry = New();
          if (!entry.ok()) return entry;
          states_[in].eps.push_back(*entry);
          absl::StatusOr<int> out = Emit(k, *entry);
          if (!out.ok()) return out;
          states_[*out].eps.push_back(*end);
        }
        return *end;
      }
      case Node::kRepeat: {
        int at = in;
        for (int k = 0; k < n.min; ++k) {
          absl::StatusOr<int> next = Emit(n.kids[0], at);
          if (!next.ok()) return next;
          at = *next;
        }
        if (n.max < 0) {  // a loop: the body from L back to L
          absl::StatusOr<int> loop = New();
          if (!loop.ok()) return loop;
          states_[at].eps.push_back(*loop);
          absl::StatusOr<int> body = New();
          if (!body.ok()) return body;
          states_[*loop].eps.push_back(*body);
          absl::StatusOr<int> out = Emit(n.kids[0], *body);
          if (!out.ok()) return out;
          states_[*out].eps.push_back(*loop);
          return *loop;
        }
        absl::StatusOr<int> end = New();
        if (!end.ok()) return end;
        for (int k = n.min; k < n.max; ++k) {
          states_[at].eps.push_back(*end);
          absl::StatusOr<int> next = Emit(n.kids[0], at);
          if (!next.ok()) return next;
          at = *next;
        }
        states_[at].eps.push_back(*end);
        return *end;
      }
    }
    return absl::InternalError("pattern: unknown node");
  }

  std::vector<NfaState>& states() { return states_; }

 private:
  const std::vector<Node>& nodes_;
  const int max_states_;
  std::vector<NfaState> states_;
};

// The epsilon closure of *set, kept to what decides the DFA state: the states with a byte edge and
// `accept` (epsilon-only states lead nowhere by themselves), sorted. `stack` and `seen` are scratch
// reused across calls (seen all zero on entry and on return).
void Closure(const std::vector<NfaState>& nfa, int accept, std::vector<int>* set, std::vector<char>* seen,
             std::vector<int>* stack) {
  stack->assign(set->begin(), set->end());
  for (int s : *set) (*seen)[s] = 1;
  while (!stack->empty()) {
    const int s = stack->back();
    stack->pop_back();
    for (int t : nfa[s].eps)
      if (!(*seen)[t]) {
        (*seen)[t] = 1;
        set->push_back(t);
        stack->push_back(t);
      }
  }
  for (int s : *set) (*seen)[s] = 0;
  set->erase(std::remove_if(set->begin(), set->end(), [&](int s) { return nfa[s].lo < 0 && s != accept; }),
             set->end());
  std::sort(set->begin(), set->end());
}

}  // namespace

size_t FindTopLevel(std::string_view p, std::string_view token) {
  int depth = 0;
  bool in_class = false;
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] == '\\') {
      ++i;
    } else if (in_class) {
      in_class = p[i] != ']';
    } else if (p[i] == '[') {
      in_class = true;
      if (i + 1 < p.size() && p[i + 1] == ']') ++i;  // "[]...]": a leading ] is a member
    } else if (depth == 0 && p.compare(i, token.size(), token) == 0) {
      return i;
    } else if (p[i] == '(') {
      ++depth;
    } else if (p[i] == ')') {
      --depth;
    }
  }
  return std::string_view::npos;
}

absl::StatusOr<Regex> Regex::Compile(std::string_view pattern, const RegexLimits& limits) {
  if (pattern.size() > limits.max_pattern_bytes)
    return absl::ResourceExhaustedError(
        absl::StrCat("pattern: ", pattern.size(), " bytes, over the limit of ", limits.max_pattern_bytes));
  if (const size_t cut = FindTopLevel(pattern, "(?&)"); cut != std::string_view::npos) {  // A(?&)B: both
    absl::StatusOr<Regex> a = Compile(pattern.substr(0, cut), limits);
    if (!a.ok()) return a;
    absl::StatusOr<Regex> b = Compile(pattern.substr(cut + 4), limits);
    if (!b.ok()) return b;
    return Intersect(*a, *b, limits);
  }
  Parser parser(pattern, limits);
  absl::StatusOr<int> root = parser.Parse();
  if (!root.ok()) return root.status();
  NfaBuilder b(parser.nodes(), limits.max_nfa_states);
  absl::StatusOr<int> start = b.New();
  if (!start.ok()) return start.status();
  absl::StatusOr<int> accept = b.Emit(*root, *start);
  if (!accept.ok()) return accept.status();
  const std::vector<NfaState>& nfa = b.states();

  // Byte classes: bytes that no edge tells apart behave alike (one move computed per class).
  std::vector<int> cls(256, 0);
  {
    std::vector<bool> cut(257, false);
    for (const NfaState& s : nfa)
      if (s.lo >= 0) cut[s.lo] = cut[s.hi + 1] = true;
    int c = 0;
    for (int byte = 0; byte < 256; ++byte) {
      if (byte > 0 && cut[byte]) ++c;
      cls[byte] = c;
    }
  }
  const int classes = cls[255] + 1;
  // Subset construction. A DFA state's moves for every class come from one pass over its NFA
  // states (an edge's byte range is a run of whole classes: the cuts above fall on its ends), and
  // the sets are found by hash: these two were most of a JSON Schema's compile time.
  std::vector<char> seen(nfa.size(), 0);
  struct SetHash {
    size_t operator()(const std::vector<int>& v) const {
      uint64_t h = 1469598103934665603ull;
      for (int x : v) h = (h ^ static_cast<uint32_t>(x)) * 1099511628211ull;
      return static_cast<size_t>(h);
    }
  };
  std::unordered_map<std::vector<int>, int, SetHash> ids;
  std::vector<std::vector<int>> sets;
  std::vector<int32_t> next;  // [dfa state * classes]
  std::vector<int> first = {*start}, stack;
  Closure(nfa, *accept, &first, &seen, &stack);
  ids.emplace(first, 0);
  sets.push_back(first);
  std::vector<std::vector<int>> moves(classes);
  for (size_t d = 0; d < sets.size(); ++d) {
    next.resize((d + 1) * classes, kDead);
    for (std::vector<int>& m : moves) m.clear();
    for (int s : sets[d])
      if (nfa[s].lo >= 0)
        for (int c = cls[nfa[s].lo]; c <= cls[nfa[s].hi]; ++c) moves[c].push_back(nfa[s].out);
    for (int c = 0; c < classes; ++c) {
      std::vector<int> moved = moves[c];
      if (moved.empty()) continue;
      std::sort(moved.begin(), moved.end());
      moved.erase(std::unique(moved.begin(), moved.end()), moved.end());
      Closure(nfa, *accept, &moved, &seen, &stack);
      auto it = ids.find(moved);
      if (it == ids.end()) {
        if (static_cast<int>(sets.size()) >= limits.max_dfa_states)
          return absl::ResourceExhaustedError(
              absl::StrCat("pattern: more than ", limits.max_dfa_states, " automaton states after determinization"));
        it = ids.emplace(moved, static_cast<int>(sets.size())).first;
        sets.push_back(std::move(moved));
      }
      next[d * classes + c] = it->second;
    }
  }
  const int n = static_cast<int>(sets.size());
  std::vector<bool> accepting(n);
  for (int d = 0; d < n; ++d) accepting[d] = std::binary_search(sets[d].begin(), sets[d].end(), *accept);

  std::array<uint8_t, 256> class_of{};
  for (int byte = 0; byte < 256; ++byte) class_of[byte] = static_cast<uint8_t>(cls[byte]);
  return FromTable(next, classes, accepting, class_of);
}

Regex Regex::FromTable(const std::vector<int32_t>& next, int classes, const std::vector<bool>& accepting,
                       const std::array<uint8_t, 256>& class_of) {
  const int n = static_cast<int>(accepting.size());
  // Prune the states from which nothing is accepted: a step into one is a dead end. The edges
  // reversed, in one array (from_begin[d] .. from_begin[d + 1]: the states with an edge into d).
  std::vector<int> from_begin(n + 1, 0), from;
  for (int d = 0; d < n; ++d)
    for (int c = 0; c < classes; ++c)
      if (next[d * classes + c] != kDead) ++from_begin[next[d * classes + c] + 1];
  for (int d = 0; d < n; ++d) from_begin[d + 1] += from_begin[d];
  from.resize(from_begin[n]);
  {
    std::vector<int> fill(from_begin.begin(), from_begin.end() - 1);
    for (int d = 0; d < n; ++d)
      for (int c = 0; c < classes; ++c)
        if (next[d * classes + c] != kDead) from[fill[next[d * classes + c]]++] = d;
  }
  std::vector<bool> live = accepting;
  std::vector<int> stack;
  for (int d = 0; d < n; ++d)
    if (live[d]) stack.push_back(d);
  while (!stack.empty()) {
    const int d = stack.back();
    stack.pop_back();
    for (int i = from_begin[d]; i < from_begin[d + 1]; ++i)
      if (!live[from[i]]) live[from[i]] = true, stack.push_back(from[i]);
  }
  std::vector<int> renumber(n, kDead);
  Regex re;
  for (int d = 0; d < n; ++d)
    if (live[d]) {
      renumber[d] = re.num_states();
      re.accepting_.push_back(accepting[d]);
    }
  re.classes_ = classes;
  re.class_of_ = class_of;
  re.next_.assign(static_cast<size_t>(re.num_states()) * classes, kDead);
  for (int d = 0; d < n; ++d) {
    if (!live[d]) continue;
    for (int c = 0; c < classes; ++c) {
      const int to = next[d * classes + c];
      re.next_[static_cast<size_t>(renumber[d]) * classes + c] = to == kDead ? kDead : renumber[to];
    }
  }
  re.start_ = n > 0 ? renumber[0] : kDead;
  re.self_loop_of_.assign(re.num_states(), -1);
  std::vector<std::array<uint64_t, 4>> class_bytes(classes, {0, 0, 0, 0});
  for (int b = 0; b < 256; ++b) class_bytes[class_of[b]][b >> 6] |= uint64_t{1} << (b & 63);
  for (int d = 0; d < re.num_states(); ++d) {
    std::array<uint64_t, 4> loop{0, 0, 0, 0};
    for (int c = 0; c < classes; ++c)
      if (re.next_[static_cast<size_t>(d) * classes + c] == d)
        for (int w = 0; w < 4; ++w) loop[w] |= class_bytes[c][w];
    if ((loop[0] | loop[1] | loop[2] | loop[3]) == 0) continue;
    re.self_loop_of_[d] = static_cast<int32_t>(re.self_loops_.size());
    re.self_loops_.push_back(loop);
  }
  return re;
}

absl::StatusOr<Regex> Regex::Intersect(const Regex& a, const Regex& b, const RegexLimits& limits) {
  // Byte classes of the product: the pairs of the two automata's classes that occur.
  std::map<std::pair<int, int>, int> joint;
  std::array<uint8_t, 256> class_of{};
  std::vector<int> representative;
  for (int byte = 0; byte < 256; ++byte) {
    auto [it, added] = joint.emplace(std::pair{a.class_of_[byte], b.class_of_[byte]}, static_cast<int>(joint.size()));
    if (added) representative.push_back(byte);
    class_of[byte] = static_cast<uint8_t>(it->second);
  }
  const int classes = static_cast<int>(joint.size());
  std::vector<int32_t> next;
  std::vector<bool> accepting;
  if (a.start_ != kDead && b.start_ != kDead) {
    std::map<std::pair<int, int>, int> ids = {{{a.start_, b.start_}, 0}};
    std::vector<std::pair<int, int>> states = {{a.start_, b.start_}};
    for (size_t d = 0; d < states.size(); ++d) {
      next.resize((d + 1) * classes, kDead);
      const auto [sa, sb] = states[d];
      accepting.push_back(a.Accepting(sa) && b.Accepting(sb));
      for (int c = 0; c < classes; ++c) {
        const int na = a.Next(sa, static_cast<uint8_t>(representative[c]));
        const int nb = b.Next(sb, static_cast<uint8_t>(representative[c]));
        if (na == kDead || nb == kDead) continue;
        auto [it, added] = ids.emplace(std::pair{na, nb}, static_cast<int>(states.size()));
        if (added) {
          if (static_cast<int>(states.size()) >= limits.max_dfa_states)
            return absl::ResourceExhaustedError(
                absl::StrCat("pattern: more than ", limits.max_dfa_states, " automaton states in an intersection"));
          states.push_back({na, nb});
        }
        next[d * classes + c] = it->second;
      }
    }
  }
  return FromTable(next, classes, accepting, class_of);
}

bool Regex::Matches(std::string_view s) const {
  int state = start_;
  for (char c : s) {
    if (state == kDead) return false;
    state = Next(state, static_cast<uint8_t>(c));
  }
  return state != kDead && Accepting(state);
}

}  // namespace gla::constraints
