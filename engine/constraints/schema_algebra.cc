#include "engine/constraints/schema_algebra.h"

#include "engine/constraints/number_range.h"

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/constraints/json_text_pattern.h"
#include "engine/constraints/regex.h"

namespace gla::constraints {

namespace {

using json = SchemaJson;

// Intersections inside intersections ($refs followed on the way): deeper is refused, which also
// ends a $ref cycle through allOf.
constexpr int kMaxDepth = 48;
// An intersection with an alternation distributes over its branches: at most this many result.
constexpr size_t kMaxBranches = 256;

bool IsTrue(const json& s) { return s.is_boolean() && s.get<bool>(); }
bool IsFalse(const json& s) { return s.is_boolean() && !s.get<bool>(); }

json Without(const json& s, std::initializer_list<const char*> keys) {
  json out = json::object();
  for (auto it = s.begin(); it != s.end(); ++it)
    if (std::none_of(keys.begin(), keys.end(), [&](const char* k) { return it.key() == k; })) out[it.key()] = it.value();
  return out;
}

bool OfTypeName(const json& v, const std::string& n) {
  if (n == "integer")  // a number without a fractional part (1.0 included, drafts 6 and later)
    return v.is_number_integer() || (v.is_number_float() && std::trunc(v.get<double>()) == v.get<double>());
  return (n == "number" && v.is_number()) || (n == "string" && v.is_string()) || (n == "boolean" && v.is_boolean()) ||
         (n == "null" && v.is_null()) || (n == "array" && v.is_array()) || (n == "object" && v.is_object());
}

// The type names `s` declares, in its order; nullopt: no type (any). Entries that are not names
// make it nullopt too (the compiler refuses them).
std::optional<std::vector<std::string>> Types(const json& s) {
  if (!s.is_object() || !s.contains("type")) return std::nullopt;
  const json& t = s["type"];
  std::vector<std::string> out;
  if (t.is_string()) return std::vector<std::string>{t.get<std::string>()};
  if (!t.is_array()) return std::nullopt;
  for (const json& e : t) {
    if (!e.is_string()) return std::nullopt;
    out.push_back(e.get<std::string>());
  }
  return out;
}

// The kinds of JSON value a schema may take (integer is a number); all six without a type.
std::set<std::string> Kinds(const json& s) {
  std::optional<std::vector<std::string>> t = Types(s);
  if (!t) return {"null", "boolean", "number", "string", "array", "object"};
  std::set<std::string> out;
  for (const std::string& n : *t) out.insert(n == "integer" ? "number" : n);
  return out;
}

size_t CodePoints(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

const json* Member(const json& s, const char* key) {
  return s.is_object() && s.contains(key) ? &s[key] : nullptr;
}

// What an object schema says of member `name`: its property schema, else additionalProperties,
// else true.
json MemberSchema(const json& s, const std::string& name) {
  if (const json* p = Member(s, "properties"); p != nullptr && p->is_object() && p->contains(name)) return (*p)[name];
  if (s.contains("patternProperties")) return true;  // the name may match a pattern: unknown here
  if (const json* a = Member(s, "additionalProperties")) return *a;
  return true;
}

std::vector<std::string> Required(const json& s) {
  std::vector<std::string> out;
  if (const json* r = Member(s, "required"); r != nullptr && r->is_array())
    for (const json& n : *r)
      if (n.is_string()) out.push_back(n.get<std::string>());
  return out;
}

// Whether `text` (decoded) contains a match of the ECMAScript `pattern` (anchored where it says ^ /
// $); nullopt where the regex layer cannot decide (lookaround, anchors around an alternation).
std::optional<bool> PatternMatches(const std::string& pattern, const std::string& text) {
  const PatternAnchors a = SplitAnchors(pattern);
  if ((a.head || a.tail) && a.top_alternation) return std::nullopt;  // which side the anchor holds
  absl::StatusOr<Regex> re =
      Regex::Compile(absl::StrCat(a.head ? "" : "[\\s\\S]*", "(?:", a.body, ")", a.tail ? "" : "[\\s\\S]*"));
  if (!re.ok()) return std::nullopt;
  return re->Matches(text);
}

}  // namespace

absl::Status SchemaRefusal(const std::string& what, const std::string& at) {
  return absl::InvalidArgumentError(
      absl::StrCat("json schema at ", at, ": refused: ", what, " (cannot be enforced yet; docs/structured-output.md)"));
}

bool SupportedKeyword(const std::string& key) {
  static const std::set<std::string> k = {
      "type", "enum", "const", "$ref", "anyOf", "oneOf", "allOf", "not", "properties", "patternProperties", "required",
      "dependencies", "dependentRequired", "dependentSchemas", "minProperties",
      "additionalProperties", "items", "prefixItems", "additionalItems", "minItems", "maxItems", "minLength",
      "maxLength", "format", "pattern", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
      kFractionKeyword};
  return k.count(key) > 0;
}

bool UnenforcedKeyword(const std::string& key, const json& value) {
  static const std::set<std::string> k = {
      "propertyNames", "if",
      "contains", "minContains", "maxContains", "maxProperties",
      "unevaluatedProperties", "unevaluatedItems", "$dynamicRef", "$recursiveRef", "disallow", "extends",
      "divisibleBy"};
  // Values that constrain nothing (then / else without if are ignored by validators too).
  if (key == "uniqueItems") return value != false;
  if (key == "unevaluatedProperties" || key == "unevaluatedItems") return value != true;
  return k.count(key) > 0;
}

bool SchemaAlgebra::Folds(const json& s) {
  if (!s.is_object()) return false;
  int keywords = 0;
  bool combines = false;
  for (auto it = s.begin(); it != s.end(); ++it) {
    if (!SupportedKeyword(it.key())) continue;
    ++keywords;
    if (it.key() == "allOf" || it.key() == "not" || it.key() == "dependencies" || it.key() == "dependentRequired" ||
        it.key() == "dependentSchemas" || it.key() == "minProperties")
      return true;
    combines = combines || it.key() == "$ref" || it.key() == "anyOf" || it.key() == "oneOf" || it.key() == "enum" ||
               it.key() == "const";
  }
  return combines && keywords > 1;
}

const json* SchemaAlgebra::Resolve(const std::string& ref) const {
  if (ref.empty() || ref[0] != '#') return nullptr;
  if (ref.size() == 1) return &root_;
  try {
    return &root_.at(json::json_pointer(ref.substr(1)));
  } catch (...) {  // not a pointer, or it names nothing
    return nullptr;
  }
}

absl::StatusOr<json> SchemaAlgebra::Normalize(const json& s, const std::string& at) { return NormalizeAt(s, at, 0); }

absl::StatusOr<json> SchemaAlgebra::Intersect(const json& a, const json& b, const std::string& at) {
  return IntersectAt(a, b, at, 0);
}

std::optional<bool> SchemaAlgebra::Validate(const json& value, const json& s) { return ValidateAt(value, s, 0); }

bool SchemaAlgebra::Disjoint(const json& a, const json& b) { return DisjointAt(a, b, 0); }

bool SchemaAlgebra::Spend() { return ++work_ <= kMaxSchemaAlgebraWork; }

static absl::Status TooMuchWork() {
  return absl::ResourceExhaustedError(
      absl::StrCat("json schema: folding its combinations takes more than ", kMaxSchemaAlgebraWork, " steps"));
}

absl::StatusOr<json> SchemaAlgebra::NormalizeAt(const json& s, const std::string& at, int depth) {
  if (!Spend()) return TooMuchWork();
  if (depth > kMaxDepth) return SchemaRefusal(absl::StrCat("schemas combined more than ", kMaxDepth, " deep"), at);
  if (s.is_boolean()) return s;
  if (!s.is_object()) return absl::InvalidArgumentError(absl::StrCat("json schema at ", at, ": not an object"));
  json c = json::object();
  for (auto it = s.begin(); it != s.end(); ++it) {
    if (UnenforcedKeyword(it.key(), it.value())) return SchemaRefusal(it.key(), at);
    if (SupportedKeyword(it.key())) c[it.key()] = it.value();
  }
  if (c.contains("$ref") && c.size() > 1) {  // the target and its siblings both hold
    if (!c["$ref"].is_string()) return absl::InvalidArgumentError(absl::StrCat("json schema at ", at, ": $ref not a string"));
    const json* target = Resolve(c["$ref"].get<std::string>());
    if (target == nullptr)
      return absl::InvalidArgumentError(
          absl::StrCat("json schema at ", at, ": $ref '", c["$ref"].get<std::string>(), "' names nothing here"));
    return IntersectAt(*target, Without(c, {"$ref"}), at, depth + 1);
  }
  // Member dependencies: "if name is there, so are these / so does this schema hold", an
  // alternation per dependency (name absent, or what it brings), intersected with the rest.
  for (const char* key : {"dependencies", "dependentRequired", "dependentSchemas"}) {
    if (!c.contains(key)) continue;
    if (!c[key].is_object()) return SchemaRefusal(absl::StrCat(key, " that is not an object"), at);
    json acc = Without(c, {key});
    for (auto it = c[key].begin(); it != c[key].end(); ++it) {
      json absent = json{{"properties", json{{it.key(), false}}}};
      json present;
      if (it->is_array()) present = json{{"required", *it}};
      else present = json{{"allOf", json::array({json{{"required", json::array({it.key()})}}, *it})}};
      absl::StatusOr<json> m = IntersectAt(acc, json{{"anyOf", json::array({absent, present})}},
                                           absl::StrCat(at, "/", key, "/", it.key()), depth + 1);
      if (!m.ok() || IsFalse(*m)) return m;
      acc = std::move(*m);
    }
    return acc;
  }
  // minProperties where no member but the listed ones may appear: some n of them are there.
  if (c.contains("minProperties")) {
    const json& n = c["minProperties"];
    if (!n.is_number_unsigned()) return SchemaRefusal("minProperties that is not a count", at);
    json rest = Without(c, {"minProperties"});
    const uint64_t need = n.get<uint64_t>();
    if (need == 0) return NormalizeAt(rest, at, depth + 1);
    if (!rest.contains("additionalProperties") || rest["additionalProperties"] != false || rest.contains("patternProperties"))
      return SchemaRefusal("minProperties where members other than the listed ones may appear", at);
    std::vector<std::string> names;
    if (rest.contains("properties") && rest["properties"].is_object())
      for (auto it = rest["properties"].begin(); it != rest["properties"].end(); ++it) names.push_back(it.key());
    if (need > names.size()) return IntersectAt(rest, json{{"type", json::array({"null", "boolean", "number", "string", "array"})}}, at, depth + 1);
    json choices = json::array();  // every way to pick `need` of the names
    std::vector<size_t> pick(need);
    for (size_t i = 0; i < need; ++i) pick[i] = i;
    for (;;) {
      json req = json::array();
      for (size_t i : pick) req.push_back(names[i]);
      choices.push_back(json{{"required", req}});
      if (choices.size() > kMaxBranches) return SchemaRefusal("minProperties with too many ways to meet it", at);
      size_t i = need;
      while (i > 0 && pick[i - 1] == names.size() - need + i - 1) --i;
      if (i == 0) break;
      ++pick[i - 1];
      for (size_t j = i; j < need; ++j) pick[j] = pick[j - 1] + 1;
    }
    return IntersectAt(rest, json{{"anyOf", std::move(choices)}}, at, depth + 1);
  }
  if (c.contains("not")) {  // the other keywords and the negation both hold
    absl::StatusOr<json> negation = NegateAt(c["not"], at + "/not", depth + 1);
    if (!negation.ok()) return negation;
    const json rest = Without(c, {"not"});
    if (rest.empty()) return negation;
    return IntersectAt(rest, *negation, at, depth + 1);
  }
  if (c.contains("allOf")) {
    const json& all = c["allOf"];
    if (!all.is_array() || all.empty()) return SchemaRefusal("allOf that is not a non-empty list", at);
    json merged = true;
    for (size_t i = 0; i < all.size(); ++i) {  // the branches' members first, in their order, then the siblings'
      absl::StatusOr<json> m = IntersectAt(merged, all[i], absl::StrCat(at, "/allOf/", i), depth + 1);
      if (!m.ok() || IsFalse(*m)) return m;
      merged = std::move(*m);
    }
    json rest = Without(c, {"allOf"});
    if (rest.empty()) return merged;
    return IntersectAt(merged, rest, at, depth + 1);
  }
  if (c.contains("anyOf") && c.contains("oneOf")) return SchemaRefusal("anyOf beside oneOf", at);
  for (const char* comb : {"anyOf", "oneOf"}) {
    if (!c.contains(comb)) continue;
    const json& branches = c[comb];
    if (!branches.is_array() || branches.empty()) return SchemaRefusal(absl::StrCat(comb, " that is not a non-empty list"), at);
    if (c.size() == 1) return c;
    const json rest = Without(c, {comb});  // holds beside every branch: distributed into each
    json kept = json::array();
    for (size_t i = 0; i < branches.size(); ++i) {
      absl::StatusOr<json> b = IntersectAt(rest, branches[i], absl::StrCat(at, "/", comb, "/", i), depth + 1);
      if (!b.ok()) return b;
      if (!IsFalse(*b)) kept.push_back(std::move(*b));
    }
    if (kept.empty()) return json(false);
    if (kept.size() == 1) return kept[0];
    return json{{comb, std::move(kept)}};
  }
  if (c.contains("const") || c.contains("enum")) {
    json values = json::array();
    if (c.contains("const")) values.push_back(c["const"]);
    if (c.contains("enum")) {
      if (!c["enum"].is_array()) return SchemaRefusal("an enum that is not a list", at);
      if (!c.contains("const")) values = c["enum"];
    }
    const json rest = Without(c, {"const"});  // an enum beside a const keeps the const if listed
    json kept = json::array();
    for (const json& v : values) {
      std::optional<bool> ok = rest.empty() ? std::optional<bool>(true) : ValidateAt(v, rest, 0);
      if (!ok) return SchemaRefusal("enum or const beside a keyword it cannot be checked against (format, pattern)", at);
      if (*ok) kept.push_back(v);
    }
    if (kept.empty()) return json(false);
    return json{{"enum", std::move(kept)}};
  }
  return c;
}

absl::StatusOr<json> SchemaAlgebra::Dereference(json s, const std::string& at, int depth) {
  while (s.is_object() && s.size() == 1 && s.contains("$ref")) {
    if (++depth > kMaxDepth) return SchemaRefusal("a $ref chain or cycle inside allOf", at);
    if (!s["$ref"].is_string()) return absl::InvalidArgumentError(absl::StrCat("json schema at ", at, ": $ref not a string"));
    const std::string ref = s["$ref"].get<std::string>();
    const json* target = Resolve(ref);
    if (target == nullptr)
      return absl::InvalidArgumentError(absl::StrCat("json schema at ", at, ": $ref '", ref, "' names nothing here"));
    absl::StatusOr<json> n = NormalizeAt(*target, ref, depth);
    if (!n.ok()) return n;
    s = std::move(*n);
  }
  return s;
}

absl::StatusOr<json> SchemaAlgebra::IntersectAt(const json& a0, const json& b0, const std::string& at, int depth) {
  if (!Spend()) return TooMuchWork();
  if (depth > kMaxDepth) return SchemaRefusal(absl::StrCat("schemas combined more than ", kMaxDepth, " deep"), at);
  absl::StatusOr<json> a = NormalizeAt(a0, at, depth + 1);
  if (!a.ok() || IsFalse(*a)) return a;
  absl::StatusOr<json> b = NormalizeAt(b0, at, depth + 1);
  if (!b.ok() || IsFalse(*b)) return b;
  if (IsTrue(*a)) return b;
  if (IsTrue(*b)) return a;
  a = Dereference(std::move(*a), at, depth);
  if (!a.ok() || IsFalse(*a)) return a;
  if (IsTrue(*a)) return b;
  b = Dereference(std::move(*b), at, depth);
  if (!b.ok() || IsFalse(*b)) return b;
  if (IsTrue(*b)) return a;
  // An alternation distributes: (x1 | x2) & y = (x1 & y) | (x2 & y); a oneOf stays one (its
  // branches stay disjoint when each is narrowed).
  for (const bool a_side : {true, false}) {
    const json& alt = a_side ? *a : *b;
    const json& other = a_side ? *b : *a;
    for (const char* comb : {"anyOf", "oneOf"}) {
      if (!alt.contains(comb)) continue;
      json kept = json::array();
      for (const json& branch : alt[comb]) {
        absl::StatusOr<json> r = a_side ? IntersectAt(branch, other, at, depth + 1) : IntersectAt(other, branch, at, depth + 1);
        if (!r.ok()) return r;
        if (IsFalse(*r)) continue;
        kept.push_back(std::move(*r));
        if (kept.size() > kMaxBranches)
          return SchemaRefusal(absl::StrCat("an intersection of more than ", kMaxBranches, " alternatives"), at);
      }
      if (kept.empty()) return json(false);
      if (kept.size() == 1) return kept[0];
      return json{{comb, std::move(kept)}};
    }
  }
  for (const bool a_side : {true, false}) {  // listed values: the ones the other side takes
    const json& e = a_side ? *a : *b;
    if (!e.contains("enum")) continue;
    json kept = json::array();
    for (const json& v : e["enum"]) {
      std::optional<bool> ok = ValidateAt(v, a_side ? *b : *a, 0);
      if (!ok) return SchemaRefusal("enum or const beside a keyword it cannot be checked against (format, pattern)", at);
      if (*ok) kept.push_back(v);
    }
    if (kept.empty()) return json(false);
    return json{{"enum", std::move(kept)}};
  }
  return MergePlain(*a, *b, at, depth);
}

absl::StatusOr<json> SchemaAlgebra::MergePlain(const json& a, const json& b, const std::string& at, int depth) {
  json out = json::object();
  const std::optional<std::vector<std::string>> ta = Types(a), tb = Types(b);
  if (ta || tb) {
    std::vector<std::string> types;
    if (!ta) types = *tb;
    else if (!tb) types = *ta;
    else
      for (const std::string& x : *ta)
        for (const std::string& y : *tb) {
          std::string both = x == y ? x : ((x == "integer" && y == "number") || (x == "number" && y == "integer")) ? "integer" : "";
          if (!both.empty() && std::find(types.begin(), types.end(), both) == types.end()) types.push_back(both);
        }
    if (types.empty()) return json(false);
    out["type"] = types.size() == 1 ? json(types[0]) : json(types);
  }
  const bool pa = a.contains("patternProperties"), pb = b.contains("patternProperties");
  auto members = [](const json& s) { return s.contains("properties") || s.contains("additionalProperties"); };
  if ((pa && pb) || (pa && members(b)) || (pb && members(a)))
    return SchemaRefusal("allOf of patternProperties and other members", at);
  for (const char* k : {"properties", "additionalProperties", "required"})
    if (a.contains(k) || b.contains(k)) {
      if (absl::Status st = MergeObjects(a, b, at, depth, &out); !st.ok()) return st;
      if (IsFalse(out)) return out;
      break;
    }
  // Draft 4 writes an exclusive bound as a boolean beside minimum / maximum: merged only when one
  // side has the bound.
  for (const auto& [bound, flag] : {std::pair{"minimum", "exclusiveMinimum"}, std::pair{"maximum", "exclusiveMaximum"}})
    if (a.contains(bound) && b.contains(bound) && a.value(bound, json()) != b.value(bound, json()) &&
        ((a.contains(flag) && a[flag].is_boolean()) || (b.contains(flag) && b[flag].is_boolean())))
      return SchemaRefusal(absl::StrCat("allOf of two draft-4 ", bound, " bounds"), at);
  for (const json* side : {&a, &b})
    for (auto it = side->begin(); it != side->end(); ++it) {
      const std::string& k = it.key();
      if (k == "type" || k == "properties" || k == "additionalProperties" || k == "required" || out.contains(k)) continue;
      const json* other = side == &a ? Member(b, k.c_str()) : nullptr;
      if (other == nullptr || *other == it.value()) {
        out[k] = it.value();
        continue;
      }
      const json& v = it.value();
      const bool numbers = v.is_number() && other->is_number();
      if (numbers && (k == "minLength" || k == "minItems" || k == "minimum" || k == "exclusiveMinimum")) {
        out[k] = v.get<double>() >= other->get<double>() ? v : *other;
      } else if (numbers && (k == "maxLength" || k == "maxItems" || k == "maximum" || k == "exclusiveMaximum")) {
        out[k] = v.get<double>() <= other->get<double>() ? v : *other;
      } else if (k == "items" && (v.is_object() || v.is_boolean()) && (other->is_object() || other->is_boolean())) {
        out[k] = json{{"allOf", json::array({v, *other})}};  // compiled when reached (it may be recursive)
      } else {
        return SchemaRefusal(absl::StrCat("allOf of two different '", k, "'"), at);
      }
    }
  return out;
}

absl::Status SchemaAlgebra::MergeObjects(const json& a, const json& b, const std::string& at, int depth, json* out) {
  for (const json* s : {&a, &b}) {
    if (s->contains("properties") && !(*s)["properties"].is_object()) return SchemaRefusal("properties that is not an object", at);
    if (s->contains("required") && !(*s)["required"].is_array()) return SchemaRefusal("required that is not a list", at);
  }
  std::vector<std::string> required = Required(a);
  for (const std::string& r : Required(b))
    if (std::find(required.begin(), required.end(), r) == required.end()) required.push_back(r);
  std::vector<std::string> names;  // a's members first, in its order, then b's new ones
  for (const json* s : {&a, &b})
    if (const json* p = Member(*s, "properties"))
      for (auto it = p->begin(); it != p->end(); ++it)
        if (std::find(names.begin(), names.end(), it.key()) == names.end()) names.push_back(it.key());
  json props = json::object();
  for (const std::string& name : names) {
    const json sa = MemberSchema(a, name), sb = MemberSchema(b, name);
    json m;
    if (IsTrue(sa)) {
      m = sb;
    } else if (IsTrue(sb)) {
      m = sa;
    } else if (IsFalse(sa) || IsFalse(sb)) {
      m = false;
    } else if (sa.is_object() && sb.is_object() && !sa.contains("$ref") && !sb.contains("$ref")) {
      // Merged now (a conflict shows here: a discriminator const against another); a $ref is left
      // for when the member is compiled, as it may be recursive.
      absl::StatusOr<json> r = IntersectAt(sa, sb, absl::StrCat(at, "/properties/", name), depth + 1);
      if (!r.ok()) return r.status();
      m = std::move(*r);
    } else {
      m = json{{"allOf", json::array({sa, sb})}};
    }
    if (IsFalse(m) && std::find(required.begin(), required.end(), name) != required.end()) {
      *out = false;  // a required member no value satisfies
      return absl::OkStatus();
    }
    props[name] = std::move(m);
  }
  if (!props.empty()) (*out)["properties"] = std::move(props);
  const json* xa = Member(a, "additionalProperties");
  const json* xb = Member(b, "additionalProperties");
  if (xa != nullptr && xb != nullptr) {
    if (*xa == *xb || IsFalse(*xa) || IsTrue(*xb)) (*out)["additionalProperties"] = *xa;
    else if (IsFalse(*xb) || IsTrue(*xa)) (*out)["additionalProperties"] = *xb;
    else (*out)["additionalProperties"] = json{{"allOf", json::array({*xa, *xb})}};
  } else if (xa != nullptr || xb != nullptr) {
    (*out)["additionalProperties"] = xa != nullptr ? *xa : *xb;
  }
  if (!required.empty()) (*out)["required"] = required;
  return absl::OkStatus();
}

std::optional<bool> SchemaAlgebra::ValidateAt(const json& v, const json& s, int depth) {
  if (depth > 64 || !Spend()) return std::nullopt;
  if (s.is_boolean()) return s.get<bool>();
  if (!s.is_object()) return std::nullopt;
  bool unsure = false;
  auto fold = [&](std::optional<bool> r) {  // false: the value is invalid
    if (!r) unsure = true;
    return !r || *r;
  };
  for (auto it = s.begin(); it != s.end(); ++it)
    if (UnenforcedKeyword(it.key(), it.value())) unsure = true;
  if (const json* ref = Member(s, "$ref")) {
    const json* target = ref->is_string() ? Resolve(ref->get<std::string>()) : nullptr;
    if (!fold(target == nullptr ? std::nullopt : ValidateAt(v, *target, depth + 1))) return false;
  }
  if (const json* t = Member(s, "type")) {
    std::optional<std::vector<std::string>> types = Types(s);
    if (!types) return std::nullopt;
    if (std::none_of(types->begin(), types->end(), [&](const std::string& n) { return OfTypeName(v, n); })) return false;
    (void)t;
  }
  if (const json* e = Member(s, "enum")) {
    if (!e->is_array()) return std::nullopt;
    if (std::find(e->begin(), e->end(), v) == e->end()) return false;
  }
  if (const json* c = Member(s, "const"); c != nullptr && *c != v) return false;
  if (const json* n = Member(s, "not")) {
    std::optional<bool> r = ValidateAt(v, *n, depth + 1);
    if (r && *r) return false;
    if (!r) unsure = true;
  }
  if (const json* all = Member(s, "allOf"); all != nullptr && all->is_array())
    for (const json& b : *all)
      if (!fold(ValidateAt(v, b, depth + 1))) return false;
  if (const json* any = Member(s, "anyOf"); any != nullptr && any->is_array()) {
    bool some = false, open = false;
    for (const json& b : *any) {
      std::optional<bool> r = ValidateAt(v, b, depth + 1);
      some = some || (r && *r);
      open = open || !r;
    }
    if (!some && !open) return false;
    if (!some) unsure = true;
  }
  if (const json* one = Member(s, "oneOf"); one != nullptr && one->is_array()) {
    int yes = 0;
    bool open = false;
    for (const json& b : *one) {
      std::optional<bool> r = ValidateAt(v, b, depth + 1);
      yes += r && *r;
      open = open || !r;
    }
    if (yes > 1 || (yes == 0 && !open)) return false;
    if (open) unsure = true;
  }
  if (v.is_string()) {
    const size_t n = CodePoints(v.get<std::string>());
    if (const json* m = Member(s, "minLength"); m != nullptr && m->is_number() && n < m->get<double>()) return false;
    if (const json* m = Member(s, "maxLength"); m != nullptr && m->is_number() && n > m->get<double>()) return false;
    if (s.contains("format")) unsure = true;
    if (const json* p = Member(s, "pattern")) {
      std::optional<bool> m = p->is_string() ? PatternMatches(p->get<std::string>(), v.get<std::string>()) : std::nullopt;
      if (m && !*m) return false;
      if (!m) unsure = true;
    }
  }
  if (v.is_number()) {
    const double x = v.get<double>();
    auto num = [&](const char* k) -> const json* {
      const json* m = Member(s, k);
      return m != nullptr && m->is_number() ? m : nullptr;
    };
    const json* xmin = Member(s, "exclusiveMinimum");
    const json* xmax = Member(s, "exclusiveMaximum");
    const bool d4min = xmin != nullptr && xmin->is_boolean() && xmin->get<bool>();
    const bool d4max = xmax != nullptr && xmax->is_boolean() && xmax->get<bool>();
    if (const json* m = num("minimum"); m != nullptr && (d4min ? x <= m->get<double>() : x < m->get<double>())) return false;
    if (const json* m = num("maximum"); m != nullptr && (d4max ? x >= m->get<double>() : x > m->get<double>())) return false;
    if (const json* m = num("exclusiveMinimum"); m != nullptr && x <= m->get<double>()) return false;
    if (const json* m = num("exclusiveMaximum"); m != nullptr && x >= m->get<double>()) return false;
    if (const json* f = Member(s, kFractionKeyword); f != nullptr && f->is_boolean() && f->get<bool>()) {
      absl::StatusOr<Decimal> xd = ParseDecimal(v.dump());
      if (!xd.ok()) unsure = true;
      else if (xd->fraction.empty()) return false;
    }
    if (const json* m = num("multipleOf")) {  // exactly, in decimal
      absl::StatusOr<Decimal> md = ParseDecimal(m->dump()), xd = ParseDecimal(v.dump());
      absl::StatusOr<Multiple> mm = md.ok() ? ParseMultiple(*md) : absl::StatusOr<Multiple>(md.status());
      if (!mm.ok() || !xd.ok()) unsure = true;
      else if (!IsMultiple(*xd, *mm)) return false;
    }
  }
  if (v.is_object()) {
    if (s.contains("patternProperties")) unsure = true;  // names against patterns: not decided here
    if (const json* m = Member(s, "minProperties"); m != nullptr && m->is_number() && v.size() < m->get<double>()) return false;
    for (const char* key : {"dependencies", "dependentRequired", "dependentSchemas"})
      if (const json* deps = Member(s, key); deps != nullptr && deps->is_object())
        for (auto it = deps->begin(); it != deps->end(); ++it) {
          if (!v.contains(it.key())) continue;
          if (it->is_array()) {
            for (const json& r : *it)
              if (r.is_string() && !v.contains(r.get<std::string>())) return false;
          } else if (!fold(ValidateAt(v, *it, depth + 1))) {
            return false;
          }
        }
    for (const std::string& r : Required(s))
      if (!v.contains(r)) return false;
    const json* props = Member(s, "properties");
    for (auto it = v.begin(); it != v.end(); ++it) {
      if (props != nullptr && props->is_object() && props->contains(it.key())) {
        if (!fold(ValidateAt(it.value(), (*props)[it.key()], depth + 1))) return false;
      } else if (const json* x = Member(s, "additionalProperties")) {
        if (!fold(ValidateAt(it.value(), *x, depth + 1))) return false;
      }
    }
  }
  if (v.is_array()) {
    if (const json* m = Member(s, "minItems"); m != nullptr && m->is_number() && v.size() < m->get<double>()) return false;
    if (const json* m = Member(s, "maxItems"); m != nullptr && m->is_number() && v.size() > m->get<double>()) return false;
    const json* items = Member(s, "items");
    if (const json* p = Member(s, "prefixItems"); p != nullptr && !p->is_array()) return std::nullopt;  // refused when compiled
    const json* tuple = s.contains("prefixItems") ? &s["prefixItems"] : items != nullptr && items->is_array() ? items : nullptr;
    const json* rest = s.contains("prefixItems") ? items : tuple != nullptr ? Member(s, "additionalItems") : items;
    for (size_t i = 0; i < v.size(); ++i) {
      const json* e = tuple != nullptr && i < tuple->size() ? &(*tuple)[i] : rest;
      if (e != nullptr && !fold(ValidateAt(v[i], *e, depth + 1))) return false;
    }
  }
  if (unsure) return std::nullopt;
  return true;
}

absl::StatusOr<json> SchemaAlgebra::Negate(const json& s, const std::string& at) { return NegateAt(s, at, 0); }

absl::StatusOr<json> SchemaAlgebra::NegateAt(const json& s0, const std::string& at, int depth) {
  if (!Spend()) return TooMuchWork();
  if (depth > kMaxDepth) return SchemaRefusal(absl::StrCat("schemas combined more than ", kMaxDepth, " deep"), at);
  absl::StatusOr<json> s = NormalizeAt(s0, at, depth + 1);
  if (!s.ok()) return s;
  s = Dereference(std::move(*s), at, depth + 1);
  if (!s.ok()) return s;
  if (s->is_boolean()) return json(!s->get<bool>());
  if (s->contains("anyOf")) {  // not (a | b) = not a & not b
    json acc = true;
    for (const json& b : (*s)["anyOf"]) {
      absl::StatusOr<json> nb = NegateAt(b, at, depth + 1);
      if (!nb.ok()) return nb;
      absl::StatusOr<json> m = IntersectAt(acc, *nb, at, depth + 1);
      if (!m.ok() || IsFalse(*m)) return m;
      acc = std::move(*m);
    }
    return acc;
  }
  if (s->contains("oneOf")) return SchemaRefusal("not of a oneOf", at);
  static const std::vector<std::string> kAll = {"null", "boolean", "number", "string", "array", "object"};
  json alts = json::array();
  if (s->contains("enum")) {  // the kinds it lists nothing of, and the booleans / null it leaves out
    std::set<std::string> listed;
    json left = json::array({true, false, nullptr});
    for (const json& v : (*s)["enum"]) {
      const std::string kind = v.is_null() ? "null" : v.is_boolean() ? "boolean" : v.is_number() ? "number"
                             : v.is_string() ? "string" : v.is_array() ? "array" : "object";
      if (kind != "null" && kind != "boolean") return SchemaRefusal(absl::StrCat("not of an enum with a ", kind), at);
      listed.insert(kind);
      left.erase(std::remove(left.begin(), left.end(), v), left.end());
    }
    json unlisted = json::array();
    for (const std::string& k : kAll)
      if (!listed.count(k)) unlisted.push_back(k);
    alts.push_back(json{{"type", unlisted}});
    json rest = json::array();
    for (const json& v : left)
      if (listed.count(v.is_null() ? "null" : "boolean")) rest.push_back(v);
    if (!rest.empty()) alts.push_back(json{{"enum", rest}});
    return json{{"anyOf", alts}};
  }
  // not (T & k1 & ... & kn) = not T | (T & not k1) | ... : a keyword constrains its kind of value
  // only, so its negation is a value of that kind that breaks it.
  const std::optional<std::vector<std::string>> types = Types(*s);
  std::set<std::string> kinds(kAll.begin(), kAll.end());
  bool integer_only = false;
  if (types) {
    kinds = Kinds(*s);
    integer_only = std::find(types->begin(), types->end(), "integer") != types->end() &&
                   std::find(types->begin(), types->end(), "number") == types->end();
    json others = json::array();
    for (const std::string& k : kAll)
      if (!kinds.count(k)) others.push_back(k);
    if (!others.empty()) alts.push_back(json{{"type", others.size() == 1 ? others[0] : others}});
    // Not an integer: any other kind, or a number with a fraction (kFractionKeyword: ours).
    if (integer_only) alts.push_back(json{{"type", "number"}, {kFractionKeyword, true}});
  }
  const json* xmin = Member(*s, "exclusiveMinimum");
  const json* xmax = Member(*s, "exclusiveMaximum");
  for (auto it = s->begin(); it != s->end(); ++it) {
    const std::string& k = it.key();
    const json& v = it.value();
    auto of = [&](const char* kind, json body) {
      if (!kinds.count(kind)) return;  // the schema's type already rules that kind out
      body["type"] = kind;
      alts.push_back(std::move(body));
    };
    if (k == "type") continue;
    if (k == "minimum" && v.is_number()) {
      of("number", json{{xmin != nullptr && xmin->is_boolean() && xmin->get<bool>() ? "maximum" : "exclusiveMaximum", v}});
    } else if (k == "maximum" && v.is_number()) {
      of("number", json{{xmax != nullptr && xmax->is_boolean() && xmax->get<bool>() ? "minimum" : "exclusiveMinimum", v}});
    } else if ((k == "exclusiveMinimum" || k == "exclusiveMaximum") && v.is_boolean()) {
      continue;  // draft 4: read with minimum / maximum
    } else if (k == "exclusiveMinimum" && v.is_number()) {
      of("number", json{{"maximum", v}});
    } else if (k == "exclusiveMaximum" && v.is_number()) {
      of("number", json{{"minimum", v}});
    } else if ((k == "minLength" || k == "minItems") && v.is_number_unsigned()) {
      if (v.get<uint64_t>() > 0)
        of(k == "minLength" ? "string" : "array", json{{k == "minLength" ? "maxLength" : "maxItems", v.get<uint64_t>() - 1}});
    } else if ((k == "maxLength" || k == "maxItems") && v.is_number_unsigned()) {
      of(k == "maxLength" ? "string" : "array", json{{k == "maxLength" ? "minLength" : "minItems", v.get<uint64_t>() + 1}});
    } else if (k == "required" && v.is_array()) {
      for (const json& name : v)
        if (name.is_string()) of("object", json{{"properties", json{{name.get<std::string>(), false}}}});
    } else if (k == "properties" && v.is_object()) {
      for (auto p = v.begin(); p != v.end(); ++p) {
        absl::StatusOr<json> np = NegateAt(p.value(), absl::StrCat(at, "/properties/", p.key()), depth + 1);
        if (!np.ok()) return np;
        if (!IsFalse(*np)) of("object", json{{"required", json::array({p.key()})}, {"properties", json{{p.key(), *np}}}});
      }
    } else {
      return SchemaRefusal(absl::StrCat("not of '", k, "'"), at);
    }
  }
  if (alts.empty()) return json(false);
  if (alts.size() == 1) return alts[0];
  return json{{"anyOf", std::move(alts)}};
}

absl::StatusOr<json> SchemaAlgebra::ExclusiveBranches(const json& branches, const std::string& at) {
  json out = json::array();
  for (size_t i = 0; i < branches.size(); ++i) {
    json b = branches[i];
    for (size_t j = 0; j < branches.size(); ++j) {
      if (j == i || Disjoint(branches[i], branches[j])) continue;
      absl::StatusOr<json> nj = NegateAt(branches[j], absl::StrCat(at, "/oneOf/", j), 1);
      if (!nj.ok()) return nj;
      absl::StatusOr<json> m = IntersectAt(b, *nj, absl::StrCat(at, "/oneOf/", i), 1);
      if (!m.ok()) return m;
      b = std::move(*m);
      if (IsFalse(b)) break;
    }
    if (!IsFalse(b)) out.push_back(std::move(b));
  }
  if (out.empty()) return json(false);
  return json{{"anyOf", std::move(out)}};
}

bool SchemaAlgebra::DisjointAt(const json& a0, const json& b0, int depth) {
  if (depth > 16 || !Spend()) return false;
  absl::StatusOr<json> a = NormalizeAt(a0, "#", kMaxDepth / 2);
  absl::StatusOr<json> b = NormalizeAt(b0, "#", kMaxDepth / 2);
  if (!a.ok() || !b.ok()) return false;
  if (a = Dereference(std::move(*a), "#", kMaxDepth / 2); !a.ok()) return false;
  if (b = Dereference(std::move(*b), "#", kMaxDepth / 2); !b.ok()) return false;
  if (IsFalse(*a) || IsFalse(*b)) return true;
  if (IsTrue(*a) || IsTrue(*b)) return false;
  for (const bool a_side : {true, false}) {
    const json& x = a_side ? *a : *b;
    const json& y = a_side ? *b : *a;
    for (const char* comb : {"anyOf", "oneOf"})
      if (x.contains(comb))
        return std::all_of(x[comb].begin(), x[comb].end(), [&](const json& br) { return DisjointAt(br, y, depth + 1); });
    if (x.contains("enum"))
      return std::all_of(x["enum"].begin(), x["enum"].end(), [&](const json& v) {
        std::optional<bool> r = ValidateAt(v, y, 0);
        return r.has_value() && !*r;
      });
  }
  std::set<std::string> common;
  const std::set<std::string> ka = Kinds(*a), kb = Kinds(*b);
  std::set_intersection(ka.begin(), ka.end(), kb.begin(), kb.end(), std::inserter(common, common.begin()));
  if (common.empty()) return true;
  if (common != std::set<std::string>{"object"}) return false;
  // Objects: a member one requires that the other forbids, or that both require with disjoint schemas.
  for (const bool a_side : {true, false}) {
    const json& x = a_side ? *a : *b;
    const json& y = a_side ? *b : *a;
    const std::vector<std::string> ry = Required(y);
    for (const std::string& name : Required(x)) {
      const json sy = MemberSchema(y, name);
      if (IsFalse(sy)) return true;
      if (std::find(ry.begin(), ry.end(), name) != ry.end() && DisjointAt(MemberSchema(x, name), sy, depth + 1)) return true;
    }
  }
  return false;
}

}  // namespace gla::constraints
