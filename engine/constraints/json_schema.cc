#include "engine/constraints/json_schema.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_format.h"
#include "engine/constraints/json_depth.h"
#include "engine/constraints/json_text_pattern.h"
#include "engine/constraints/number_range.h"
#include "engine/constraints/regex.h"
#include "engine/constraints/schema_algebra.h"
#include "nlohmann/json.hpp"

namespace gla::constraints {

namespace {

using json = SchemaJson;

// Any JSON value, and the pieces the compiled rules use. Whitespace: at most one space where JSON
// allows whitespace (no newlines, no indentation), so a model cannot spend its tokens on layout
// (an unbounded [ \t\n\r]* let the default model indent until max_tokens in 7 of 12 sampled
// outputs); the text is still JSON, in the layout Python's json.dumps gives.
constexpr char kBase[] = R"G(
ws ::= " "?
j-value ::= j-object | j-array | j-string | j-number | "true" | "false" | "null"
j-object ::= "{" ws ( j-member ( ws "," ws j-member )* )? ws "}"
j-member ::= j-string ws ":" ws j-value
j-array ::= "[" ws ( j-value ( ws "," ws j-value )* )? ws "]"
j-char ::= [^"\\\x00-\x1f] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} )
j-string ::= /"([^"\\\x00-\x1f]|\\(["\\\/bfnrt]|u[0-9a-fA-F]{4}))*"/
j-int ::= /-?(0|[1-9][0-9]*)/
j-number ::= /-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?/
j-hex ::= [0-9a-fA-F]
)G";

// The rules of kBase that `text` names, directly or through each other: a grammar compiles only the
// rules it can reach, and most schemas use a few of kBase's (its format rules cost more to compile
// than a small schema's own). A name inside a literal counts too; that only keeps a rule.
std::string BaseRulesFor(const std::string& text) {
  static const std::vector<std::pair<std::string, std::string>> rules = [] {
    std::vector<std::pair<std::string, std::string>> out;
    const std::string base(kBase);
    for (size_t at = 0; at < base.size();) {
      const size_t end = base.find('\n', at);
      const std::string line = base.substr(at, end == std::string::npos ? std::string::npos : end - at);
      at = end == std::string::npos ? base.size() : end + 1;
      const size_t def = line.find(" ::= ");
      if (def != std::string::npos) out.emplace_back(line.substr(0, def), line);
    }
    return out;
  }();
  auto names = [](const std::string& t, const std::string& name) {
    auto word = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '-'; };
    for (size_t p = t.find(name); p != std::string::npos; p = t.find(name, p + 1))
      if ((p == 0 || !word(t[p - 1])) && (p + name.size() == t.size() || !word(t[p + name.size()]))) return true;
    return false;
  };
  std::vector<bool> taken(rules.size(), false);
  std::string reach = text, out = "\n";
  for (bool grew = true; grew;) {
    grew = false;
    for (size_t i = 0; i < rules.size(); ++i)
      if (!taken[i] && names(reach, rules[i].first)) {
        taken[i] = grew = true;
        absl::StrAppend(&reach, "\n", rules[i].second);
      }
  }
  for (size_t i = 0; i < rules.size(); ++i)
    if (taken[i]) absl::StrAppend(&out, rules[i].second, "\n");
  return out;
}

// A GBNF string literal standing for these exact bytes.
std::string Lit(const std::string& raw) {
  std::string out = "\"";
  for (unsigned char c : raw) {
    if (c == '"') out += "\\\"";
    else if (c == '\\') out += "\\\\";
    else if (c < 0x20 || c == 0x7f) absl::StrAppendFormat(&out, "\\x%02x", c);
    else out += static_cast<char>(c);
  }
  return out + "\"";
}

class Compiler {
 public:
  Compiler(json root, const JsonSchemaLimits& limits) : root_(std::move(root)), limits_(limits) {}

  absl::StatusOr<std::string> Run() {
    absl::StatusOr<std::string> top = Schema(root_, "#");
    if (!top.ok()) return top;
    std::string used = absl::StrCat("root ::= ", *top, "\n", rules_);
    return absl::StrCat(used, BaseRulesFor(used));
  }

 private:
  absl::Status Refused(const std::string& what, const std::string& at) const { return SchemaRefusal(what, at); }

  absl::StatusOr<std::string> NewRule(const std::string& body) {
    absl::StatusOr<std::string> name = ReserveRule();
    if (!name.ok()) return name;
    // Checked as it grows: folded alternations can copy a large schema many times over, and a
    // grammar past the parser's size limit would be refused after all that work.
    if (rules_.size() + body.size() > limits_.max_grammar_bytes)
      return absl::ResourceExhaustedError(absl::StrCat("json schema: its grammar is over ", limits_.max_grammar_bytes, " bytes"));
    absl::StrAppend(&rules_, *name, " ::= ", body, "\n");
    return name;
  }
  absl::StatusOr<std::string> ReserveRule() {
    if (++count_ > limits_.max_rules)
      return absl::ResourceExhaustedError(absl::StrCat("json schema: more than ", limits_.max_rules, " rules"));
    return absl::StrCat("s", count_);
  }

  static constexpr int kLongestGeneratedString = 512;

  absl::StatusOr<int> Count(const json& s, const char* key, const std::string& at) {
    const json& v = s[key];
    if (!v.is_number_integer() || v.get<int64_t>() < 0) return Refused(absl::StrCat(key, " that is not a count"), at);
    // Lengths are counted inside one automaton (a few states per character); item counts by
    // grammar rules (one per item).
    const bool length = std::string(key) == "minLength" || std::string(key) == "maxLength";
    const int limit = length ? limits_.max_string_length : limits_.max_repeat;
    // A maximum past the limit is generated up to the limit: a subset of what the schema allows
    // (every output still meets it; a longer instance is not accepted). A minimum past it cannot.
    const bool maximum = std::string(key) == "maxLength" || std::string(key) == "maxItems";
    if (v.get<int64_t>() > limit && maximum) return limit;
    if (v.get<int64_t>() > limit)
      return absl::ResourceExhaustedError(
          absl::StrCat("json schema at ", at, ": ", key, " ", v.get<int64_t>(), " is over ", limit));
    return static_cast<int>(v.get<int64_t>());
  }

  // A pair of count keywords (minLength / maxLength, minItems / maxItems): [*min, *max], max -1
  // when unbounded.
  absl::Status Bounds(const json& s, const char* min_key, const char* max_key, const std::string& at, int* min,
                      int* max) {
    *min = 0;
    *max = -1;
    if (s.contains(min_key)) {
      absl::StatusOr<int> v = Count(s, min_key, at);
      if (!v.ok()) return v.status();
      *min = *v;
    }
    if (s.contains(max_key)) {
      absl::StatusOr<int> v = Count(s, max_key, at);
      if (!v.ok()) return v.status();
      *max = *v;
    }
    if (*max >= 0 && *max < *min) return Refused(absl::StrCat(max_key, " below ", min_key), at);
    return absl::OkStatus();
  }

  // {min,max} as GBNF (max < 0: unbounded).
  static std::string Repeat(int min, int max) {
    if (max < 0) return min == 0 ? "*" : absl::StrCat("{", min, ",}");
    return absl::StrCat("{", min, ",", max, "}");
  }

  absl::StatusOr<std::string> Ref(const std::string& ref, const std::string& at) {
    auto it = refs_.find(ref);
    if (it != refs_.end()) return it->second;
    if (ref.empty() || ref[0] != '#') return Refused(absl::StrCat("$ref to '", ref, "' (only within the schema)"), at);
    const json* target = &root_;
    std::string pointer = ref.substr(1);
    size_t pos = 0;
    while (pos < pointer.size()) {
      if (pointer[pos] != '/') return Refused(absl::StrCat("$ref '", ref, "'"), at);
      const size_t end = pointer.find('/', pos + 1);
      std::string token = pointer.substr(pos + 1, end == std::string::npos ? std::string::npos : end - pos - 1);
      for (size_t k; (k = token.find("~1")) != std::string::npos;) token.replace(k, 2, "/");
      for (size_t k; (k = token.find("~0")) != std::string::npos;) token.replace(k, 2, "~");
      if (target->is_object() && target->contains(token)) target = &(*target)[token];
      else if (target->is_array() && !token.empty() && token.find_first_not_of("0123456789") == std::string::npos &&
               std::stoul(token) < target->size())
        target = &(*target)[std::stoul(token)];
      else return absl::InvalidArgumentError(absl::StrCat("json schema at ", at, ": $ref '", ref, "' names nothing"));
      pos = end == std::string::npos ? pointer.size() : end;
    }
    absl::StatusOr<std::string> name = ReserveRule();  // before the body: the target may refer back
    if (!name.ok()) return name;
    refs_[ref] = *name;
    absl::StatusOr<std::string> body = Schema(*target, ref);
    if (!body.ok()) return body;
    absl::StrAppend(&rules_, *name, " ::= ", *body, "\n");
    return name;
  }

  absl::StatusOr<std::string> Schema(const json& s, const std::string& at) {
    if (++depth_ > 200) return absl::ResourceExhaustedError("json schema: nested more than 200 deep");
    absl::StatusOr<std::string> r = SchemaInner(s, at);
    --depth_;
    return r;
  }

  absl::StatusOr<std::string> SchemaInner(const json& s0, const std::string& at) {
    if (s0.is_boolean()) {
      if (s0.get<bool>()) return std::string("j-value");
      return Refused("the schema false (no value is valid)", at);
    }
    if (!s0.is_object()) return absl::InvalidArgumentError(absl::StrCat("json schema at ", at, ": not an object"));
    // allOf, $ref or an alternation beside other keywords, an enum beside a type: folded into one of
    // the shapes below (schema_algebra.h).
    absl::StatusOr<json> normal = json();
    const bool folds = SchemaAlgebra::Folds(s0);
    if (folds) {
      normal = algebra_.Normalize(s0, at);
      if (!normal.ok()) return normal.status();
    } else {
      for (auto it = s0.begin(); it != s0.end(); ++it)
        if (UnenforcedKeyword(it.key(), it.value())) return Refused(it.key(), at);
    }
    const json& s = folds ? *normal : s0;
    if (s.is_boolean()) {
      if (s.get<bool>()) return std::string("j-value");
      return Refused("a schema no value satisfies", at);
    }
    if (s.contains("$ref")) {  // alone
      if (!s["$ref"].is_string()) return absl::InvalidArgumentError(absl::StrCat("json schema at ", at, ": $ref not a string"));
      return Ref(s["$ref"].get<std::string>(), at);
    }
    if (s.contains("const")) return Lit(s["const"].dump());  // alone
    if (s.contains("enum")) {  // alone, every value valid
      if (!s["enum"].is_array() || s["enum"].empty()) return Refused("an enum that is not a non-empty list", at);
      std::string alt;
      for (const json& v : s["enum"]) absl::StrAppend(&alt, alt.empty() ? "" : " | ", Lit(v.dump()));
      return absl::StrCat("( ", alt, " )");
    }
    for (const char* comb : {"anyOf", "oneOf"}) {  // alone
      if (!s.contains(comb)) continue;
      const json& branches = s[comb];
      // nlohmann's size() of a scalar is 1 and its [0] throws: a list is checked for, not assumed.
      if (!branches.is_array() || branches.empty())
        return Refused(absl::StrCat(comb, " that is not a non-empty list"), at);
      if (std::string(comb) == "oneOf") {  // exact only when no value can match two branches
        bool disjoint = true;
        for (size_t i = 0; i < branches.size() && disjoint; ++i)
          for (size_t j = i + 1; j < branches.size() && disjoint; ++j) disjoint = algebra_.Disjoint(branches[i], branches[j]);
        if (!disjoint) {  // each branch less the others: the values exactly one branch takes
          absl::StatusOr<json> exclusive = algebra_.ExclusiveBranches(branches, at);
          if (!exclusive.ok())
            return Refused(absl::StrCat("oneOf whose branches may overlap and cannot be told apart (",
                                        exclusive.status().message(), ")"), at);
          if (*exclusive == false) return Refused("a schema no value satisfies", at);
          return Schema(*exclusive, at);
        }
      }
      std::string alt;
      for (size_t i = 0; i < branches.size(); ++i) {
        absl::StatusOr<std::string> b = Schema(branches[i], absl::StrCat(at, "/", comb, "/", i));
        if (!b.ok()) return b;
        absl::StrAppend(&alt, alt.empty() ? "" : " | ", *b);
      }
      return absl::StrCat("( ", alt, " )");
    }
    std::vector<std::string> types;
    if (s.contains("type")) {
      if (s["type"].is_string()) {
        types.push_back(s["type"].get<std::string>());
      } else if (s["type"].is_array()) {
        for (const json& t : s["type"]) {
          if (!t.is_string()) return Refused("a type that is not a name", at);
          types.push_back(t.get<std::string>());
        }
      } else {
        return Refused("a type that is not a name", at);
      }
    } else {
      // No type: a value of any kind, the keywords of a kind constraining only values of that
      // kind (properties do not stop a string from being valid).
      bool constrained = false;
      std::string alt;
      for (const auto& [kind, keys, any] :
           {std::tuple{"object", std::vector<const char*>{"properties", "required", "additionalProperties"}, "j-object"},
            std::tuple{"array", std::vector<const char*>{"items", "prefixItems", "additionalItems", "minItems", "maxItems"},
                       "j-array"},
            std::tuple{"string", std::vector<const char*>{"minLength", "maxLength", "format", "pattern"}, "j-string"},
            std::tuple{"number", std::vector<const char*>{"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"},
                       "j-number"}}) {
        bool has = false;
        for (const char* k : keys) has = has || s.contains(k);
        std::string e = any;
        if (has) {
          absl::StatusOr<std::string> t = Typed(s, kind, at);
          if (!t.ok()) return t;
          e = *t;
          constrained = true;
        }
        absl::StrAppend(&alt, alt.empty() ? "" : " | ", e);
      }
      if (!constrained) return std::string("j-value");
      return absl::StrCat("( ", alt, " | \"true\" | \"false\" | \"null\" )");
    }
    std::string alt;
    for (const std::string& t : types) {
      absl::StatusOr<std::string> e = Typed(s, t, at);
      if (!e.ok()) return e;
      absl::StrAppend(&alt, alt.empty() ? "" : " | ", *e);
    }
    return types.size() == 1 ? alt : absl::StrCat("( ", alt, " )");
  }

  absl::StatusOr<std::string> Typed(const json& s, const std::string& type, const std::string& at) {
    if (type == "null") return std::string("\"null\"");
    if (type == "boolean") return std::string("( \"true\" | \"false\" )");
    if (type == "integer") return Numeral(s, at, true);
    if (type == "number") return Numeral(s, at, false);
    if (type == "string") return String(s, at);
    if (type == "object") return Object(s, at);
    if (type == "array") return Array(s, at);
    return Refused(absl::StrCat("type '", type, "'"), at);
  }

  // A number's or an integer's bounds: minimum / maximum (draft 4: exclusive when
  // exclusiveMinimum / exclusiveMaximum is true beside them), exclusiveMinimum / exclusiveMaximum
  // as numbers (draft 6 on); the tighter of each pair.
  absl::Status NumericBounds(const json& s, const std::string& at, std::optional<Bound>* lo, std::optional<Bound>* hi) {
    auto take = [&](const char* key, bool upper, bool exclusive) -> absl::Status {
      const json& v = s[key];
      if (!v.is_number()) return Refused(absl::StrCat(key, " that is not a number"), at);
      absl::StatusOr<Decimal> d = ParseDecimal(v.dump());
      // A maximum from 1e17 up (a minimum from -1e17 down) leaves what is generated below 1e17 in
      // magnitude, 17 digits (a subset: every output meets it); the other way round, refused.
      const bool far = !d.ok() && v.is_number() && (upper ? v.get<double>() >= 1e17 : v.get<double>() <= -1e17);
      if (far) d = Decimal{!upper, 99999999999999999, ""}, exclusive = false;
      if (!d.ok()) return Refused(absl::StrCat(key, " ", d.status().message()), at);
      std::optional<Bound>& b = upper ? *hi : *lo;
      const int c = b ? CompareDecimal(*d, b->value) : 0;
      if (!b || (upper ? c < 0 : c > 0) || (c == 0 && exclusive)) b = Bound{*d, exclusive};
      return absl::OkStatus();
    };
    const bool draft4_min = s.contains("exclusiveMinimum") && s["exclusiveMinimum"].is_boolean();
    const bool draft4_max = s.contains("exclusiveMaximum") && s["exclusiveMaximum"].is_boolean();
    if (s.contains("minimum"))
      if (absl::Status b = take("minimum", false, draft4_min && s["exclusiveMinimum"].get<bool>()); !b.ok()) return b;
    if (s.contains("maximum"))
      if (absl::Status b = take("maximum", true, draft4_max && s["exclusiveMaximum"].get<bool>()); !b.ok()) return b;
    if (s.contains("exclusiveMinimum") && !draft4_min)
      if (absl::Status b = take("exclusiveMinimum", false, true); !b.ok()) return b;
    if (s.contains("exclusiveMaximum") && !draft4_max)
      if (absl::Status b = take("exclusiveMaximum", true, true); !b.ok()) return b;
    return absl::OkStatus();
  }

  // Integers and numbers: unbounded, any JSON numeral; bounded, the numerals of the range written
  // without exponent (number_range.h), exact for decimal bounds too.
  absl::StatusOr<std::string> Numeral(const json& s, const std::string& at, bool integer) {
    std::optional<Bound> lo, hi;
    if (absl::Status b = NumericBounds(s, at, &lo, &hi); !b.ok()) return b;
    if (s.contains(kFractionKeyword) && s[kFractionKeyword] == true) {  // a number with a fraction (not an integer)
      if (integer || s.contains("multipleOf")) return Refused("a number with a fraction beside integer or multipleOf", at);
      return NumeralsAlsoMatching(lo, hi, false, "-?(0|[1-9][0-9]*)\\.[0-9]*[1-9][0-9]*", "a number with a fraction", at);
    }
    if (s.contains("multipleOf")) {
      const json& v = s["multipleOf"];
      if (!v.is_number()) return Refused("multipleOf that is not a number", at);
      absl::StatusOr<Decimal> d = ParseDecimal(v.dump());
      if (!d.ok()) return Refused(absl::StrCat("multipleOf ", d.status().message()), at);
      absl::StatusOr<Multiple> m = ParseMultiple(*d);
      if (!m.ok()) return Refused(std::string(m.status().message()), at);
      if (!(integer && m->a == 1 && m->s == 0))  // (every integer is a multiple of 1)
        return NumeralsAlsoMatching(lo, hi, integer, MultiplesRegex(*m, integer), "multipleOf", at);
    }
    if (!lo && !hi) return std::string(integer ? "j-int" : "j-number");
    std::string g = NumberRangeGbnf(lo, hi, integer);
    if (g.empty()) return Refused(absl::StrCat(integer ? "integer" : "number", " bounds that no value meets"), at);
    return g;
  }

  // The numerals of [lo, hi] (without exponent) that also match `re`: the range's automaton and
  // re's intersected, one terminal. `what` names the constraint when the intersection is refused.
  absl::StatusOr<std::string> NumeralsAlsoMatching(const std::optional<Bound>& lo, const std::optional<Bound>& hi,
                                                   bool integer, const std::string& re, const std::string& what,
                                                   const std::string& at) {
    const std::string range = lo || hi  ? NumberRangeRegex(lo, hi, integer)
                              : integer ? std::string("-?(0|[1-9][0-9]*)")
                                        : std::string("-?(0|[1-9][0-9]*)(\\.[0-9]+)?");
    if (range.empty()) return Refused(absl::StrCat(integer ? "integer" : "number", " bounds that no value meets"), at);
    const std::string both = absl::StrCat(range, "(?&)", re);
    if (absl::StatusOr<Regex> compiled = Regex::Compile(both); !compiled.ok())
      return Refused(absl::StrCat(what, " with these bounds (", compiled.status().message(), ")"), at);
    return Terminal(both);
  }

  // A string: its pattern or format (one automaton each), and its length bounds, intersected
  // ("(?&)": both at once) where both are given.
  absl::StatusOr<std::string> String(const json& s, const std::string& at) {
    int min = 0, max = -1;
    if (absl::Status b = Bounds(s, "minLength", "maxLength", at, &min, &max); !b.ok()) return b;
    // A string automaton counts characters in states (about twenty per character with the escapes
    // and UTF-8): past a few hundred its DFA outgrows the limit. A longer maximum is generated up to
    // kLongestGeneratedString (a subset: every output meets the schema; a longer instance is not
    // accepted); a minimum that long is refused by the automaton's limit below.
    if (max > kLongestGeneratedString && min <= kLongestGeneratedString) max = kLongestGeneratedString;
    const std::string lengths =
        min == 0 && max < 0
            ? ""
            : absl::StrCat("\"([^\"\\\\\\x00-\\x1f]|\\\\([\"\\\\\\/bfnrt]|u[0-9a-fA-F]{4}))", Repeat(min, max), "\"");
    absl::StatusOr<std::string> format = Format(s, at);
    if (!format.ok()) return format;
    std::string re;  // the string's text (quotes included) as one regex
    if (s.contains("pattern")) {
      if (!s["pattern"].is_string()) return Refused("pattern that is not a string", at);
      absl::StatusOr<std::string> whole = PatternRegex(s["pattern"].get<std::string>(), at);
      if (!whole.ok()) return whole;
      re = *whole;
    }
    // Each of pattern, format and lengths is one automaton over the string's text; together,
    // their intersection (the regex layer's "(?&)").
    std::vector<std::string> parts;
    for (const std::string* part : std::initializer_list<const std::string*>{&re, &*format, &lengths})
      if (!part->empty()) parts.push_back(*part);
    if (parts.empty()) return std::string("j-string");
    if (parts.size() == 1) return Terminal(parts[0]);
    const std::string both = absl::StrJoin(parts, "(?&)");
    if (absl::StatusOr<Regex> compiled = Regex::Compile(both); !compiled.ok())
      return Refused(absl::StrCat("a pattern, format or length together (", compiled.status().message(), ")"), at);
    return Terminal(both);
  }

  // A string "format": its text (quotes included) as a regex; "" when the name is no format of the
  // spec (validators ignore those: int32, path, url, ...), and so does this.
  absl::StatusOr<std::string> Format(const json& s, const std::string& at) {
    if (!s.contains("format") || !s["format"].is_string()) return std::string();
    const std::string f = s["format"].get<std::string>();
    for (const char* unwritten : {"duration", "idn-email", "idn-hostname", "ipv6", "iri", "iri-reference",
                                  "uri-template", "relative-json-pointer", "regex"})
      if (f == unwritten) return Refused(absl::StrCat("format '", f, "'"), at);
    const std::string* re = FormatRegex(f);
    if (re == nullptr) return std::string();
    return absl::StrCat("\"(?:", *re, ")\"");  // one automaton: masks inside it come from its cache
  }

  // The formats written here, as regexes over the string's text: subsets of their RFCs' languages
  // that need no JSON escape (so the text between the quotes is the string itself). Dates and
  // times by calendar (days per month, leap years; RFC 3339's leap second 60).
  static const std::string* FormatRegex(const std::string& f) {
    static const std::map<std::string, std::string> k = [] {
      const std::string d28 = "(?:0[1-9]|1[0-9]|2[0-8])";
      const std::string date = absl::StrCat(
          "(?:[0-9]{4}-(?:(?:01|03|05|07|08|10|12)-(?:", d28, "|29|30|31)|(?:04|06|09|11)-(?:", d28, "|29|30)|02-", d28,
          ")|(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)-02-29)");
      const std::string hh = "(?:[01][0-9]|2[0-3])";
      const std::string time = absl::StrCat(hh, ":[0-5][0-9]:(?:[0-5][0-9]|60)(?:\\.[0-9]+)?(?:[zZ]|[-+]", hh, ":[0-5][0-9])");
      const std::string octet = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";
      const std::string label = "[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,60}[a-zA-Z0-9])?";
      const std::string host = absl::StrCat(label, "(?:\\.", label, "){0,3}");
      const std::string atom = "[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]+";
      const std::string pct = "%[0-9a-fA-F]{2}";
      const std::string usub = absl::StrCat("(?:[a-zA-Z0-9._~!$&'()*+,;=-]|", pct, ")");
      const std::string pchar = absl::StrCat("(?:[a-zA-Z0-9._~!$&'()*+,;=:@-]|", pct, ")");
      const std::string query = absl::StrCat("(?:[a-zA-Z0-9._~!$&'()*+,;=:@/?-]|", pct, ")*");
      const std::string path = absl::StrCat("(?:/", pchar, "*)*");
      const std::string authority = absl::StrCat(usub, "*(?::[0-9]*)?");
      const std::string tail = absl::StrCat("(?:\\?", query, ")?(?:#", query, ")?");
      const std::string hier = absl::StrCat("//", authority, path, "|/(?:", pchar, "+", path, ")?");
      const std::string uri = absl::StrCat("[a-zA-Z][a-zA-Z0-9+.-]*:(?:", hier, "|", pchar, "+", path, ")?", tail);
      return std::map<std::string, std::string>{
          {"date", date},
          {"time", time},
          {"date-time", absl::StrCat(date, "[Tt]", time)},
          {"uuid", "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"},
          {"ipv4", absl::StrCat(octet, "(?:\\.", octet, "){3}")},
          {"hostname", host},
          {"email", absl::StrCat(atom, "(?:\\.", atom, ")*@", host)},
          {"uri", uri},
          {"uri-reference", absl::StrCat("(?:", uri, "|(?:", hier, "|(?:", usub, "|@)+", path, ")?", tail, ")")},
          {"json-pointer", "(?:/(?:[^\"\\\\\\x00-\\x1f~/]|~[01])*)*"},
      };
    }();
    auto it = k.find(f);
    return it == k.end() ? nullptr : &it->second;
  }

  // A string whose decoded text matches `pattern` (ECMAScript, found anywhere unless anchored), as
  // one /regex/ terminal: the pattern between the quotes, any JSON characters (escapes included)
  // before it unless it starts with ^ and after it unless it ends with $. Exact only where the
  // pattern never takes a character JSON writes escaped (", \, controls): then the text between
  // the quotes is the decoded string itself; other patterns are refused, as are anchors around a
  // top-level alternation (^a|b$ anchors each side, not the whole). PatternRegex: that regex, over
  // the string's JSON text (quotes included).
  absl::StatusOr<std::string> PatternRegex(const std::string& pattern, const std::string& at) {
    const PatternAnchors anchors = SplitAnchors(pattern);
    const std::string& p = anchors.body;
    const bool head = anchors.head, tail = anchors.tail;
    if (anchors.top_alternation && (head || tail))
      return Refused("pattern with anchors around a top-level alternation", at);
    if (absl::StatusOr<Regex> re = Regex::Compile(p); !re.ok())
      return Refused(absl::StrCat("pattern (", re.status().message(), ")"), at);
    // The decoded text's pattern as the JSON text's (", \ and controls escaped).
    absl::StatusOr<std::string> json_text = PatternOverJsonText(p);
    if (!json_text.ok()) return Refused(absl::StrCat("pattern (", json_text.status().message(), ")"), at);
    static constexpr char kAny[] = R"R(([^"\\\x00-\x1f]|\\(["\\\/bfnrt]|u[0-9a-fA-F]{4}))*)R";
    const std::string whole = absl::StrCat("\"", head ? "" : kAny, "(", *json_text, ")", tail ? "" : kAny, "\"");
    absl::StatusOr<Regex> w = Regex::Compile(whole);
    if (!w.ok()) return Refused(absl::StrCat("pattern (", w.status().message(), ")"), at);  // a search can outgrow the DFA limit
    if (!WritesOnlyJsonStrings(*w)) return Refused("pattern whose JSON writing this cannot make exact", at);
    return whole;
  }

  // A regex as a grammar /terminal/.
  static std::string Terminal(const std::string& whole) {
    std::string terminal;  // every '/' of the regex written \x2f: the grammar's /.../ ends at a bare one
    for (size_t i = 0; i < whole.size(); ++i) {
      if (whole[i] == '\\' && i + 1 < whole.size()) {
        terminal += whole[i];
        terminal += whole[i + 1] == '/' ? std::string("x2f") : std::string(1, whole[i + 1]);
        ++i;
      } else {
        terminal += whole[i] == '/' ? std::string("\\x2f") : std::string(1, whole[i]);
      }
    }
    return absl::StrCat("/", terminal, "/");
  }

  absl::StatusOr<std::string> Object(const json& s, const std::string& at) {
    std::vector<std::pair<std::string, std::string>> props;  // JSON-encoded name, value expression
    std::set<std::string> required;
    std::vector<std::string> required_order;
    if (s.contains("required")) {
      if (!s["required"].is_array()) return Refused("required that is not a list", at);
      for (const json& r : s["required"]) {
        if (!r.is_string()) return Refused("required that is not a list of names", at);
        if (required.insert(r.get<std::string>()).second) required_order.push_back(r.get<std::string>());
      }
    }
    // patternProperties (one pattern): members whose name matches it take its schema. The extra
    // members written are those: names outside every pattern are not generated even where
    // additionalProperties allows them (a subset of the valid objects, as the member order is).
    std::optional<Regex> name_re;
    std::string name_terminal;
    const json* pattern_schema = nullptr;
    if (s.contains("patternProperties") && !s["patternProperties"].empty()) {
      const json& pp = s["patternProperties"];
      if (!pp.is_object()) return Refused("patternProperties that is not an object", at);
      if (pp.size() > 1) return Refused("patternProperties with several patterns", at);
      absl::StatusOr<std::string> whole = PatternRegex(pp.begin().key(), at + "/patternProperties");
      if (!whole.ok()) return whole;
      absl::StatusOr<Regex> re = Regex::Compile(*whole);
      if (!re.ok()) return Refused(absl::StrCat("patternProperties (", re.status().message(), ")"), at);
      name_re = std::move(*re);
      name_terminal = Terminal(*whole);
      pattern_schema = &pp.begin().value();
    }
    auto pattern_names = [&](const std::string& name) { return name_re && name_re->Matches(json(name).dump()); };
    std::set<std::string> listed;
    if (s.contains("properties")) {
      if (!s["properties"].is_object()) return Refused("properties that is not an object", at);
      for (auto it = s["properties"].begin(); it != s["properties"].end(); ++it) {
        if (pattern_names(it.key()))
          return Refused(absl::StrCat("a property '", it.key(), "' that patternProperties also matches"), at);
        listed.insert(it.key());
        // A member no value satisfies may not appear (an intersection can say so, and schemas do:
        // an enum of strings beside "type": "object").
        absl::StatusOr<json> normal = algebra_.Normalize(it.value(), absl::StrCat(at, "/properties/", it.key()));
        if (normal.ok() && *normal == false) {
          if (required.count(it.key())) return Refused(absl::StrCat("a required property '", it.key(), "' that no value satisfies"), at);
          continue;
        }
        absl::StatusOr<std::string> v = Schema(it.value(), absl::StrCat(at, "/properties/", it.key()));
        if (!v.ok()) return v.status();
        props.emplace_back(it.key(), *v);
      }
    }
    std::string extra;  // an extra member's value expression; empty: no extra members
    if (!s.contains("additionalProperties") || s["additionalProperties"] == true) {
      extra = "j-value";
    } else if (s["additionalProperties"] != false) {
      absl::StatusOr<std::string> v = Schema(s["additionalProperties"], at + "/additionalProperties");
      if (!v.ok()) return v;
      extra = *v;
    }
    // A required name no property lists is an additional member that must be there: written after
    // the listed ones, its value under additionalProperties.
    for (const std::string& r : required_order) {
      if (listed.count(r)) continue;
      if (pattern_names(r)) return Refused(absl::StrCat("a required name '", r, "' that patternProperties matches"), at);
      if (extra.empty()) return Refused(absl::StrCat("a required property '", r, "' that additionalProperties forbids"), at);
      props.emplace_back(r, extra);
      listed.insert(r);
    }
    // A_i: members from property i on, none written yet; B_i: the same after some member (so each
    // starts with a comma). Listed properties come in the schema's order.
    const size_t n = props.size();
    std::string a_next, b_next;
    std::string key_expr;  // an extra member's name
    if (name_re) {
      extra.clear();
      if (*pattern_schema != false) {
        absl::StatusOr<std::string> v = Schema(*pattern_schema, at + "/patternProperties");
        if (!v.ok()) return v;
        extra = *v;
        key_expr = name_terminal;  // no listed name matches it (refused above)
      }
    } else if (!extra.empty()) {
      // An extra member's name is any string but the listed ones (else a listed property with a
      // wrong value would pass as an extra one).
      absl::StatusOr<std::string> key = OtherName(listed, at);
      if (!key.ok()) return key;
      key_expr = *key;
    }
    if (extra.empty()) {
      a_next = "";
      b_next = "";
    } else {
      const std::string* key = &key_expr;
      absl::StatusOr<std::string> member = NewRule(absl::StrCat(*key, " ws \":\" ws ", extra));
      if (!member.ok()) return member;
      absl::StatusOr<std::string> b = NewRule(absl::StrCat("( ws \",\" ws ", *member, " )*"));
      if (!b.ok()) return b;
      absl::StatusOr<std::string> a = NewRule(absl::StrCat("( ", *member, " ", *b, " )?"));
      if (!a.ok()) return a;
      a_next = *a;
      b_next = *b;
    }
    for (size_t i = n; i-- > 0;) {
      nlohmann::json name = props[i].first;
      const std::string member = absl::StrCat(Lit(name.dump()), " ws \":\" ws ", props[i].second);
      const bool req = required.count(props[i].first) > 0;
      std::string a = absl::StrCat(member, " ", b_next), b = absl::StrCat("ws \",\" ws ", member, " ", b_next);
      if (!req) {
        a = absl::StrCat(a, " | ", a_next.empty() ? "\"\"" : a_next);
        b = absl::StrCat(b, " | ", b_next.empty() ? "\"\"" : b_next);
      }
      absl::StatusOr<std::string> ar = NewRule(a);
      if (!ar.ok()) return ar;
      absl::StatusOr<std::string> br = NewRule(b);
      if (!br.ok()) return br;
      a_next = *ar;
      b_next = *br;
    }
    return absl::StrCat("\"{\" ws ", a_next, " ws \"}\"");
  }

  // The trie node of the names at `prefix`: the characters that continue some name, and whether a
  // name ends there.
  static std::pair<std::set<char>, bool> NameTrieNode(const std::set<std::string>& names, const std::string& prefix) {
    std::set<char> next;
    bool ends_here = false;
    for (const std::string& n : names) {
      if (n.size() < prefix.size() || n.compare(0, prefix.size(), prefix) != 0) continue;
      if (n.size() == prefix.size()) ends_here = true;
      else next.insert(n[prefix.size()]);
    }
    return {std::move(next), ends_here};
  }

  // Names of up to this many characters in all make one automaton (gla-brown's masks inside it
  // follow the automaton alone); more, and the rules below (the DFA would outgrow its state limit).
  static constexpr size_t kMaxRegexNameChars = 256;

  // A JSON string (quotes included) that is none of `names`, as one /regex/ terminal (so a mask
  // inside it follows one automaton): a trie of the names, each node taking a child's character
  // and going on, or another character (or an escape) and any rest, or (where no name ends) the
  // closing quote. Names are plain ASCII here (others are refused); every name character is
  // written \xHH, so none is a regex or grammar metacharacter.
  absl::StatusOr<std::string> OtherName(const std::set<std::string>& names, const std::string& at) {
    if (names.empty()) return std::string("j-string");
    for (const std::string& n : names)
      for (unsigned char c : n)
        if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\')
          return Refused("additional properties beside property names that are not plain ASCII", at);
    size_t trie_nodes = 0;  // an upper bound: the names' characters
    for (const std::string& n : names) trie_nodes += n.size();
    if (trie_nodes > kMaxRegexNameChars) return OtherNameRules(names);
    static constexpr char kChar[] = R"R(([^"\\\x00-\x1f]|\\(["\\\/bfnrt]|u[0-9a-fA-F]{4})))R";
    std::function<std::string(const std::string&)> node = [&](const std::string& prefix) {
      const auto [next, ends_here] = NameTrieNode(names, prefix);
      std::string alt = ends_here ? "" : "\"";  // a proper prefix of a name is another string
      std::string other = "[^\"\\\\\\x00-\\x1f";
      for (char c : next) {
        absl::StrAppendFormat(&alt, "%s\\x%02x%s", alt.empty() ? "" : "|", static_cast<unsigned char>(c), node(prefix + c));
        absl::StrAppendFormat(&other, "\\x%02x", static_cast<unsigned char>(c));
      }
      absl::StrAppend(&alt, alt.empty() ? "" : "|", other, "]", kChar, "*\"|\\\\([\"\\\\\\/bfnrt]|u[0-9a-fA-F]{4})", kChar,
                      "*\"");
      return absl::StrCat("(", alt, ")");
    };
    return absl::StrCat("/\"", node(""), "/");
  }

  // The same as rules, for name sets whose automaton would be large (the regex compiler does not
  // minimise: every trie node would keep its own copy of "any rest"): each trie node's rule takes
  // a child's character and goes on, or another character (or an escape) and any rest, or (where no
  // name ends) the closing quote.
  absl::StatusOr<std::string> OtherNameRules(const std::set<std::string>& names) {
    std::function<absl::StatusOr<std::string>(const std::string&)> node = [&](const std::string& prefix)
        -> absl::StatusOr<std::string> {
      const auto [next, ends_here] = NameTrieNode(names, prefix);
      std::string alt = ends_here ? "" : "\"\\\"\"";  // a proper prefix of a name is another string
      std::string other = "[^\"\\\\\\x00-\\x1f";
      for (char c : next) {
        absl::StatusOr<std::string> child = node(prefix + c);
        if (!child.ok()) return child;
        absl::StrAppend(&alt, alt.empty() ? "" : " | ", Lit(std::string(1, c)), " ", *child);
        absl::StrAppendFormat(&other, "\\x%02x", static_cast<unsigned char>(c));
      }
      absl::StrAppend(&alt, alt.empty() ? "" : " | ", other, "] j-char* \"\\\"\" | \"\\\\\" ( [\"\\\\/bfnrt] | \"u\" j-hex{4} ) j-char* \"\\\"\"");
      return NewRule(alt);
    };
    absl::StatusOr<std::string> rest = node("");
    if (!rest.ok()) return rest;
    return absl::StrCat("\"\\\"\" ", *rest);
  }

  absl::StatusOr<std::string> Array(const json& s, const std::string& at) {
    int min = 0, max = -1;
    if (absl::Status b = Bounds(s, "minItems", "maxItems", at, &min, &max); !b.ok()) return b;
    if (s.contains("prefixItems") && !s["prefixItems"].is_array()) return Refused("prefixItems that is not a list", at);
    const bool tuple = s.contains("prefixItems") || (s.contains("items") && s["items"].is_array());
    if (tuple) {
      if (s.contains("minItems") || s.contains("maxItems")) return Refused("a tuple with minItems / maxItems", at);
      const json& items = s.contains("prefixItems") ? s["prefixItems"] : s["items"];
      const json* rest = s.contains("prefixItems") ? (s.contains("items") ? &s["items"] : nullptr)
                                                   : (s.contains("additionalItems") ? &s["additionalItems"] : nullptr);
      std::string tail;  // what may follow the tuple's elements
      if (rest == nullptr || *rest == true) {
        tail = "( ws \",\" ws j-value )*";
      } else if (*rest != false) {
        absl::StatusOr<std::string> r = Schema(*rest, at + "/additionalItems");
        if (!r.ok()) return r;
        tail = absl::StrCat("( ws \",\" ws ", *r, " )*");
      }
      // Elements i.. : each optional (a shorter array is valid), written after a comma but the first.
      std::string next = tail.empty() ? "" : tail;
      for (size_t i = items.size(); i-- > 0;) {
        absl::StatusOr<std::string> e = Schema(items[i], absl::StrCat(at, "/items/", i));
        if (!e.ok()) return e;
        absl::StatusOr<std::string> r =
            NewRule(absl::StrCat("( ", i == 0 ? "" : "ws \",\" ws ", *e, " ", next, " )?"));
        if (!r.ok()) return r;
        next = *r;
      }
      return absl::StrCat("\"[\" ws ", next, " ws \"]\"");
    }
    std::string e = "j-value";
    if (s.contains("items")) {
      absl::StatusOr<std::string> v = Schema(s["items"], at + "/items");
      if (!v.ok()) return v;
      e = *v;
    }
    if (s.contains("additionalItems") && !s.contains("items")) return Refused("additionalItems without items", at);
    if (max == 0) return std::string("\"[\" ws \"]\"");
    absl::StatusOr<std::string> elem = NewRule(e);
    if (!elem.ok()) return elem;
    const std::string more = absl::StrCat("( ws \",\" ws ", *elem, " )", Repeat(std::max(min - 1, 0), max < 0 ? -1 : max - 1));
    if (min >= 1) return absl::StrCat("\"[\" ws ", *elem, " ", more, " ws \"]\"");
    return absl::StrCat("\"[\" ws ( ", *elem, " ", more, " )? ws \"]\"");
  }

  json root_;
  SchemaAlgebra algebra_{root_};
  const JsonSchemaLimits& limits_;
  std::string rules_;
  std::map<std::string, std::string> refs_;
  int count_ = 0, depth_ = 0;
};

}  // namespace

absl::StatusOr<std::string> JsonSchemaToGbnf(std::string_view schema_json, const JsonSchemaLimits& limits) {
  if (schema_json.size() > limits.max_schema_bytes)
    return absl::ResourceExhaustedError(absl::StrCat("json schema: ", schema_json.size(), " bytes, over the limit of ",
                                                     limits.max_schema_bytes));
  json schema = json::parse(schema_json, nullptr, /*allow_exceptions=*/false);
  if (schema.is_discarded()) return absl::InvalidArgumentError("json schema: not valid JSON");
  // Values inside the schema (const, enum, defaults) are dumped and walked recursively below.
  if (!NestedWithin(schema, kMaxJsonDepth))
    return absl::ResourceExhaustedError(absl::StrCat("json schema: nested more than ", kMaxJsonDepth, " deep"));
  // The compiler checks each keyword's shape before it reads it; a check it lacks makes nlohmann
  // throw (a scalar indexed as a list, say). That is a compiler bug, and it costs the request that
  // found it (INTERNAL, which the fuzzer reports as a finding), never the server.
  try {
    return Compiler(std::move(schema), limits).Run();
  } catch (const json::exception& e) {
    return absl::InternalError(absl::StrCat("json schema: the compiler met a shape it does not check for (", e.what(),
                                            "); please report this schema"));
  }
}

}  // namespace gla::constraints
