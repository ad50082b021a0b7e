// JSON Schema compiled to a GBNF grammar (grammar.h) for structured output (issue 21): the text a
// constrained generation produces is JSON that validates against the schema. Combinations (allOf,
// siblings of $ref / anyOf / oneOf / enum, not, dependencies) are folded first (schema_algebra.h);
// numbers with bounds are digit walks (number_range.h); patterns are written over the JSON text
// (json_text_pattern.h). docs/structured-output.md lists what is enforced. Object members come in
// the schema's order (the generator's order; an instance is checked in that order), with at most
// one space where JSON allows whitespace (compact or json.dumps layout; no newlines). Every
// validation keyword that is not enforced is refused by name (INVALID_ARGUMENT, "refused:
// <what>"), never ignored; annotations and keywords of no vocabulary are ignored, as validators do.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace gla::constraints {

// Arrays and objects nested deeper than this anywhere in a schema: refused before it is walked.
constexpr int kMaxJsonDepth = 256;

struct JsonSchemaLimits {
  int max_repeat = 100;          // minItems past it is refused; maxItems past it is generated up to it
  // min/maxLength: a minLength past it is refused (and past ~700 the automaton's state limit
  // refuses it); a maxLength past 512 is generated up to 512 (json_schema.cc, String).
  int max_string_length = 4096;
  int max_rules = 20000;
  size_t max_grammar_bytes = 256 << 10;  // GrammarLimits' default: a larger grammar would not parse
  size_t max_schema_bytes = 1 << 20;
};

// The schema (JSON text) as GBNF; INVALID_ARGUMENT for bad JSON or what is refused,
// RESOURCE_EXHAUSTED past a limit; INTERNAL (never an exception) if the compiler meets a shape it
// fails to check for, a bug the fuzzer looks for (tests/fuzz/json_schema_fuzz.cc).
absl::StatusOr<std::string> JsonSchemaToGbnf(std::string_view schema_json, const JsonSchemaLimits& limits = {});

}  // namespace gla::constraints
