// JSON Schema -> GBNF (engine/constraints/json_schema.h): hand-made cases, refusals by name, and
// the shared schemas (../shared/data/jsonschema: 1,602 real schemas with valid and invalid
// instances), reported in the columns of the issue's anchors. The instances are written compact,
// each object's members in the order its own schema lists them (the generator's order: Canonical).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "engine/constraints/grammar.h"
#include "engine/constraints/json_schema.h"
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
  EXPECT_NE(none.status().message().find("nothing satisfies it"), std::string::npos) << none.status();
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
  const Grammar big = Compile(R"({"type": "integer", "minimum": 5})");
  EXPECT_TRUE(Accepts(big, "123456789012345678"));
  const Grammar nonneg = Compile(R"({"type": "number", "minimum": 0})");
  EXPECT_TRUE(Accepts(nonneg, "0.25"));
  EXPECT_FALSE(Accepts(nonneg, "-0.25"));
  const Grammar typeless = Compile(R"({"minimum": 0})");
  EXPECT_TRUE(Accepts(typeless, "\"x\"")) << "bounds constrain numbers only";
  EXPECT_FALSE(Accepts(typeless, "-1"));
  EXPECT_TRUE(Accepts(typeless, "3.5"));
  EXPECT_EQ(JsonSchemaToGbnf(R"({"minimum": 2})").status().code(), absl::StatusCode::kInvalidArgument)
      << "a typeless bound is a number bound";
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
                              R"({"type": "string", "pattern": "^[^a]$"})", R"({"type": "string", "pattern": "x", "maxLength": 3})"})
    EXPECT_NE(JsonSchemaToGbnf(refused).status().message().find("refused: pattern"), std::string::npos) << refused;
}

TEST(JsonSchema, WhatCannotBeEnforcedIsRefusedByName) {
  for (auto [schema, says] : std::vector<std::pair<const char*, const char*>>{
           {R"({"type": "string", "pattern": "^a.*$"})", "refused: pattern"},
           {R"({"type": "number", "minimum": 3})", "number bounds other than minimum 0"},
           {R"({"not": {"type": "null"}})", "refused: not"},
           {R"({"type": "array", "uniqueItems": true})", "refused: uniqueItems"},
           {R"({"oneOf": [{"type": "string"}, {"type": "string", "maxLength": 2}]})", "oneOf whose branches"},
           {R"({"allOf": [{"type": "string"}, {"maxLength": 2}]})", "allOf of several"},
           {R"({"allOf": [{"properties": {"a": {}}}, {"properties": {"a": {"type": "null"}}}]})", "allOf of several"},
           {R"({"allOf": [{"properties": {"a": {}}, "additionalProperties": false}, {"required": ["a"]}]})",
            "allOf of several"},
           {R"({"type": "string", "format": "email"})", "format 'email'"},
           {R"({"$ref": "http://example.com/s.json"})", "$ref to"},
           {R"({"type": "object", "required": ["a"]})", "required property 'a' without a schema"},
           {R"({"frobnicate": 1})", "refused: frobnicate"},
       }) {
    auto g = JsonSchemaToGbnf(schema);
    ASSERT_FALSE(g.ok()) << schema;
    EXPECT_NE(g.status().message().find(says), std::string::npos) << schema << ": " << g.status();
  }
  EXPECT_EQ(JsonSchemaToGbnf("{").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(JsonSchemaToGbnf(R"({"$ref": "#/nowhere"})").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(JsonSchemaToGbnf(R"({"type": "string", "maxLength": 100000})").status().code(),
            absl::StatusCode::kResourceExhausted);
}

using testing::Canonical;
using testing::PropertyOrder;

TEST(JsonSchema, TheSharedSchemasInTheAnchorsColumns) {
  const std::string dir = std::string(GLA_SOURCE_DIR) + "/../shared/data/jsonschema";
  if (!std::filesystem::is_directory(dir)) GTEST_FAIL() << "no shared schemas at " << dir;
  int schemas = 0, passing = 0, refused = 0, validation_errors = 0, invalidation_errors = 0, instances = 0;
  std::map<std::string, int> reasons;
  double compile_us = 0;
  std::vector<double> compile_times;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".json") continue;
    std::ifstream in(entry.path());
    std::stringstream text;
    text << in.rdbuf();
    const json file = json::parse(text.str(), nullptr, false);
    if (!file.is_object() || !file.contains("schema")) continue;
    ++schemas;
    const auto t0 = std::chrono::steady_clock::now();
    auto gbnf = JsonSchemaToGbnf(file["schema"].dump());
    absl::StatusOr<Grammar> g = gbnf.ok() ? Grammar::Parse(*gbnf) : absl::StatusOr<Grammar>(gbnf.status());
    const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
    compile_times.push_back(us);
    compile_us += us;
    if (!gbnf.ok()) {
      ++refused;
      std::string why(gbnf.status().message());
      const size_t r = why.find("refused: ");
      why = r == std::string::npos ? why.substr(0, 40) : why.substr(r + 9, why.find(' ', r + 9) - r - 9);
      ++reasons[why];
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
  ASSERT_GT(schemas, 1500) << "the shared schemas are missing";
  std::sort(compile_times.begin(), compile_times.end());
  std::printf("[ measure ] shared schemas: %d; passing %d (%.1f%%), compile-refused %d, validation errors %d, "
              "invalidation errors %d (of %d instances), crashes 0; compile p50 %.0f us\n",
              schemas, passing, 100.0 * passing / schemas, refused, validation_errors, invalidation_errors, instances,
              compile_times[compile_times.size() / 2]);
  std::vector<std::pair<int, std::string>> top;
  for (const auto& [why, n] : reasons) top.emplace_back(n, why);
  std::sort(top.rbegin(), top.rend());
  for (size_t i = 0; i < std::min<size_t>(top.size(), 12); ++i)
    std::printf("[ measure ]   refused for %-40s %d\n", top[i].second.c_str(), top[i].first);
}

}  // namespace
}  // namespace gla::constraints
