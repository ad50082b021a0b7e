// JSON Schema -> GBNF (engine/constraints/json_schema.h): hand-made cases, refusals by name, and
// the shared schemas (../shared/data/jsonschema: 1,602 real schemas with valid and invalid
// instances), reported in the columns of the issue's anchors. The instances are written compact,
// each object's members in the order its own schema lists them (the generator's order: Canonical).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "engine/constraints/grammar.h"
#include "engine/constraints/json_schema.h"
#include "engine/constraints/regex_cache.h"
#include "nlohmann/json.hpp"
#include "tests/support/json_canonical.h"
#include "tests/support/test_util.h"

namespace gla::constraints {
namespace {

using json = nlohmann::ordered_json;

// Where the grammar stops taking the text: its length when all of it was taken.
size_t Taken(const Grammar& g, std::string_view text, bool* complete = nullptr) {
  GrammarMatcher m(g);
  for (size_t i = 0; i < text.size(); ++i)
    if (!m.Advance(static_cast<uint8_t>(text[i]))) {
      if (complete) *complete = false;
      return i;
    }
  if (complete) *complete = m.CanEnd();
  return text.size();
}

bool Accepts(const Grammar& g, std::string_view text) {
  bool complete = false;
  return Taken(g, text, &complete) == text.size() && complete;
}

Grammar Compile(const std::string& schema) {
  auto gbnf = JsonSchemaToGbnf(schema);
  EXPECT_TRUE(gbnf.ok()) << gbnf.status();
  auto g = Grammar::Parse(gbnf.ok() ? *gbnf : "root ::= \"x\"");
  EXPECT_TRUE(g.ok()) << g.status() << "\n" << (gbnf.ok() ? *gbnf : "");
  return g.ok() ? *std::move(g) : *Grammar::Parse("root ::= \"x\"");
}

TEST(JsonSchema, ObjectsWithRequiredOptionalAndExtraMembers) {
  const Grammar g = Compile(R"({"type": "object", "properties": {"name": {"type": "string", "maxLength": 5},
      "age": {"type": "integer"}, "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2}},
      "required": ["name"], "additionalProperties": false})");
  for (const char* ok : {R"({"name":"bob"})", R"({"name": "bob", "age": 3})", R"({ "name":"", "tags":["a","b"] })",
                         R"({"name":"x","age":-1,"tags":[]})"})
    EXPECT_TRUE(Accepts(g, ok)) << ok;
  for (const char* bad : {R"({})", R"({"age":3})", R"({"name":"toolong"})", R"({"name":"x","other":1})",
                          R"({"name":"x","tags":["c"]})", R"({"name":"x","tags":["a","a","a"]})", R"({"name":1})",
                          R"({"age":3,"name":"x"})"})
    EXPECT_FALSE(Accepts(g, bad)) << bad;
  const Grammar open = Compile(R"({"properties": {"a": {"type": "boolean"}}})");
  EXPECT_TRUE(Accepts(open, R"({"a":true,"b":[1,{"c":null}]})")) << "additional properties are allowed by default";
  EXPECT_TRUE(Accepts(open, R"({"zz":1})"));
  EXPECT_TRUE(Accepts(open, R"("a string")")) << "without a type, object keywords constrain objects only";
  EXPECT_FALSE(Accepts(open, R"({"a":1})"));
}

// enum / const beside a type keep only the values of that type (python3-jsonschema found the
// first version emitting "address" for {"type": "array", "enum": ["address", ...]}).
TEST(JsonSchema, EnumAndConstKeepOnlyValuesOfTheType) {
  const Grammar g = Compile(R"({"type": ["integer", "null"], "enum": [1, 2.0, 2.5, "x", null]})");
  for (const char* ok : {"1", "2.0", "null"}) EXPECT_TRUE(Accepts(g, ok)) << ok;
  for (const char* bad : {"2.5", R"("x")"}) EXPECT_FALSE(Accepts(g, bad)) << bad;
  auto none = JsonSchemaToGbnf(R"({"type": "array", "enum": ["openid", "email"]})");
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("no value satisfies"), std::string::npos) << none.status();
  EXPECT_FALSE(JsonSchemaToGbnf(R"({"type": "string", "const": 3})").ok());
}

// A schema nested deeper than kMaxJsonDepth anywhere (here in a const, which is dumped) is refused
// before anything walks it recursively: 400,000 deep fits in a request body.
TEST(JsonSchema, DeepNestingIsRefusedBeforeAnyRecursion) {
  const std::string deep = std::string(400000, '[') + std::string(400000, ']');
  auto g = JsonSchemaToGbnf(absl::StrCat(R"({"const": )", deep, "}"));
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().code(), absl::StatusCode::kResourceExhausted) << g.status();
  const std::string ok = std::string(100, '[') + std::string(100, ']');
  EXPECT_TRUE(JsonSchemaToGbnf(absl::StrCat(R"({"const": )", ok, "}")).ok());
}

TEST(JsonSchema, RefsRecursionCombinatorsTuplesAndFormats) {
  const Grammar tree = Compile(R"({"$ref": "#/$defs/node", "$defs": {"node": {"type": "object",
      "properties": {"v": {"type": "number"}, "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
      "required": ["v"], "additionalProperties": false}}})");
  EXPECT_TRUE(Accepts(tree, R"({"v":1,"kids":[{"v":2},{"v":3.5,"kids":[{"v":-4e2}]}]})"));
  EXPECT_FALSE(Accepts(tree, R"({"v":1,"kids":[{"kids":[]}]})"));
  const Grammar any_of = Compile(R"({"anyOf": [{"type": "string"}, {"type": "null"}, {"const": 7}]})");
  for (const char* ok : {R"("x")", "null", "7"}) EXPECT_TRUE(Accepts(any_of, ok)) << ok;
  EXPECT_FALSE(Accepts(any_of, "8"));
  const Grammar tuple = Compile(R"({"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}], "items": false})");
  for (const char* ok : {"[]", "[1]", R"([1,"a"])"}) EXPECT_TRUE(Accepts(tuple, ok)) << ok;
  for (const char* bad : {R"(["a"])", R"([1,"a",2])"}) EXPECT_FALSE(Accepts(tuple, bad)) << bad;
  const Grammar all = Compile(R"({"allOf": [{"$ref": "#/$defs/named"}, {"properties": {"age": {"type": "integer"}},
      "required": ["age"]}], "$defs": {"named": {"type": "object", "properties": {"name": {"type": "string"}}}}})");
  EXPECT_TRUE(Accepts(all, R"({"name":"x","age":3})"));
  EXPECT_TRUE(Accepts(all, R"({"age":3,"extra":true})"));
  EXPECT_FALSE(Accepts(all, R"({"name":"x"})")) << "the second branch requires age";
  EXPECT_FALSE(Accepts(all, R"({"name":1,"age":3})")) << "the first branch types name";
  const Grammar when = Compile(R"({"type": "string", "format": "date-time"})");
  EXPECT_TRUE(Accepts(when, R"("2026-12-04T09:30:00Z")"));
  EXPECT_TRUE(Accepts(when, R"("2026-12-04T09:30:00.5+01:00")"));
  EXPECT_FALSE(Accepts(when, R"("2026-12-04")"));
  for (const char* bad : {R"("2026-12-32T00:00:00Z")", R"("2026-02-29T00:00:00Z")", R"("2026-04-31T00:00:00Z")",
                          R"("2026-13-01T00:00:00Z")", R"("2026-12-04T24:00:00Z")", R"("2026-12-04T23:59:61Z")"})
    EXPECT_FALSE(Accepts(when, bad)) << bad;
  for (const char* leap : {R"("2024-02-29T00:00:00Z")", R"("2000-02-29T23:59:60Z")"}) EXPECT_TRUE(Accepts(when, leap)) << leap;
  EXPECT_FALSE(Accepts(when, R"("1900-02-29T00:00:00Z")")) << "1900 is not a leap year";
}

// Integer bounds as digit-by-digit grammars, against the integers themselves.
TEST(JsonSchema, IntegerRangesAreExact) {
  const struct {
    const char* schema;
    int64_t lo, hi;  // the integers in [-3000, 3000] that are valid
  } cases[] = {
      {R"({"type": "integer", "minimum": 0})", 0, 3000},
      {R"({"type": "integer", "minimum": 1, "maximum": 12})", 1, 12},
      {R"({"type": "integer", "minimum": -45, "maximum": 1234})", -45, 1234},
      {R"({"type": "integer", "exclusiveMinimum": 7, "exclusiveMaximum": 2000})", 8, 1999},
      {R"({"type": "integer", "minimum": 3, "exclusiveMinimum": true, "maximum": 99})", 4, 99},
      {R"({"type": "integer", "maximum": -10})", -3000, -10},
      {R"({"type": "integer", "minimum": 0.5, "maximum": 9.5})", 1, 9},
      {R"({"type": "integer", "minimum": 100, "maximum": 100})", 100, 100},
  };
  for (const auto& c : cases) {
    const Grammar g = Compile(c.schema);
    for (int64_t v = -3000; v <= 3000; ++v)
      ASSERT_EQ(Accepts(g, std::to_string(v)), v >= c.lo && v <= c.hi) << c.schema << " at " << v;
    EXPECT_FALSE(Accepts(g, "01")) << "no leading zeros";
  }
  // Wide bounds: the digits free of both bounds are one class (walked digit by digit they
  // branched three ways each: a 17-digit bound took minutes and gigabytes).
  const Grammar wide = Compile(R"({"type": "integer", "minimum": -3, "maximum": 99999999999999999})");
  for (const char* ok : {"-3", "0", "98765432109876543", "99999999999999999"}) EXPECT_TRUE(Accepts(wide, ok)) << ok;
  for (const char* bad : {"-4", "100000000000000000"}) EXPECT_FALSE(Accepts(wide, bad)) << bad;
  const Grammar big = Compile(R"({"type": "integer", "minimum": 5})");
  EXPECT_TRUE(Accepts(big, "123456789012345678"));
  const Grammar nonneg = Compile(R"({"type": "number", "minimum": 0})");
  EXPECT_TRUE(Accepts(nonneg, "0.25"));
  EXPECT_FALSE(Accepts(nonneg, "-0.25"));
  const Grammar typeless = Compile(R"({"minimum": 0})");
  EXPECT_TRUE(Accepts(typeless, "\"x\"")) << "bounds constrain numbers only";
  EXPECT_FALSE(Accepts(typeless, "-1"));
  EXPECT_TRUE(Accepts(typeless, "3.5"));
  const Grammar typeless_two = Compile(R"({"minimum": 2})");
  EXPECT_TRUE(Accepts(typeless_two, "2.5"));
  EXPECT_FALSE(Accepts(typeless_two, "1.99"));
}

// Number bounds, integer and decimal, inclusive and exclusive, draft 4 and 6 styles: every numeral
// of a grid (thousandths in [-3, 3], written with 0-3 fraction digits and trailing zeros) against
// exact arithmetic on thousandths.
TEST(JsonSchema, NumberRangesAreExact) {
  const struct {
    const char* schema;
    int lo, hi;  // thousandths; lo_open / hi_open: exclusive
    bool lo_open, hi_open;
  } cases[] = {
      {R"({"type": "number", "minimum": 0, "maximum": 1})", 0, 1000, false, false},
      {R"({"type": "number", "minimum": -1.5, "exclusiveMaximum": 2.25})", -1500, 2250, false, true},
      {R"({"type": "number", "exclusiveMinimum": 0})", 0, 1 << 30, true, false},
      {R"({"type": "number", "minimum": 0.1, "maximum": 0.1})", 100, 100, false, false},
      {R"({"type": "number", "minimum": -0.25, "exclusiveMinimum": true, "maximum": -0.005})", -250, -5, true, false},
      {R"({"type": "number", "exclusiveMaximum": -1})", -(1 << 30), -1000, false, true},
      {R"({"type": "number", "minimum": 1.05, "maximum": 1.5})", 1050, 1500, false, false},
      {R"({"type": "number", "minimum": 5e-1, "exclusiveMaximum": 25E-1})", 500, 2500, false, true},
  };
  for (const auto& c : cases) {
    const Grammar g = Compile(c.schema);
    for (int v = -3000; v <= 3000; ++v) {
      const bool in = (c.lo_open ? v > c.lo : v >= c.lo) && (c.hi_open ? v < c.hi : v <= c.hi);
      const int mag = v < 0 ? -v : v;
      const std::string sign = v < 0 ? "-" : "";
      // Every way to write it: the shortest, then with 1-3 fraction digits where they hold it.
      std::vector<std::string> texts;
      const std::string frac3 = absl::StrCat(mag % 1000 + 1000).substr(1);
      for (int digits = 0; digits <= 4; ++digits) {
        std::string f = digits <= 3 ? frac3.substr(0, digits) : frac3 + "0";
        if (digits < 3 && frac3.substr(digits).find_first_not_of('0') != std::string::npos) continue;
        texts.push_back(absl::StrCat(sign, mag / 1000, digits ? "." : "", f));
      }
      for (const std::string& t : texts) {
        if (t == "-0" || t.rfind("-0.000", 0) == 0 || t == "-0.0" || t == "-0.00") continue;  // -0: never written
        ASSERT_EQ(Accepts(g, t), in) << c.schema << " at " << t;
      }
    }
    EXPECT_FALSE(Accepts(g, "1e0")) << "bounded numerals are written without exponent";
    EXPECT_FALSE(Accepts(g, "00.5"));
  }
  EXPECT_FALSE(JsonSchemaToGbnf(R"({"type": "number", "minimum": 2, "maximum": 1})").ok()) << "an empty range";
}

// multipleOf (divisors of a power of ten, alone and within bounds), on the same grid of numerals
// written every way (thousandths in [-3, 3], 0-4 fraction digits), against exact arithmetic; an
// enum filtered by it; a multiple that is not of that form refused by name.
TEST(JsonSchema, MultipleOfIsExact) {
  const struct {
    const char* schema;
    int step;  // in thousandths
    int lo, hi;
    bool integer;
  } cases[] = {
      {R"({"type": "number", "multipleOf": 0.01})", 10, -(1 << 30), 1 << 30, false},
      {R"({"type": "number", "multipleOf": 0.25, "minimum": 0.25})", 250, 250, 1 << 30, false},
      {R"({"type": "number", "multipleOf": 1})", 1000, -(1 << 30), 1 << 30, false},
      {R"({"type": "number", "multipleOf": 2.5, "maximum": 2.5})", 2500, -(1 << 30), 2500, false},
      {R"({"type": "number", "multipleOf": 0.125, "minimum": -1, "maximum": 1.9})", 125, -1000, 1900, false},
      {R"({"type": "integer", "multipleOf": 4, "exclusiveMinimum": -3})", 4000, -2999, 1 << 30, true},
      {R"({"type": "integer", "multipleOf": 0.5})", 1000, -(1 << 30), 1 << 30, true},
  };
  for (const auto& c : cases) {
    const Grammar g = Compile(c.schema);
    for (int v = -3000; v <= 3000; ++v) {
      const bool in = v % c.step == 0 && v >= c.lo && v <= c.hi;
      const int mag = v < 0 ? -v : v;
      const std::string sign = v < 0 ? "-" : "";
      const std::string frac3 = absl::StrCat(mag % 1000 + 1000).substr(1);
      for (int digits = 0; digits <= 4; ++digits) {
        std::string f = digits <= 3 ? frac3.substr(0, digits) : frac3 + "0";
        if (digits < 3 && frac3.substr(digits).find_first_not_of('0') != std::string::npos) continue;
        const std::string t = absl::StrCat(sign, mag / 1000, digits ? "." : "", f);
        if (v == 0 && !sign.empty()) continue;
        const bool want = in && (!c.integer || digits == 0);
        ASSERT_EQ(Accepts(g, t), want) << c.schema << " at " << t;
      }
    }
  }
  const Grammar listed = Compile(R"({"enum": [1, 2, 3, 4.5, 6], "multipleOf": 2})");
  for (const char* ok : {"2", "6"}) EXPECT_TRUE(Accepts(listed, ok)) << ok;
  for (const char* bad : {"1", "3", "4.5"}) EXPECT_FALSE(Accepts(listed, bad)) << bad;
  const Grammar tiny = Compile(R"({"type": "number", "multipleOf": 0.0001, "maximum": 1})");
  for (const char* ok : {"0.0001", "0.1234000", "1", "-7.5"}) EXPECT_TRUE(Accepts(tiny, ok)) << ok;
  for (const char* bad : {"0.00001", "0.12345", "1.0001"}) EXPECT_FALSE(Accepts(tiny, bad)) << bad;
  for (const char* refused : {R"({"type": "integer", "multipleOf": 7})", R"({"type": "number", "multipleOf": 0})",
                              R"({"type": "number", "multipleOf": 0.3})", R"({"type": "integer", "multipleOf": 16})",
                              R"({"type": "number", "multipleOf": 0.0002, "maximum": 1e6})"}) {
    auto r = JsonSchemaToGbnf(refused);
    ASSERT_FALSE(r.ok()) << refused;
    EXPECT_NE(r.status().message().find("multipleOf"), std::string::npos) << r.status();
  }
}

// "not": {"type": "integer"} is any other kind of value or a number with a fraction; a maximum past
// 1e17 leaves what is generated below it; pattern and format together are both held.
TEST(JsonSchema, NotIntegerFarBoundsAndPatternWithFormat) {
  const Grammar not_int = Compile(R"({"not": {"type": "integer"}})");
  for (const char* ok : {"1.5", "-0.25", "1.05", R"("x")", "null", "[]"}) EXPECT_TRUE(Accepts(not_int, ok)) << ok;
  for (const char* bad : {"1", "-3", "0", "2.0", "2.50e1"}) EXPECT_FALSE(Accepts(not_int, bad)) << bad;
  const Grammar far = Compile(R"({"type": "integer", "minimum": 0, "maximum": 9223372036854775807})");
  for (const char* ok : {"0", "5", "99999999999999999"}) EXPECT_TRUE(Accepts(far, ok)) << ok;
  for (const char* bad : {"-1", "100000000000000000", "9223372036854775807"}) EXPECT_FALSE(Accepts(far, bad)) << bad;
  EXPECT_FALSE(JsonSchemaToGbnf(R"({"type": "integer", "minimum": 1e18})").ok()) << "a minimum past 1e17";
  const Grammar both = Compile(R"({"type": "string", "format": "email", "pattern": "^a", "maxLength": 8})");
  for (const char* ok : {R"("a@b.co")", R"("ab@c.de")"}) EXPECT_TRUE(Accepts(both, ok)) << ok;
  for (const char* bad : {R"("b@c.co")", R"("abc")", R"("abcd@e.fg")"}) EXPECT_FALSE(Accepts(both, bad)) << bad;
}

// Real schemas combine: allOf of a base and an extension, a $ref with siblings, properties beside an
// anyOf, an enum beside a type, a oneOf told apart by a discriminator. Each folds into one schema
// (schema_algebra.h) whose language is the intersection.
TEST(JsonSchema, CombinationsFoldIntoIntersections) {
  const Grammar merged = Compile(R"({"allOf": [{"type": "string"}, {"maxLength": 2}, {"minLength": 1}]})");
  for (const char* ok : {R"("a")", R"("ab")"}) EXPECT_TRUE(Accepts(merged, ok)) << ok;
  for (const char* bad : {R"("")", R"("abc")", "1"}) EXPECT_FALSE(Accepts(merged, bad)) << bad;
  const Grammar same = Compile(R"({"allOf": [{"properties": {"a": {}}}, {"properties": {"a": {"type": "null"}}}]})");
  EXPECT_TRUE(Accepts(same, R"({"a":null})"));
  EXPECT_FALSE(Accepts(same, R"({"a":1})")) << "both branches hold for a";
  const Grammar closed = Compile(R"({"allOf": [{"properties": {"a": {"type": "integer"}}, "additionalProperties": false},
      {"properties": {"b": {}}, "required": ["a"]}]})");
  EXPECT_TRUE(Accepts(closed, R"({"a":1})"));
  EXPECT_FALSE(Accepts(closed, R"({"a":1,"b":2})")) << "the first branch closes the object: b may not appear";
  EXPECT_FALSE(Accepts(closed, R"({})"));
  const Grammar ref_siblings = Compile(R"({"$ref": "#/$defs/n", "maximum": 5, "$defs": {"n": {"type": "integer", "minimum": 1}}})");
  for (const char* ok : {"1", "5"}) EXPECT_TRUE(Accepts(ref_siblings, ok)) << ok;
  for (const char* bad : {"0", "6"}) EXPECT_FALSE(Accepts(ref_siblings, bad)) << bad;
  const Grammar distributed = Compile(R"({"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"],
      "anyOf": [{"properties": {"x": {"type": "string"}}, "required": ["x"]}, {"properties": {"y": {"type": "null"}}, "required": ["y"]}]})");
  for (const char* ok : {R"({"id":1,"x":"a"})", R"({"id":2,"y":null})"}) EXPECT_TRUE(Accepts(distributed, ok)) << ok;
  for (const char* bad : {R"({"x":"a"})", R"({"id":1})", R"({"id":1,"y":"a"})"}) EXPECT_FALSE(Accepts(distributed, bad)) << bad;
  const Grammar tagged = Compile(R"({"oneOf": [
      {"type": "object", "properties": {"kind": {"const": "circle"}, "r": {"type": "number"}}, "required": ["kind", "r"]},
      {"type": "object", "properties": {"kind": {"const": "square"}, "side": {"type": "number"}}, "required": ["kind"]}]})");
  EXPECT_TRUE(Accepts(tagged, R"({"kind":"circle","r":1})"));
  EXPECT_TRUE(Accepts(tagged, R"({"kind":"square"})"));
  EXPECT_FALSE(Accepts(tagged, R"({"kind":"oval"})"));
  const Grammar typed_enum = Compile(R"({"enum": ["a", 1, null, "bcd"], "type": "string", "maxLength": 2})");
  EXPECT_TRUE(Accepts(typed_enum, R"("a")"));
  for (const char* bad : {"1", "null", R"("bcd")"}) EXPECT_FALSE(Accepts(typed_enum, bad)) << bad;
  // A member no value satisfies may not appear; required, it makes the object unsatisfiable.
  const Grammar never = Compile(R"({"type": "object", "properties": {"m": {"type": "object", "enum": ["x"]}, "n": {}}})");
  EXPECT_TRUE(Accepts(never, R"({"n":1})"));
  EXPECT_FALSE(Accepts(never, R"({"m":"x"})"));
  EXPECT_FALSE(Accepts(never, R"({"m":{}})"));
  // A required name no property lists: a member that must be there, valued under additionalProperties.
  const Grammar must = Compile(R"({"type": "object", "required": ["a"], "additionalProperties": {"type": "integer"}})");
  EXPECT_TRUE(Accepts(must, R"({"a":1})"));
  EXPECT_FALSE(Accepts(must, R"({"a":"x"})"));
  EXPECT_FALSE(Accepts(must, R"({})"));
  // not: a keyword negates within its kind of value (not minimum 2 takes 1.5 and "x").
  const Grammar negated = Compile(R"({"not": {"type": "number", "minimum": 2}})");
  for (const char* ok : {"1.5", R"("x")", "null", "[]"}) EXPECT_TRUE(Accepts(negated, ok)) << ok;
  for (const char* bad : {"2", "7.25"}) EXPECT_FALSE(Accepts(negated, bad)) << bad;
  const Grammar absent = Compile(R"({"type": "object", "properties": {"a": {}, "b": {}}, "not": {"required": ["a", "b"]}})");
  for (const char* ok : {R"({"a":1})", R"({"b":1})", "{}"}) EXPECT_TRUE(Accepts(absent, ok)) << ok;
  EXPECT_FALSE(Accepts(absent, R"({"a":1,"b":2})"));
  // A oneOf whose branches overlap: each branch less the others (a value both take is invalid).
  const Grammar one = Compile(R"({"type": "object", "properties": {"l": {}, "w": {}, "r": {}},
      "oneOf": [{"required": ["l", "w"]}, {"required": ["r"]}]})");
  for (const char* ok : {R"({"l":1,"w":2})", R"({"r":1})", R"({"l":1,"r":1})"}) EXPECT_TRUE(Accepts(one, ok)) << ok;
  for (const char* bad : {R"({"l":1,"w":2,"r":3})", R"({"l":1})", "{}"}) EXPECT_FALSE(Accepts(one, bad)) << bad;
  const Grammar lengths = Compile(R"({"oneOf": [{"type": "string"}, {"type": "string", "maxLength": 2}]})");
  EXPECT_TRUE(Accepts(lengths, R"("abc")"));
  EXPECT_FALSE(Accepts(lengths, R"("ab")")) << "both branches take it";
  // patternProperties: the extra members written are those whose name matches the pattern, valued
  // under its schema (names outside it are not generated, even where additionalProperties allows).
  const Grammar patterned = Compile(R"({"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"],
      "patternProperties": {"^x-[a-z]+$": {"type": "string"}}})");
  for (const char* ok : {R"({"id":1})", R"({"id":1,"x-a":"s","x-bc":""})"}) EXPECT_TRUE(Accepts(patterned, ok)) << ok;
  for (const char* bad : {R"({"id":1,"x-a":1})", R"({"id":1,"x-":"s"})", R"({"id":1,"y":"s"})", R"({"x-a":"s"})"})
    EXPECT_FALSE(Accepts(patterned, bad)) << bad;
  // dependencies (list and schema forms) and minProperties over a closed object: alternations.
  const Grammar deps = Compile(R"({"type": "object", "properties": {"card": {}, "billing": {}, "cvv": {"type": "integer"}},
      "dependencies": {"card": ["billing"], "cvv": {"required": ["card"]}}})");
  for (const char* ok : {"{}", R"({"card":1,"billing":2})", R"({"billing":2})", R"({"card":1,"billing":2,"cvv":3})"})
    EXPECT_TRUE(Accepts(deps, ok)) << ok;
  for (const char* bad : {R"({"card":1})", R"({"cvv":3})", R"({"billing":2,"cvv":3})"}) EXPECT_FALSE(Accepts(deps, bad)) << bad;
  const Grammar some = Compile(R"({"type": "object", "properties": {"a": {}, "b": {}, "c": {}}, "additionalProperties": false,
      "minProperties": 2})");
  for (const char* ok : {R"({"a":1,"b":2})", R"({"b":1,"c":2})", R"({"a":1,"b":2,"c":3})"}) EXPECT_TRUE(Accepts(some, ok)) << ok;
  for (const char* bad : {"{}", R"({"a":1})", R"({"c":1})"}) EXPECT_FALSE(Accepts(some, bad)) << bad;
  // A pattern or a format with length bounds: both automata at once.
  const Grammar short_x = Compile(R"({"type": "string", "pattern": "x", "minLength": 2, "maxLength": 3})");
  for (const char* ok : {R"("xa")", R"("ax")", R"("a\"x")"}) EXPECT_TRUE(Accepts(short_x, ok)) << ok;
  for (const char* bad : {R"("x")", R"("abc")", R"("axbc")"}) EXPECT_FALSE(Accepts(short_x, bad)) << bad;
  const Grammar short_mail = Compile(R"({"type": "string", "format": "email", "maxLength": 5})");
  EXPECT_TRUE(Accepts(short_mail, R"("a@b.c")"));
  EXPECT_FALSE(Accepts(short_mail, R"("ab@c.d")"));
  // Keywords of no vocabulary (vendor extensions) constrain nothing, as validators say.
  const Grammar vendor = Compile(R"({"type": "string", "_format": "x", "self": {"vendor": "v"}, "readonly": true})");
  EXPECT_TRUE(Accepts(vendor, R"("anything")"));
}

// The formats written as grammars accept what their RFCs define (the subset needing no JSON
// escape) and refuse what they do not; format names the spec does not define are ignored.
TEST(JsonSchema, StringFormats) {
  const struct {
    const char* format;
    std::vector<const char*> ok, bad;
  } cases[] = {
      {"email", {"a@b.co", "first.last+tag@mail.example.org"}, {"a", "@b.co", "a@", "a..b@c.d", "a@-b.c"}},
      {"hostname", {"localhost", "a-b.example.com", "x1"}, {"-a", "a-", "a..b", "a_b", ""}},
      {"ipv4", {"0.0.0.0", "192.168.1.255", "255.255.255.255"}, {"256.1.1.1", "1.2.3", "01.2.3.4", "1.2.3.4.5"}},
      {"uri", {"https://example.com/a/b?q=1#f", "mailto:a@b.c", "urn:isbn:123", "http://h:8080", "file:///etc/x", "a:"},
       {"example.com", "//x", "1http://x", "http://a b", "http://x#a#b", "http://%zz"}},
      {"uri-reference", {"../a/b", "/x?y", "#frag", "", "https://e.com", "a/b:c"}, {"a b", "http://x#a#b", ":x"}},
      {"json-pointer", {"", "/a/b", "/a~0b/~1"}, {"a", "/a~2", "/~"}},
  };
  for (const auto& c : cases) {
    const Grammar g = Compile(absl::StrCat(R"({"type": "string", "format": ")", c.format, R"("})"));
    for (const char* ok : c.ok) EXPECT_TRUE(Accepts(g, absl::StrCat("\"", ok, "\""))) << c.format << ": " << ok;
    for (const char* bad : c.bad) EXPECT_FALSE(Accepts(g, absl::StrCat("\"", bad, "\""))) << c.format << ": " << bad;
  }
  const Grammar unknown = Compile(R"({"type": "string", "format": "int32", "maxLength": 3})");
  EXPECT_TRUE(Accepts(unknown, R"("abc")")) << "no format of the spec: ignored";
  EXPECT_FALSE(Accepts(unknown, R"("abcd")"));
}

// pattern: the decoded string matches it (found anywhere unless anchored); patterns that could take
// a character JSON escapes, or anchor a top-level alternation, are refused.
TEST(JsonSchema, PatternsInsideStrings) {
  const Grammar anchored = Compile(R"({"type": "string", "pattern": "^[A-Z]{2}-[0-9]+$"})");
  for (const char* ok : {R"("AB-1")", R"("XY-2024")"}) EXPECT_TRUE(Accepts(anchored, ok)) << ok;
  for (const char* bad : {R"("AB-")", R"("ab-1")", R"(" AB-1")", R"("AB-1x")"}) EXPECT_FALSE(Accepts(anchored, bad)) << bad;
  const Grammar search = Compile(R"({"type": "string", "pattern": "a/b|[0-9]{3}"})");
  for (const char* ok : {R"("xa/by")", R"("123")", R"("a\nb 999 \"q\"")", R"("a/b")"})
    EXPECT_TRUE(Accepts(search, ok)) << ok;
  for (const char* bad : {R"("ab")", R"("12")", R"("")"}) EXPECT_FALSE(Accepts(search, bad)) << bad;
  const Grammar slash = Compile(R"({"type": "string", "pattern": "^\/x$"})");
  EXPECT_TRUE(Accepts(slash, R"("/x")"));
  for (const char* refused : {R"({"type": "string", "pattern": "^a|b$"})", R"J({"type": "string", "pattern": "^(?=a)"})J",
                              R"J({"type": "string", "pattern": "(?<=a)b"})J"})
    EXPECT_NE(JsonSchemaToGbnf(refused).status().message().find("refused: pattern"), std::string::npos) << refused;
}

// A pattern over the decoded text, written over the JSON text (json_text_pattern.h): atoms that
// take ", \ or a control take them escaped, never raw; every accepted text is a JSON string whose
// decoded text matches the pattern (checked with nlohmann's decoder and std::regex).
TEST(JsonSchema, PatternsThatTakeEscapedCharacters) {
  const struct {
    const char* pattern;
    std::vector<const char*> ok, bad;  // JSON texts
  } cases[] = {
      {"^[^a]$", {R"("b")", R"("\"")", R"("\\")", R"("\n")", R"("\u0001")", R"("é")"}, {R"("a")", R"("")", R"("bb")"}},
      {"^a.*z$", {R"("az")", R"("a\"\\z")", R"("a\tz")"}, {R"("a\nz")", R"("a\rz")", R"("a")"}},
      {"^\\S+$", {R"("x\"y")", R"("\\")"}, {R"("a b")", R"("\t")", R"("")"}},
      {"^[\\s\\d]+$", {R"("1 2")", R"("\t3\n")"}, {R"("a")", R"("\"")"}},
      {"^say \"hi\"$", {R"("say \"hi\"")"}, {R"("say hi")"}},
      {"^[ -~]{2}$", {R"("ab")", R"("\"\\")", R"("~ ")"}, {R"("a")", R"("\n")"}},
  };
  for (const auto& c : cases) {
    const Grammar g = Compile(json{{"type", "string"}, {"pattern", c.pattern}}.dump());
    for (const char* ok : c.ok) EXPECT_TRUE(Accepts(g, ok)) << c.pattern << ": " << ok;
    for (const char* bad : c.bad) EXPECT_FALSE(Accepts(g, bad)) << c.pattern << ": " << bad;
  }
  // Raw specials are never written: every 1-3 byte text over a small alphabet that the grammar
  // takes parses as a JSON string, and its decoded text matches the pattern.
  const std::string alphabet[] = {"a", "\"", "\\", "\\\"", "\\\\", "\\n", "\n", " ", "\\u0001"};
  for (const char* pattern : {"^[^a]+$", "^.*$", "^\\S\\s?$"}) {
    const Grammar g = Compile(json{{"type", "string"}, {"pattern", pattern}}.dump());
    const std::regex re(pattern, std::regex::ECMAScript);
    int taken = 0;
    for (const std::string& x : alphabet)
      for (const std::string& y : alphabet)
        for (const std::string& z : {std::string(), std::string("a"), std::string("\\t")}) {
          const std::string text = "\"" + x + y + z + "\"";
          if (!Accepts(g, text)) continue;
          ++taken;
          const json decoded = json::parse(text, nullptr, false);
          ASSERT_TRUE(decoded.is_string()) << pattern << ": accepted broken JSON " << text;
          EXPECT_TRUE(std::regex_search(decoded.get<std::string>(), re)) << pattern << ": " << text;
        }
    EXPECT_GT(taken, 5) << pattern;
  }
}

TEST(JsonSchema, WhatCannotBeEnforcedIsRefusedByName) {
  for (auto [schema, says] : std::vector<std::pair<const char*, const char*>>{
           {R"({"type": "string", "pattern": "^[a\\S]$"})", "refused: pattern (a character class with \\S"},
           {R"({"type": "string", "pattern": "[\\xZZ\"]"})", "refused: pattern"},
           {R"({"type": "number", "minimum": 1e40})", "minimum '1e+40': an exponent beyond 30"},
           {R"({"not": {"type": "string", "pattern": "a"}})", "not of 'pattern'"},
           {R"({"type": "array", "uniqueItems": true})", "refused: uniqueItems"},
           {R"({"oneOf": [{"type": "string", "pattern": "a"}, {"type": "string", "pattern": "b"}]})",
            "oneOf whose branches may overlap and cannot be told apart"},
           {R"({"allOf": [{"type": "string", "pattern": "a"}, {"pattern": "b"}]})", "allOf of two different 'pattern'"},
           {R"({"type": "string", "format": "ipv6"})", "format 'ipv6'"},
           {R"({"type": "object", "patternProperties": {"^x": {}, "^y": {}}})", "patternProperties with several patterns"},
           {R"({"type": "object", "minProperties": 1})", "minProperties where members other than the listed ones may appear"},
           {R"({"type": "object", "properties": {"xa": {}}, "patternProperties": {"^x": {"type": "null"}}})",
            "property 'xa' that patternProperties also matches"},
           {R"({"$ref": "http://example.com/s.json"})", "$ref to"},
           {R"({"type": "object", "required": ["a"], "additionalProperties": false})",
            "required property 'a' that additionalProperties forbids"},
           // A scalar or empty list where an alternation's branches go (the fuzzer's find: it threw).
           {R"({"anyOf": 5.5})", "anyOf that is not a non-empty list"},
           {R"({"oneOf": "x"})", "oneOf that is not a non-empty list"},
           {R"({"anyOf": []})", "anyOf that is not a non-empty list"},
           {R"({"oneOf": {"type": "null"}})", "oneOf that is not a non-empty list"},
           // prefixItems that is no list (CI's fuzzer and json_schema_random_test found it threw).
           {R"({"prefixItems": 1})", "prefixItems that is not a list"},
           {R"({"type": "array", "prefixItems": {"type": "null"}})", "prefixItems that is not a list"},
           {R"({"allOf": [{"prefixItems": "x"}, {"type": "array"}]})", "prefixItems that is not a list"},
       }) {
    auto g = JsonSchemaToGbnf(schema);
    ASSERT_FALSE(g.ok()) << schema;
    EXPECT_NE(g.status().message().find(says), std::string::npos) << schema << ": " << g.status();
  }
  EXPECT_EQ(JsonSchemaToGbnf("{").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(JsonSchemaToGbnf(R"({"$ref": "#/nowhere"})").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(JsonSchemaToGbnf(R"({"type": "string", "minLength": 100000})").status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(JsonSchemaToGbnf(R"({"type": "array", "minItems": 1000})").status().code(),
            absl::StatusCode::kResourceExhausted);
}

// A long maximum is generated up to a cap (strings 512 characters: their automaton counts in
// states; items JsonSchemaLimits::max_repeat): every output meets the schema, a longer instance is
// not accepted (documented subset).
TEST(JsonSchema, MaximumsPastTheLimitsAreGeneratedUpToThem) {
  const JsonSchemaLimits limits;
  auto s = JsonSchemaToGbnf(R"({"type": "string", "minLength": 2, "maxLength": 65535})");
  ASSERT_TRUE(s.ok()) << s.status();
  auto gs = Grammar::Parse(*s);
  ASSERT_TRUE(gs.ok()) << gs.status().message().substr(0, 300);
  auto text = [](int n) { return absl::StrCat("\"", std::string(static_cast<size_t>(n), 'a'), "\""); };
  EXPECT_FALSE(Accepts(*gs, text(1)));
  EXPECT_TRUE(Accepts(*gs, text(2)));
  EXPECT_TRUE(Accepts(*gs, text(512)));
  EXPECT_FALSE(Accepts(*gs, text(513)));
  for (const char* long_max : {R"({"type": "string", "maxLength": 2000})", R"({"type": "string", "maxLength": 4096})"}) {
    auto m = JsonSchemaToGbnf(long_max);
    ASSERT_TRUE(m.ok()) << long_max;
    EXPECT_TRUE(Grammar::Parse(*m).ok()) << long_max;
  }
  auto a = JsonSchemaToGbnf(R"({"type": "array", "items": {"type": "integer"}, "maxItems": 1000})");
  ASSERT_TRUE(a.ok()) << a.status();
  auto ga = Grammar::Parse(*a);
  ASSERT_TRUE(ga.ok()) << ga.status();
  auto list = [](int n) {
    std::string t = "[";
    for (int i = 0; i < n; ++i) absl::StrAppend(&t, i == 0 ? "" : ",", i);
    return t + "]";
  };
  EXPECT_TRUE(Accepts(*ga, list(0)));
  EXPECT_TRUE(Accepts(*ga, list(limits.max_repeat)));
  EXPECT_FALSE(Accepts(*ga, list(limits.max_repeat + 1)));
}

using testing::Canonical;
using testing::PropertyOrder;

// Under the sanitizers (20-30 times slower) every 8th schema in name order: a search for memory
// errors over all kinds of schema; the measurement is the release build's run over all of them.
#if defined(__SANITIZE_ADDRESS__)
constexpr size_t kSchemaStride = 8;
#else
constexpr size_t kSchemaStride = 1;
#endif

TEST(JsonSchema, TheSharedSchemasInTheAnchorsColumns) {
  const std::string dir = std::string(GLA_SOURCE_DIR) + "/../shared/data/jsonschema";
  if (!std::filesystem::is_directory(dir)) GTEST_FAIL() << "no shared schemas at " << dir;
  int schemas = 0, passing = 0, refused = 0, validation_errors = 0, invalidation_errors = 0, instances = 0;
  std::map<std::string, int> reasons;
  double compile_us = 0;
  std::vector<double> compile_times, cold_times;
  std::vector<std::string> schema_texts;
  std::vector<std::filesystem::directory_entry> entries(std::filesystem::directory_iterator(dir), {});
  std::sort(entries.begin(), entries.end());
  size_t index = 0;
  for (const auto& entry : entries) {
    if (entry.path().extension() != ".json") continue;
    if (index++ % kSchemaStride != 0) continue;
    if (const char* only = std::getenv("GLA_SCHEMA_ONLY"); only != nullptr && entry.path().filename().string().find(only) == std::string::npos)
      continue;
    std::ifstream in(entry.path());
    std::stringstream text;
    text << in.rdbuf();
    const json file = json::parse(text.str(), nullptr, false);
    if (!file.is_object() || !file.contains("schema")) continue;
    ++schemas;
    schema_texts.push_back(file["schema"].dump());
    // As a server compiles it: the patterns of the schemas before it in the process's cache.
    const auto t0 = std::chrono::steady_clock::now();
    auto gbnf = JsonSchemaToGbnf(file["schema"].dump());
    absl::StatusOr<Grammar> g = gbnf.ok() ? Grammar::Parse(*gbnf) : absl::StatusOr<Grammar>(gbnf.status());
    const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
    compile_times.push_back(us);
    if (std::getenv("GLA_SCHEMA_REASONS") != nullptr && us > 200000)
      std::printf("[ detail ] slow compile: %s %.0f ms (%s)\n", entry.path().filename().c_str(), us / 1000,
                  gbnf.ok() ? (g.ok() ? "ok" : std::string(g.status().message()).substr(0, 80).c_str()) : "refused");
    compile_us += us;
    if (!gbnf.ok()) {
      ++refused;
      std::string why(gbnf.status().message());
      const size_t r = why.find("refused: ");
      // GLA_SCHEMA_REASONS=full: the whole reason (less the schema path), to see what to do next.
      static const bool full = std::getenv("GLA_SCHEMA_REASONS") != nullptr;
      if (full && r != std::string::npos) why = why.substr(r + 9, why.find(" (cannot be enforced") - r - 9);
      else why = r == std::string::npos ? why.substr(0, 40) : why.substr(r + 9, why.find(' ', r + 9) - r - 9);
      ++reasons[why];
      if (const char* show = std::getenv("GLA_SCHEMA_SHOW"); show != nullptr && why.find(show) != std::string::npos)
        std::printf("[ detail ] %s: %s\n", entry.path().filename().c_str(), std::string(gbnf.status().message()).c_str());
      continue;
    }
    if (!g.ok() && g.status().code() == absl::StatusCode::kResourceExhausted) {  // past a grammar limit: refused
      ++refused;
      ++reasons["grammar limit"];
      continue;
    }
    ASSERT_TRUE(g.ok()) << entry.path() << ": the compiler wrote a grammar that does not parse: " << g.status();
    std::map<std::string, int> order;
    PropertyOrder(file["schema"], &order);
    bool all_right = true;
    for (const json& t : file["tests"]) {
      json data = t["data"];
      Canonical(data, &file["schema"], file["schema"], order);
      const bool accepted = Accepts(*g, data.dump());
      ++instances;
      if (t["valid"].get<bool>() && !accepted) {
        ++validation_errors, all_right = false;
        if (validation_errors <= 10) {
          const std::string text = data.dump();
          const size_t at = Taken(*g, text);
          std::printf("[ detail ] valid instance rejected at byte %zu: %s: ...%s<here>%s\n", at,
                      entry.path().filename().c_str(), text.substr(at > 60 ? at - 60 : 0, std::min<size_t>(at, 60)).c_str(),
                      text.substr(at, 30).c_str());
        }
      }
      if (!t["valid"].get<bool>() && accepted) {
        ++invalidation_errors, all_right = false;
        if (invalidation_errors <= 20)  // the ones to read: an invalid instance the grammar let through
          std::printf("[ detail ] invalid instance accepted: %s: %s\n", entry.path().filename().c_str(),
                      data.dump().substr(0, 160).c_str());
      }
    }
    passing += all_right;
  }
  if (std::getenv("GLA_SCHEMA_ONLY") != nullptr) return;  // a look at a few schemas, not the measurement
  ASSERT_GT(schemas, 1500 / static_cast<int>(kSchemaStride)) << "the shared schemas are missing";
  if (kSchemaStride > 1) std::printf("[ measure ] (every %zuth schema: a sanitizer build)\n", kSchemaStride);
  // Each again from nothing: no pattern of another schema in the cache (a server's first request).
  for (const std::string& text : schema_texts) {
    RegexCache::Shared().Clear();
    const auto t0 = std::chrono::steady_clock::now();
    auto gbnf = JsonSchemaToGbnf(text);
    if (gbnf.ok()) (void)Grammar::Parse(*gbnf);
    cold_times.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(cold_times.begin(), cold_times.end());
  std::printf("[ measure ] compile p50 with the pattern cache emptied before each schema: %.0f us\n",
              cold_times[cold_times.size() / 2]);
  std::sort(compile_times.begin(), compile_times.end());
  std::printf("[ measure ] shared schemas: %d; passing %d (%.1f%%), compile-refused %d, validation errors %d, "
              "invalidation errors %d (of %d instances), crashes 0; compile p50 %.0f us\n",
              schemas, passing, 100.0 * passing / schemas, refused, validation_errors, invalidation_errors, instances,
              compile_times[compile_times.size() / 2]);
  std::vector<std::pair<int, std::string>> top;
  for (const auto& [why, n] : reasons) top.emplace_back(n, why);
  std::sort(top.rbegin(), top.rend());
  for (size_t i = 0; i < std::min<size_t>(top.size(), std::getenv("GLA_SCHEMA_REASONS") ? 60 : 12); ++i)
    std::printf("[ measure ]   refused for %-40s %d\n", top[i].second.c_str(), top[i].first);
}

}  // namespace
}  // namespace gla::constraints
