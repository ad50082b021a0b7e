#include "engine/constraints/json_schema.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/constraints/json_depth.h"
#include "engine/constraints/regex.h"
#include "nlohmann/json.hpp"

namespace gla::constraints {

namespace {

using json = nlohmann::ordered_json;

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
j-date ::= [0-9]{4} "-" ( ( "01" | "03" | "05" | "07" | "08" | "10" | "12" ) "-" j-d31 | ( "04" | "06" | "09" | "11" ) "-" j-d30 | "02-" j-d28 ) | j-leap "-02-29"
j-leap ::= [0-9]{2} ( "0" [48] | [2468] [048] | [13579] [26] ) | ( [02468] [048] | [13579] [26] ) "00"
j-d28 ::= "0" [1-9] | "1" [0-9] | "2" [0-8]
j-d30 ::= j-d28 | "29" | "30"
j-d31 ::= j-d30 | "31"
j-hh ::= [01] [0-9] | "2" [0-3]
j-mm ::= [0-5] [0-9]
j-time ::= j-hh ":" j-mm ":" ( j-mm | "60" ) ( "." [0-9]+ )? ( [zZ] | [-+] j-hh ":" j-mm )
j-hex ::= [0-9a-fA-F]
)G";

// Keywords that only annotate: they change nothing a generator must do.
const std::set<std::string>& Annotations() {
  static const std::set<std::string> k = {"title", "description", "default", "examples", "$schema", "$id", "id",
                                          "$comment", "readOnly", "writeOnly", "deprecated", "definitions", "$defs",
                                          "example", "$anchor"};
  return k;
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
    return absl::StrCat("root ::= ", *top, "\n", rules_, kBase);
  }

 private:
  absl::Status Refused(const std::string& what, const std::string& at) const {
    return absl::InvalidArgumentError(absl::StrCat("json schema at ", at, ": refused: ", what,
                                                   " (cannot be enforced yet; docs/structured-output.md)"));
  }

  absl::StatusOr<std::string> NewRule(const std::string& body) {
    absl::StatusOr<std::string> name = ReserveRule();
    if (!name.ok()) return name;
    absl::StrAppend(&rules_, *name, " ::= ", body, "\n");
    return name;
  }
  absl::StatusOr<std::string> ReserveRule() {
    if (++count_ > limits_.max_rules)
      return absl::ResourceExhaustedError(absl::StrCat("json schema: more than ", limits_.max_rules, " rules"));
    return absl::StrCat("s", count_);
  }

  absl::StatusOr<int> Count(const json& s, const char* key, const std::string& at) {
    const json& v = s[key];
    if (!v.is_number_integer() || v.get<int64_t>() < 0) return Refused(absl::StrCat(key, " that is not a count"), at);
    if (v.get<int64_t>() > limits_.max_repeat)
      return absl::ResourceExhaustedError(
          absl::StrCat("json schema at ", at, ": ", key, " ", v.get<int64_t>(), " is over ", limits_.max_repeat));
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

  // Whether a value is of the JSON Schema type(s) `type` (null: any). An integer is a number
  // without a fractional part (1.0 included, as drafts 6 and later say).
  static bool OfType(const json& v, const json* type) {
    if (type == nullptr) return true;
    auto one = [&](const json& t) {
      if (!t.is_string()) return false;
      const std::string n = t.get<std::string>();
      if (n == "integer")
        return v.is_number_integer() || (v.is_number_float() && std::trunc(v.get<double>()) == v.get<double>());
      return (n == "number" && v.is_number()) || (n == "string" && v.is_string()) || (n == "boolean" && v.is_boolean()) ||
             (n == "null" && v.is_null()) || (n == "array" && v.is_array()) || (n == "object" && v.is_object());
    };
    if (type->is_array()) return std::any_of(type->begin(), type->end(), one);
    return one(*type);
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

  absl::StatusOr<std::string> SchemaInner(const json& s, const std::string& at) {
    if (s.is_boolean()) {
      if (s.get<bool>()) return std::string("j-value");
      return Refused("the schema false (no value is valid)", at);
    }
    if (!s.is_object()) return absl::InvalidArgumentError(absl::StrCat("json schema at ", at, ": not an object"));
    static const std::set<std::string> kKnown = {
        "type", "enum", "const", "$ref", "anyOf", "oneOf", "allOf", "properties", "required",
        "additionalProperties", "items", "prefixItems", "additionalItems", "minItems", "maxItems", "minLength",
        "maxLength", "format", "pattern", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"};
    std::vector<std::string> constraining;
    for (auto it = s.begin(); it != s.end(); ++it) {
      const std::string& k = it.key();
      if (Annotations().count(k) || k.rfind("x-", 0) == 0) continue;
      if (!kKnown.count(k)) return Refused(k, at);
      constraining.push_back(k);
    }
    auto only = [&](std::initializer_list<const char*> allowed) {
      for (const std::string& k : constraining) {
        bool ok = false;
        for (const char* a : allowed) ok = ok || k == a;
        if (!ok) return false;
      }
      return true;
    };
    if (s.contains("$ref")) {
      if (!only({"$ref"})) return Refused("$ref beside other keywords", at);
      if (!s["$ref"].is_string()) return absl::InvalidArgumentError(absl::StrCat("json schema at ", at, ": $ref not a string"));
      return Ref(s["$ref"].get<std::string>(), at);
    }
    // const / enum with a type: only the values of that type (an instance must satisfy both; a
    // value of another type is no instance at all, and none left is a schema nothing satisfies).
    const json* type = s.contains("type") ? &s["type"] : nullptr;
    if (s.contains("const")) {
      if (!only({"const", "type"})) return Refused("const beside other keywords", at);
      if (!OfType(s["const"], type)) return Refused("a const that is not of the schema's type (nothing satisfies it)", at);
      return Lit(s["const"].dump());
    }
    if (s.contains("enum")) {
      if (!s["enum"].is_array() || s["enum"].empty()) return Refused("an enum that is not a non-empty list", at);
      if (!only({"enum", "type"})) return Refused("enum beside other keywords", at);
      std::string alt;
      for (const json& v : s["enum"])
        if (OfType(v, type)) absl::StrAppend(&alt, alt.empty() ? "" : " | ", Lit(v.dump()));
      if (alt.empty()) return Refused("an enum with no value of the schema's type (nothing satisfies it)", at);
      return absl::StrCat("( ", alt, " )");
    }
    for (const char* comb : {"anyOf", "oneOf", "allOf"}) {
      if (!s.contains(comb)) continue;
      if (!only({comb})) return Refused(absl::StrCat(comb, " beside other keywords"), at);
      const json& branches = s[comb];
      if (!branches.is_array() || branches.empty()) return Refused(absl::StrCat(comb, " that is not a non-empty list"), at);
      if (std::string(comb) == "allOf") {
        if (branches.size() == 1) return Schema(branches[0], at + "/allOf/0");
        std::optional<json> merged = MergeObjects(branches);
        if (!merged) return Refused("allOf of several schemas (other than objects with distinct properties)", at);
        return Schema(*merged, at + "/allOf");
      }
      if (std::string(comb) == "oneOf") {  // exact only when the branches cannot both match
        std::set<std::string> types;
        for (const json& b : branches) {
          if (!b.is_object() || !b.contains("type") || !b["type"].is_string() || !types.insert(b["type"].get<std::string>()).second ||
              (b["type"] == "number" && types.count("integer")) || (b["type"] == "integer" && types.count("number")))
            return Refused("oneOf whose branches are not of distinct types", at);
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

  // allOf of object schemas that only list properties (each name once across them) and required
  // names, none closing itself with additionalProperties: one object schema with all of them (the
  // same instances). Anything else: nullopt (refused).
  std::optional<json> MergeObjects(const json& branches) {
    json merged = json::object();
    json props = json::object();
    json required = json::array();
    for (const json& b0 : branches) {
      const json* b = &b0;
      for (int hops = 0; b->is_object() && b->contains("$ref") && hops < 20; ++hops) {  // $ref alone
        if (b->size() != 1 || !(*b)["$ref"].is_string()) return std::nullopt;
        const std::string ref = (*b)["$ref"].get<std::string>();
        if (ref.rfind("#", 0) != 0) return std::nullopt;
        try {
          b = ref.size() == 1 ? &root_ : &root_.at(json::json_pointer(ref.substr(1)));
        } catch (...) {
          return std::nullopt;
        }
      }
      if (!b->is_object()) return std::nullopt;
      for (auto it = b->begin(); it != b->end(); ++it) {
        const std::string& k = it.key();
        if (Annotations().count(k) || k.rfind("x-", 0) == 0) continue;
        if (k == "type") {
          if (it.value() != "object") return std::nullopt;
        } else if (k == "properties" && it->is_object()) {
          for (auto p = it->begin(); p != it->end(); ++p) {
            if (props.contains(p.key())) return std::nullopt;
            props[p.key()] = p.value();
          }
        } else if (k == "required" && it->is_array()) {
          for (const json& r : *it) required.push_back(r);
        } else {
          return std::nullopt;
        }
      }
    }
    merged["type"] = "object";
    merged["properties"] = std::move(props);
    if (!required.empty()) merged["required"] = std::move(required);
    return merged;
  }

  absl::StatusOr<std::string> Typed(const json& s, const std::string& type, const std::string& at) {
    if (type == "null") return std::string("\"null\"");
    if (type == "boolean") return std::string("( \"true\" | \"false\" )");
    if (type == "integer") return Integer(s, at);
    if (type == "number") return Number(s, at);
    if (type == "string") return String(s, at);
    if (type == "object") return Object(s, at);
    if (type == "array") return Array(s, at);
    return Refused(absl::StrCat("type '", type, "'"), at);
  }

  // An integer's bounds: [*lo, *hi] (inclusive; +-2^62 when unbounded). Numbers as bounds are
  // rounded inward; exclusive bounds as numbers (draft 6+) or as booleans (draft 4).
  absl::Status IntegerBounds(const json& s, const std::string& at, int64_t* lo, int64_t* hi) {
    constexpr int64_t kInf = int64_t{1} << 62;
    *lo = -kInf;
    *hi = kInf;
    auto bound = [&](const char* key, bool upper, bool exclusive) -> absl::Status {
      const json& v = s[key];
      if (!v.is_number()) return Refused(absl::StrCat(key, " that is not a number"), at);
      const double d = v.get<double>();
      if (!(d > -1e18 && d < 1e18)) return Refused(absl::StrCat(key, " beyond 1e18"), at);
      int64_t b = static_cast<int64_t>(upper ? std::floor(d) : std::ceil(d));
      if (exclusive && static_cast<double>(b) == d) b += upper ? -1 : 1;
      if (upper) *hi = std::min(*hi, b);
      else *lo = std::max(*lo, b);
      return absl::OkStatus();
    };
    const bool draft4_min = s.contains("exclusiveMinimum") && s["exclusiveMinimum"].is_boolean();
    const bool draft4_max = s.contains("exclusiveMaximum") && s["exclusiveMaximum"].is_boolean();
    if (s.contains("minimum")) {
      if (absl::Status b = bound("minimum", false, draft4_min && s["exclusiveMinimum"].get<bool>()); !b.ok()) return b;
    }
    if (s.contains("maximum")) {
      if (absl::Status b = bound("maximum", true, draft4_max && s["exclusiveMaximum"].get<bool>()); !b.ok()) return b;
    }
    if (s.contains("exclusiveMinimum") && !draft4_min) {
      if (absl::Status b = bound("exclusiveMinimum", false, true); !b.ok()) return b;
    }
    if (s.contains("exclusiveMaximum") && !draft4_max) {
      if (absl::Status b = bound("exclusiveMaximum", true, true); !b.ok()) return b;
    }
    if (*lo > *hi) return Refused("integer bounds that no integer meets", at);
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> Integer(const json& s, const std::string& at) {
    int64_t lo = 0, hi = 0;
    if (absl::Status b = IntegerBounds(s, at, &lo, &hi); !b.ok()) return b;
    constexpr int64_t kInf = int64_t{1} << 62;
    if (lo == -kInf && hi == kInf) return std::string("j-int");
    std::string alt;
    auto add = [&](const std::string& e) { absl::StrAppend(&alt, alt.empty() ? "" : " | ", e); };
    if (lo <= 0 && hi >= 0) add("\"0\"");
    if (hi >= 1) add(Magnitudes(std::max<int64_t>(lo, 1), hi == kInf ? -1 : hi));
    if (lo <= -1) add(absl::StrCat("\"-\" ", Magnitudes(std::max<int64_t>(-hi, 1), lo == -kInf ? -1 : -lo)));
    return absl::StrCat("( ", alt, " )");
  }

  // Numbers: bounds only when they say "not negative" (minimum 0); others are refused.
  absl::StatusOr<std::string> Number(const json& s, const std::string& at) {
    const bool bounded = s.contains("minimum") || s.contains("maximum") || s.contains("exclusiveMinimum") ||
                         s.contains("exclusiveMaximum");
    if (!bounded) return std::string("j-number");
    if (s.contains("minimum") && s["minimum"].is_number() && s["minimum"].get<double>() == 0.0 &&
        !s.contains("maximum") && !s.contains("exclusiveMaximum") &&
        !(s.contains("exclusiveMinimum") && s["exclusiveMinimum"] != false))
      return std::string("( \"0\" | [1-9] [0-9]* ) ( \".\" [0-9]+ )? ( [eE] [-+]? [0-9]+ )?");
    return Refused("number bounds other than minimum 0", at);
  }

  // The decimal numerals of [a, b] (a >= 1; b < 0: unbounded), no leading zeros: per length, a
  // digit-by-digit walk that is tight to a's and b's digits while it follows them.
  std::string Magnitudes(int64_t a, int64_t b) {
    const std::string as = std::to_string(a);
    std::string alt;
    auto add = [&](const std::string& e) { absl::StrAppend(&alt, alt.empty() ? "" : " | ", e); };
    auto same_length = [&](const std::string& x, const std::string& y) {  // x <= y, same length
      std::function<std::string(size_t, bool, bool)> walk = [&](size_t i, bool tl, bool th) -> std::string {
        if (i == x.size()) return "";
        const int lo = tl ? x[i] - '0' : 0, hi = th ? y[i] - '0' : 9;
        std::string out;
        auto piece = [&](int d0, int d1, bool ntl, bool nth) {
          if (d0 > d1) return;
          const std::string digit = d0 == d1 ? absl::StrCat("\"", d0, "\"") : absl::StrCat("[", d0, "-", d1, "]");
          const std::string rest = walk(i + 1, ntl, nth);
          absl::StrAppend(&out, out.empty() ? "" : " | ", digit, rest.empty() ? "" : " ", rest);
        };
        if (lo == hi) {
          piece(lo, hi, tl, th);
        } else {
          piece(lo, lo, tl, false);
          piece(lo + 1, hi - 1, false, false);
          piece(hi, hi, false, th);
        }
        return out.find('|') == std::string::npos ? out : absl::StrCat("( ", out, " )");
      };
      return walk(0, true, true);
    };
    const size_t max_len = b < 0 ? as.size() : std::to_string(b).size();
    for (size_t len = as.size(); len <= max_len; ++len) {
      const std::string lo = len == as.size() ? as : "1" + std::string(len - 1, '0');
      const std::string hi = b >= 0 && len == max_len ? std::to_string(b) : std::string(len, '9');
      add(same_length(lo, hi));
    }
    if (b < 0) add(absl::StrCat("[1-9] [0-9]{", as.size(), ",}"));  // every longer numeral
    return alt.find('|') == std::string::npos ? alt : absl::StrCat("( ", alt, " )");
  }

  absl::StatusOr<std::string> String(const json& s, const std::string& at) {
    if (s.contains("pattern")) {
      if (s.contains("format") || s.contains("minLength") || s.contains("maxLength"))
        return Refused("pattern beside a format or a length", at);
      if (!s["pattern"].is_string()) return Refused("pattern that is not a string", at);
      return Pattern(s["pattern"].get<std::string>(), at);
    }
    if (s.contains("format")) {
      if (s.contains("minLength") || s.contains("maxLength")) return Refused("format with a length", at);
      const std::string f = s["format"].is_string() ? s["format"].get<std::string>() : "";
      if (f == "date") return std::string("\"\\\"\" j-date \"\\\"\"");
      if (f == "time") return std::string("\"\\\"\" j-time \"\\\"\"");
      if (f == "date-time") return std::string("\"\\\"\" j-date [Tt] j-time \"\\\"\"");
      if (f == "uuid")
        return std::string("\"\\\"\" j-hex{8} \"-\" j-hex{4} \"-\" j-hex{4} \"-\" j-hex{4} \"-\" j-hex{12} \"\\\"\"");
      return Refused(absl::StrCat("format '", f, "'"), at);
    }
    int min = 0, max = -1;
    if (absl::Status b = Bounds(s, "minLength", "maxLength", at, &min, &max); !b.ok()) return b;
    if (min == 0 && max < 0) return std::string("j-string");
    return absl::StrCat("/\"([^\"\\\\\\x00-\\x1f]|\\\\([\"\\\\\\/bfnrt]|u[0-9a-fA-F]{4}))", Repeat(min, max),
                        "\"/");  // one terminal: see j-string
  }

  // A string whose decoded text matches `pattern` (ECMAScript, found anywhere unless anchored), as
  // one /regex/ terminal: the pattern between the quotes, any JSON characters (escapes included)
  // before it unless it starts with ^ and after it unless it ends with $. Exact only where the
  // pattern never takes a character JSON writes escaped (", \, controls): then the text between
  // the quotes is the decoded string itself; other patterns are refused, as are anchors around a
  // top-level alternation (^a|b$ anchors each side, not the whole).
  absl::StatusOr<std::string> Pattern(std::string p, const std::string& at) {
    const bool head = !p.empty() && p[0] == '^';
    if (head) p.erase(0, 1);
    size_t slashes = 0;  // backslashes before a final $: an odd count escapes it
    for (size_t i = p.size() >= 2 ? p.size() - 1 : 0; i-- > 0 && p[i] == '\\';) ++slashes;
    const bool tail = !p.empty() && p.back() == '$' && slashes % 2 == 0;
    if (tail) p.pop_back();
    int depth = 0;
    bool in_class = false, top_alternation = false;
    for (size_t i = 0; i < p.size(); ++i) {
      if (p[i] == '\\') {
        ++i;
      } else if (in_class) {
        in_class = p[i] != ']';
      } else if (p[i] == '[') {
        in_class = true;
      } else if (p[i] == '(') {
        ++depth;
      } else if (p[i] == ')') {
        --depth;
      } else if (p[i] == '|' && depth == 0) {
        top_alternation = true;
      }
    }
    if (top_alternation && (head || tail)) return Refused("pattern with anchors around a top-level alternation", at);
    absl::StatusOr<Regex> re = Regex::Compile(p);
    if (!re.ok()) return Refused(absl::StrCat("pattern (", re.status().message(), ")"), at);
    for (int state = 0; state < re->num_states(); ++state)
      for (int b = 0; b < 0x100; ++b)
        if ((b < 0x20 || b == '"' || b == '\\') && re->Next(state, static_cast<uint8_t>(b)) != Regex::kDead)
          return Refused("pattern that may take a character JSON escapes", at);
    static constexpr char kAny[] = R"R(([^"\\\x00-\x1f]|\\(["\\\/bfnrt]|u[0-9a-fA-F]{4}))*)R";
    const std::string whole = absl::StrCat("\"", head ? "" : kAny, "(", p, ")", tail ? "" : kAny, "\"");
    if (absl::StatusOr<Regex> w = Regex::Compile(whole); !w.ok())  // a search can outgrow the DFA limit
      return Refused(absl::StrCat("pattern (", w.status().message(), ")"), at);
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
    if (s.contains("required")) {
      if (!s["required"].is_array()) return Refused("required that is not a list", at);
      for (const json& r : s["required"]) {
        if (!r.is_string()) return Refused("required that is not a list of names", at);
        required.insert(r.get<std::string>());
      }
    }
    std::set<std::string> listed;
    if (s.contains("properties")) {
      if (!s["properties"].is_object()) return Refused("properties that is not an object", at);
      for (auto it = s["properties"].begin(); it != s["properties"].end(); ++it) {
        absl::StatusOr<std::string> v = Schema(it.value(), absl::StrCat(at, "/properties/", it.key()));
        if (!v.ok()) return v.status();
        props.emplace_back(it.key(), *v);
        listed.insert(it.key());
      }
    }
    for (const std::string& r : required)
      if (!listed.count(r)) return Refused(absl::StrCat("a required property '", r, "' without a schema"), at);
    std::string extra;  // an extra member's value expression; empty: no extra members
    if (!s.contains("additionalProperties") || s["additionalProperties"] == true) {
      extra = "j-value";
    } else if (s["additionalProperties"] != false) {
      absl::StatusOr<std::string> v = Schema(s["additionalProperties"], at + "/additionalProperties");
      if (!v.ok()) return v;
      extra = *v;
    }
    // A_i: members from property i on, none written yet; B_i: the same after some member (so each
    // starts with a comma). Listed properties come in the schema's order.
    const size_t n = props.size();
    std::string a_next, b_next;
    if (extra.empty()) {
      a_next = "";
      b_next = "";
    } else {
      // An extra member's name is any string but the listed ones (else a listed property with a
      // wrong value would pass as an extra one).
      absl::StatusOr<std::string> key = OtherName(listed, at);
      if (!key.ok()) return key;
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
  return Compiler(std::move(schema), limits).Run();
}

}  // namespace gla::constraints
