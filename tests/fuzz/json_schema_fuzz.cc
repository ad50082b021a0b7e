// Fuzzes the JSON Schema compiler (engine/constraints/json_schema.h): a request's schema is
// untrusted input. Promise: JsonSchemaToGbnf ends with OK, INVALID_ARGUMENT or RESOURCE_EXHAUSTED
// in bounded time and memory; what it writes is a grammar the GBNF parser takes (else the compiler
// has a bug), and matching the schema's own text against it runs without UB.
#include <cstddef>
#include <cstdint>
#include <string>

#include "engine/constraints/grammar.h"
#include "engine/constraints/json_schema.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string schema(reinterpret_cast<const char*>(data), size);
  gla::constraints::JsonSchemaLimits limits;
  limits.max_repeat = 16;
  limits.max_string_length = 16;
  limits.max_rules = 2000;
  auto gbnf = gla::constraints::JsonSchemaToGbnf(schema, limits);
  if (!gbnf.ok()) {
    GLA_FUZZ_CHECK(gbnf.status().code() == absl::StatusCode::kInvalidArgument ||
                       gbnf.status().code() == absl::StatusCode::kResourceExhausted,
                   "compile refused with %s", gbnf.status().ToString().c_str());
    return 0;
  }
  gla::constraints::GrammarLimits glimits;
  glimits.max_items_per_set = 5000;
  auto g = gla::constraints::Grammar::Parse(*gbnf, glimits);
  GLA_FUZZ_CHECK(g.ok() || g.status().code() == absl::StatusCode::kResourceExhausted,
                 "the compiler wrote a grammar that does not parse: %s", g.status().ToString().c_str());
  if (!g.ok()) return 0;
  gla::constraints::GrammarMatcher m(*g);
  for (char c : schema)
    if (!m.Advance(static_cast<uint8_t>(c))) break;
  (void)m.CanEnd();
  return 0;
}
