#include "engine/constraints/number_range.h"

#include <cctype>
#include <functional>
#include <map>
#include <set>
#include <vector>

#include "absl/strings/str_cat.h"

namespace gla::constraints {

namespace {

constexpr char kAnyFraction[] = "( \".\" [0-9]+ )?";

// -1, 0, 1 as |x| compares with |y| (signs ignored).
int CompareMagnitude(const Decimal& x, const Decimal& y) {
  if (x.integer != y.integer) return x.integer < y.integer ? -1 : 1;
  const int c = x.fraction.compare(y.fraction);  // no trailing zeros: lexicographic is numeric
  return c < 0 ? -1 : c > 0 ? 1 : 0;
}

bool IsZero(const Decimal& d) { return d.integer == 0 && d.fraction.empty(); }

std::string Alternatives(const std::vector<std::string>& alts) {
  if (alts.empty()) return "";
  if (alts.size() == 1) return alts[0];
  std::string out = "( ";
  for (size_t i = 0; i < alts.size(); ++i) absl::StrAppend(&out, i ? " | " : "", alts[i]);
  return out + " )";
}

// The fraction digits after an integer part equal to a bound's: a value's fraction f must satisfy
// f >= low (f > low when low_strict) while tight_low, and f <= high (f < high) while tight_high.
// Digits past a bound's fraction are its zeros.
class FractionWalk {
 public:
  FractionWalk(const std::string* low, bool low_strict, const std::string* high, bool high_strict)
      : low_(low), high_(high), low_strict_(low_strict), high_strict_(high_strict) {}

  // GBNF for the fraction part (the "." and its digits, or nothing); nullopt when no fraction
  // keeps the value in range.
  std::optional<std::string> Fraction() {
    const bool zero = End(0, low_ != nullptr, high_ != nullptr);
    std::optional<std::string> digits = Digits(0, low_ != nullptr, high_ != nullptr);
    if (!digits) return zero ? std::optional<std::string>("") : std::nullopt;
    return zero ? absl::StrCat("( \".\" ", *digits, " )?") : absl::StrCat("\".\" ", *digits);
  }
  // Whether the value may end here (the fraction written so far is the whole of it).
  bool End(size_t j, bool tl, bool th) const {
    if (tl && (j < low_->size() || low_strict_)) return false;  // below low, or equal to a strict one
    if (th && j >= high_->size() && high_strict_) return false;  // equal to a strict high
    return true;
  }

 private:
  static int DigitAt(const std::string& s, size_t j) { return j < s.size() ? s[j] - '0' : 0; }

  // A non-empty digit sequence from position j on.
  std::optional<std::string> Digits(size_t j, bool tl, bool th) {
    if (!tl && !th) return std::string("[0-9]+");
    const bool low_done = tl && j >= low_->size(), high_done = th && j >= high_->size();
    if ((low_done || !tl) && (high_done || !th)) {  // the bounds' remaining digits are zeros
      if (th) {  // digits must stay 0: equal to high
        if (high_strict_ || (tl && low_strict_)) return std::nullopt;
        return std::string("\"0\"+");
      }
      return low_strict_ ? std::string("[0-9]* [1-9] [0-9]*") : std::string("[0-9]+");
    }
    const int lo = tl ? DigitAt(*low_, j) : 0, hi = th ? DigitAt(*high_, j) : 9;
    std::vector<std::string> alts;
    auto piece = [&](int d0, int d1, bool ntl, bool nth) {
      if (d0 > d1) return;
      const std::string digit = d0 == d1 ? absl::StrCat("\"", d0, "\"") : absl::StrCat("[", d0, "-", d1, "]");
      const bool end = End(j + 1, ntl, nth);
      std::optional<std::string> more = Digits(j + 1, ntl, nth);
      if (!end && !more) return;
      if (!more) alts.push_back(digit);
      else if (!end) alts.push_back(absl::StrCat(digit, " ", *more));
      else alts.push_back(absl::StrCat(digit, " ( ", *more, " )?"));
    };
    if (tl && th && lo == hi) {
      piece(lo, hi, true, true);
    } else {
      if (tl) piece(lo, lo, true, false);
      piece(tl ? lo + 1 : lo, th ? hi - 1 : hi, false, false);
      if (th) piece(hi, hi, false, true);
    }
    if (alts.empty()) return std::nullopt;
    return Alternatives(alts);
  }

  const std::string* low_;
  const std::string* high_;
  bool low_strict_, high_strict_;
};

// The numerals of magnitudes in [low, high] (high null: unbounded), both >= 0.
std::string Magnitudes(const Bound& low, const Bound* high, bool integers_only) {
  if (high != nullptr) {
    const int c = CompareMagnitude(low.value, high->value);
    if (c > 0 || (c == 0 && (low.exclusive || high->exclusive))) return "";
  }
  std::vector<std::string> alts;
  auto piece = [&](int64_t i, const std::string* lf, bool ls, const std::string* hf, bool hs) {
    FractionWalk walk(lf, ls, hf, hs);
    std::optional<std::string> f = integers_only ? (walk.End(0, lf != nullptr, hf != nullptr) ? std::optional<std::string>("")
                                                                                                 : std::nullopt)
                                                 : walk.Fraction();
    if (!f) return;
    alts.push_back(f->empty() ? absl::StrCat("\"", i, "\"") : absl::StrCat("\"", i, "\" ", *f));
  };
  const int64_t a = low.value.integer;
  const std::string any = integers_only ? "" : absl::StrCat(" ", kAnyFraction);
  if (high != nullptr && high->value.integer == a) {
    piece(a, &low.value.fraction, low.exclusive, &high->value.fraction, high->exclusive);
  } else {
    piece(a, &low.value.fraction, low.exclusive, nullptr, false);
    const int64_t b = high != nullptr ? high->value.integer : -1;
    if (high == nullptr) alts.push_back(absl::StrCat(PositiveIntegersGbnf(a + 1, -1), any));
    else if (b - 1 >= a + 1) alts.push_back(absl::StrCat(PositiveIntegersGbnf(a + 1, b - 1), any));
    if (high != nullptr) piece(b, nullptr, false, &high->value.fraction, high->exclusive);
  }
  return Alternatives(alts);
}

}  // namespace

int CompareDecimal(const Decimal& x, const Decimal& y) {
  if (x.negative != y.negative) return x.negative ? -1 : 1;
  const int m = CompareMagnitude(x, y);
  return x.negative ? -m : m;
}

absl::StatusOr<Decimal> ParseDecimal(const std::string& text) {
  size_t i = 0;
  Decimal d;
  if (i < text.size() && text[i] == '-') d.negative = true, ++i;
  std::string digits;  // all significant digits; the point sits after `point` of them
  int64_t point = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) digits += text[i++], ++point;
  if (digits.empty()) return absl::InvalidArgumentError(absl::StrCat("'", text, "' is not a number"));
  if (i < text.size() && text[i] == '.') {
    ++i;
    const size_t before = digits.size();
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) digits += text[i++];
    if (digits.size() == before) return absl::InvalidArgumentError(absl::StrCat("'", text, "' is not a number"));
  }
  if (i < text.size() && (text[i] == 'e' || text[i] == 'E')) {
    ++i;
    bool neg = false;
    if (i < text.size() && (text[i] == '+' || text[i] == '-')) neg = text[i++] == '-';
    int64_t e = 0;
    size_t start = i;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i])) && e <= 1000) e = e * 10 + (text[i++] - '0');
    if (i == start || e > 30) return absl::InvalidArgumentError(absl::StrCat("'", text, "': an exponent beyond 30"));
    point += neg ? -e : e;
  }
  if (i != text.size()) return absl::InvalidArgumentError(absl::StrCat("'", text, "' is not a number"));
  // The point may now sit outside the digits: pad with zeros.
  if (point < 0) digits = std::string(static_cast<size_t>(-point), '0') + digits, point = 0;
  if (point > static_cast<int64_t>(digits.size())) digits += std::string(static_cast<size_t>(point) - digits.size(), '0');
  std::string integer = digits.substr(0, static_cast<size_t>(point));
  d.fraction = digits.substr(static_cast<size_t>(point));
  while (!d.fraction.empty() && d.fraction.back() == '0') d.fraction.pop_back();
  const size_t nz = integer.find_first_not_of('0');
  integer = nz == std::string::npos ? "" : integer.substr(nz);
  if (integer.size() >= 18) return absl::InvalidArgumentError(absl::StrCat("'", text, "': beyond 1e17"));
  d.integer = integer.empty() ? 0 : std::stoll(integer);
  if (IsZero(d)) d.negative = false;
  return d;
}

std::string NumberRangeGbnf(const std::optional<Bound>& lo, const std::optional<Bound>& hi, bool integers_only) {
  std::vector<std::string> alts;
  const bool lo_negative = lo && lo->value.negative;
  const bool hi_negative = hi && hi->value.negative;
  // Values >= 0: [max(lo, 0), hi].
  if (!hi_negative && !(hi && IsZero(hi->value) && hi->exclusive)) {
    Bound low = lo && !lo_negative ? *lo : Bound{};
    std::string m = Magnitudes(low, hi ? &*hi : nullptr, integers_only);
    if (!m.empty()) alts.push_back(m);
  }
  // Values < 0, by magnitude: (max(-hi, 0), -lo], never -0.
  if (!lo || lo_negative) {
    Bound low{Decimal{}, true};
    if (hi_negative) low = Bound{Decimal{false, hi->value.integer, hi->value.fraction}, hi->exclusive};
    std::optional<Bound> high;
    if (lo) high = Bound{Decimal{false, lo->value.integer, lo->value.fraction}, lo->exclusive};
    std::string m = Magnitudes(low, high ? &*high : nullptr, integers_only);
    if (!m.empty()) alts.push_back(absl::StrCat("\"-\" ", m));
  }
  return Alternatives(alts);
}

std::string PositiveIntegersGbnf(int64_t a, int64_t b) {
  const std::string as = std::to_string(a);
  std::vector<std::string> alts;
  auto same_length = [&](const std::string& x, const std::string& y) {  // x <= y, same length
    std::function<std::string(size_t, bool, bool)> walk = [&](size_t i, bool tl, bool th) -> std::string {
      if (i == x.size()) return "";
      // Free of both bounds: any digits (walking them digit by digit would branch 3 ways a digit).
      if (!tl && !th) return x.size() - i == 1 ? "[0-9]" : absl::StrCat("[0-9]{", x.size() - i, "}");
      const int lo = tl ? x[i] - '0' : 0, hi = th ? y[i] - '0' : 9;
      std::vector<std::string> out;
      auto piece = [&](int d0, int d1, bool ntl, bool nth) {
        if (d0 > d1) return;
        const std::string digit = d0 == d1 ? absl::StrCat("\"", d0, "\"") : absl::StrCat("[", d0, "-", d1, "]");
        const std::string rest = walk(i + 1, ntl, nth);
        out.push_back(rest.empty() ? digit : absl::StrCat(digit, " ", rest));
      };
      if (lo == hi) {
        piece(lo, hi, tl, th);
      } else {
        piece(lo, lo, tl, false);
        piece(lo + 1, hi - 1, false, false);
        piece(hi, hi, false, th);
      }
      return Alternatives(out);
    };
    return walk(0, true, true);
  };
  const size_t max_len = b < 0 ? as.size() : std::to_string(b).size();
  if (b >= 0 && b < a) return "";
  for (size_t len = as.size(); len <= max_len; ++len) {
    const std::string lo = len == as.size() ? as : "1" + std::string(len - 1, '0');
    const std::string hi = b >= 0 && len == max_len ? std::to_string(b) : std::string(len, '9');
    alts.push_back(same_length(lo, hi));
  }
  if (b < 0) alts.push_back(absl::StrCat("[1-9] [0-9]{", as.size(), ",}"));  // every longer numeral
  return Alternatives(alts);
}

namespace {

// NumberRangeGbnf's constructs are regular: quoted literals (digits, '-', '.'), classes, groups,
// '|' and the postfix repeats, separated by spaces. Literals become escaped text; spaces go.
std::string GbnfNumeralToRegex(const std::string& g) {
  std::string out;
  for (size_t i = 0; i < g.size(); ++i) {
    const char c = g[i];
    if (c == ' ') continue;
    if (c == '"') {
      for (++i; i < g.size() && g[i] != '"'; ++i) {
        if (g[i] == '.' || g[i] == '-') out += '\\';
        out += g[i];
      }
      continue;
    }
    out += c;
  }
  return out;
}

}  // namespace

std::string NumberRangeRegex(const std::optional<Bound>& lo, const std::optional<Bound>& hi, bool integers_only) {
  return GbnfNumeralToRegex(NumberRangeGbnf(lo, hi, integers_only));
}

absl::StatusOr<Multiple> ParseMultiple(const Decimal& m) {
  if (m.negative || IsZero(m)) return absl::InvalidArgumentError("multipleOf that is not above 0");
  if (m.fraction.size() > 4) return absl::InvalidArgumentError("multipleOf with more than 4 fraction digits");
  Multiple r;
  r.s = static_cast<int>(m.fraction.size());
  int64_t scale = 1;
  for (int i = 0; i < r.s; ++i) scale *= 10;
  if (m.integer > (int64_t{1} << 40)) return absl::InvalidArgumentError("multipleOf beyond 2^40");
  r.a = m.integer * scale + (m.fraction.empty() ? 0 : std::stoll(m.fraction));
  if (r.a == 1) {  // a power of ten: no digits to track (MultiplesRegex writes it directly)
    r.t = r.s;
    return r;
  }
  // Past 10^3 the automaton of the endings, intersected with a range's, takes seconds to build.
  for (r.t = r.s; r.t <= 3; ++r.t) {
    int64_t p = 1;
    for (int i = 0; i < r.t; ++i) p *= 10;
    if (p % r.a == 0) return r;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("multipleOf whose digits are not a divisor of 1000 (", r.a, " / 10^", r.s, ")"));
}

std::string MultiplesRegex(const Multiple& m, bool integers_only) {
  // N = the numeral times 10^s, an integer: a multiple of a iff its last t digits are. Those digits
  // are the integer part's last t - s digits (u, zero-padded) and the fraction's first s (v); the
  // fraction's further digits must be zeros. Alternatives grouped by v.
  if (m.a == 1) {  // a power of ten: any fraction of at most s digits (then zeros)
    const std::string fraction = integers_only ? ""
                                 : m.s == 0    ? "(\\.0+)?"
                                               : absl::StrCat("(\\.[0-9]{1,", m.s, "}0*)?");
    return absl::StrCat("-?(0|[1-9][0-9]*)", fraction);
  }
  const int L = m.t - m.s;
  int64_t p = 1;
  for (int i = 0; i < m.t; ++i) p *= 10;
  std::map<std::string, std::set<std::string>> by_fraction;  // v without trailing zeros -> u's
  for (int64_t w = 0; w < p; w += m.a) {
    std::string digits = m.t == 0 ? "" : std::to_string(w);  // t = 0: a = 1, w = 0, no digits
    digits = std::string(static_cast<size_t>(m.t) - digits.size(), '0') + digits;
    std::string v = digits.substr(static_cast<size_t>(L));
    while (!v.empty() && v.back() == '0') v.pop_back();
    if (integers_only && !v.empty()) continue;
    by_fraction[v].insert(digits.substr(0, static_cast<size_t>(L)));
  }
  std::vector<std::string> alts;
  for (const auto& [v, us] : by_fraction) {
    std::string ints;
    if (L == 0) {
      ints = "(0|[1-9][0-9]*)";
    } else {  // u itself without leading zeros ("0" for all zeros), or any longer numeral ending in u
      std::set<std::string> short_forms;
      std::vector<std::string> suffixes;
      for (const std::string& u : us) {
        const size_t nz = u.find_first_not_of('0');
        short_forms.insert(nz == std::string::npos ? "0" : u.substr(nz));
        suffixes.push_back(u);
      }
      std::string alt = "(";
      for (const std::string& f : short_forms) absl::StrAppend(&alt, alt.size() > 1 ? "|" : "", f);
      absl::StrAppend(&alt, "|[1-9][0-9]*(");
      for (size_t i = 0; i < suffixes.size(); ++i) absl::StrAppend(&alt, i ? "|" : "", suffixes[i]);
      ints = alt + "))";
    }
    const std::string fraction = integers_only ? "" : v.empty() ? "(\\.0+)?" : absl::StrCat("\\.", v, "0*");
    alts.push_back(ints + fraction);
  }
  std::string out = "-?(";
  for (size_t i = 0; i < alts.size(); ++i) absl::StrAppend(&out, i ? "|" : "", alts[i]);
  return out + ")";
}

bool IsMultiple(const Decimal& x, const Multiple& m) {
  if (x.fraction.size() > static_cast<size_t>(m.s)) return false;  // a nonzero digit past m's
  int64_t r = x.integer % m.a;
  for (int i = 0; i < m.s; ++i) {
    const int d = i < static_cast<int>(x.fraction.size()) ? x.fraction[static_cast<size_t>(i)] - '0' : 0;
    r = (r * 10 + d) % m.a;
  }
  return r == 0;
}

}  // namespace gla::constraints
