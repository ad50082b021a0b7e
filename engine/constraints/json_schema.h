// JSON Schema compiled to a GBNF grammar (grammar.h) for structured output (issue 21): the text a
// constrained generation produces is JSON that validates against the schema. A first subset:
// types, enum/const, properties/required/additionalProperties, items (a schema, or a tuple with
// additionalItems / prefixItems), min/maxItems, min/maxLength, the formats date, time, date-time
// and uuid, anyOf, oneOf whose branches have distinct types, a single allOf, and $ref into
// #/definitions or #/$defs (recursion included). Object members come in the schema's order (the
// generator's order; an instance is checked in that order), with at most one space where JSON
// allows whitespace (compact or json.dumps layout; no newlines). Everything else that constrains
// is refused by name (INVALID_ARGUMENT, "refused: <keyword>"), never ignored; annotations (title,
// description, default, examples, ...) are.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace gla::constraints {

// Arrays and objects nested deeper than this anywhere in a schema: refused before it is walked.
constexpr int kMaxJsonDepth = 256;

struct JsonSchemaLimits {
  int max_repeat = 100;          // min/maxItems: larger bounds are refused
  int max_string_length = 4096;  // min/maxLength (the automaton's state limit may refuse less)
  int max_rules = 20000;
  size_t max_grammar_bytes = 256 << 10;  // GrammarLimits' default: a larger grammar would not parse
  size_t max_schema_bytes = 1 << 20;
};

// The schema (JSON text) as GBNF; INVALID_ARGUMENT for bad JSON or what is refused,
// RESOURCE_EXHAUSTED past a limit.
absl::StatusOr<std::string> JsonSchemaToGbnf(std::string_view schema_json, const JsonSchemaLimits& limits = {});

}  // namespace gla::constraints
