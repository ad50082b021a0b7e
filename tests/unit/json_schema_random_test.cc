// The JSON Schema compiler (engine/constraints/json_schema.h) over random schemas built from its own
// keywords, each given values of every kind (a list where a schema goes, a number where a list
// goes, refs that name something or nothing, nested combinations). libFuzzer (tests/fuzz) mutates
// bytes and reaches deep keyword shapes slowly; this walks the keyword x value-kind space directly.
// Promise checked: every schema ends OK, INVALID_ARGUMENT or RESOURCE_EXHAUSTED (INTERNAL means the
// compiler met a shape it fails to check, json_schema.cc), and what compiles is a grammar that parses.
// GLA_SCHEMA_RANDOM=N runs N schemas per seed instead of the default.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "engine/constraints/grammar.h"
#include "engine/constraints/json_schema.h"
#include "nlohmann/json.hpp"

namespace gla::constraints {
namespace {

using json = nlohmann::json;

class RandomSchemas {
 public:
  explicit RandomSchemas(uint64_t seed) : rng_(seed) {}

  json Schema(int depth) {
    if (depth <= 0 || Pick(8) == 0) {
      if (Pick(3) == 0) return Pick(2) == 1;
      return json{{"type", Of(kTypes)}};
    }
    json o = json::object();
    for (int n = 1 + Pick(4); n > 0; --n) {
      const std::string k = Of(kKeywords);
      if (IsMapKeyword(k) && Pick(4) != 0) {
        json m = json::object();
        for (int j = Pick(3); j > 0; --j) m[Of(kNames)] = Pick(5) != 0 ? Schema(depth - 1) : Value(depth - 1);
        o[k] = std::move(m);
      } else if (IsListKeyword(k) && Pick(4) != 0) {
        json a = json::array();
        for (int j = Pick(4); j > 0; --j) a.push_back(Pick(6) != 0 ? Schema(depth - 1) : Value(depth - 1));
        o[k] = std::move(a);
      } else if (k == "required" && Pick(3) != 0) {
        json a = json::array();
        for (int j = Pick(3); j > 0; --j) a.push_back(Pick(5) != 0 ? json(Of(kNames)) : Value(0));
        o[k] = std::move(a);
      } else {
        o[k] = Value(depth - 1);
      }
    }
    return o;
  }

 private:
  static constexpr const char* kKeywords[] = {
      "type", "type", "properties", "required", "additionalProperties", "items", "items", "prefixItems",
      "additionalItems", "minItems", "maxItems", "minLength", "maxLength", "format", "pattern", "minimum",
      "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "enum", "const", "anyOf", "oneOf",
      "allOf", "allOf", "not", "$ref", "$defs", "definitions", "patternProperties", "minProperties",
      "maxProperties", "if", "then", "else", "dependentRequired", "dependentSchemas", "dependencies",
      "uniqueItems", "contains", "minContains", "maxContains", "propertyNames", "unevaluatedItems",
      "unevaluatedProperties", "$dynamicRef", "$recursiveRef", "extends", "disallow", "divisibleBy", "title",
      "description", "default", "nullable", "$schema", "$id"};
  static constexpr const char* kTypes[] = {"object", "array", "string", "number", "integer", "boolean", "null", "x"};
  static constexpr const char* kNames[] = {"a", "b", "c"};
  static constexpr const char* kStrings[] = {
      "a", "#", "#/", "#/$defs/a", "#/definitions/a", "#/properties/a", "#/$defs/a/items", "#/anyOf/0",
      "[a-z]+", "^a$", "\\d", "", "date-time", "date", "time", "uuid", "email", "hostname"};

  template <size_t N>
  const char* Of(const char* const (&list)[N]) { return list[Pick(static_cast<int>(N))]; }
  int Pick(int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng_); }
  static bool IsMapKeyword(const std::string& k) {
    return k == "properties" || k == "$defs" || k == "definitions" || k == "patternProperties" ||
           k == "dependentRequired" || k == "dependentSchemas" || k == "dependencies";
  }
  static bool IsListKeyword(const std::string& k) {
    return k == "anyOf" || k == "oneOf" || k == "allOf" || k == "prefixItems" || k == "items" || k == "extends" ||
           k == "disallow" || k == "enum";
  }

  // Any JSON value; a schema or a list of them more often than chance would give.
  json Value(int depth) {
    switch (Pick(depth <= 0 ? 6 : 9)) {
      case 0: return nullptr;
      case 1: return Pick(2) == 1;
      case 2: {
        constexpr int64_t kInts[] = {0, 1, -1, 2, 3, 5, 16, 17, -5, 1000000, std::numeric_limits<int64_t>::max(),
                                     std::numeric_limits<int64_t>::min()};
        return kInts[Pick(12)];
      }
      case 3: {
        constexpr double kReals[] = {0.5, -0.5, 1e308, -1e308, 2.0, 1e17, -1e17, 0.1, 3.0};
        return kReals[Pick(9)];
      }
      case 4: return Of(kTypes);
      case 5: return Of(kStrings);
      case 6: {
        json a = json::array();
        for (int n = Pick(4); n > 0; --n) a.push_back(Pick(2) != 0 ? Schema(depth - 1) : Value(depth - 1));
        return a;
      }
      case 7: return Schema(depth - 1);
      default: {
        json a = json::array();
        for (int n = Pick(3); n > 0; --n) a.push_back(Of(kTypes));
        return a;
      }
    }
  }

  std::mt19937_64 rng_;
};

TEST(JsonSchemaRandom, EverySchemaIsCompiledOrRefusedNeverThrownOn) {
  const char* env = std::getenv("GLA_SCHEMA_RANDOM");
  const int per_seed = env != nullptr ? std::atoi(env) : 10000;
  JsonSchemaLimits limits;  // small, as in the fuzz harness: more schemas reach the limits' paths
  limits.max_repeat = 16;
  limits.max_string_length = 16;
  limits.max_rules = 2000;
  int compiled = 0, refused = 0, failures = 0;
  for (uint64_t seed : {1u, 2u, 3u, 4u}) {
    RandomSchemas gen(seed);
    for (int i = 0; i < per_seed && failures < 10; ++i) {
      const std::string schema = gen.Schema(3 + i % 3).dump();
      absl::StatusOr<std::string> gbnf = JsonSchemaToGbnf(schema, limits);
      if (!gbnf.ok()) {
        ++refused;
        const absl::StatusCode code = gbnf.status().code();
        if (code != absl::StatusCode::kInvalidArgument && code != absl::StatusCode::kResourceExhausted) {
          ++failures;
          ADD_FAILURE() << schema << "\n" << gbnf.status();
        }
        continue;
      }
      ++compiled;
      absl::StatusOr<Grammar> g = Grammar::Parse(*gbnf);
      if (!g.ok() && g.status().code() != absl::StatusCode::kResourceExhausted) {
        ++failures;
        ADD_FAILURE() << "the compiler wrote a grammar that does not parse: " << g.status() << "\n" << schema;
      }
    }
  }
  // Both outcomes are common, so the walk reaches the compiler's generating code, not only its refusals.
  EXPECT_GT(compiled, per_seed / 2);
  EXPECT_GT(refused, per_seed / 2);
  std::printf("random schemas: %d compiled, %d refused\n", compiled, refused);
}

}  // namespace
}  // namespace gla::constraints
