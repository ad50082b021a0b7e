// JSON Schema algebra for the schema compiler (issue 21): what it takes to turn the schemas people
// write into the few shapes json_schema.cc compiles. Real schemas combine: allOf of a base and an
// extension, a $ref with siblings, properties beside an anyOf, an enum beside a type. Each is an
// intersection, and an intersection of two schemas is again a schema, found keyword by keyword
// (types intersect, properties merge, bounds tighten, anyOf distributes). Where the result cannot
// be written as one schema the intersection is refused by name, never approximated.
//
// Also here: a small validator for the values a schema lists (an enum beside other keywords keeps
// the values that satisfy them), and a proof that two schemas share no instance (a oneOf compiles
// to an alternation only when its branches cannot both match).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace gla::constraints {

// Our keyword, written only by the algebra (the negation of "type": "integer"): true, a number
// with a nonzero fraction digit. Validators do not know it; a schema that names it is held to it
// (stricter than a validator, never looser).
inline constexpr char kFractionKeyword[] = "$gla:fraction";

using SchemaJson = nlohmann::ordered_json;

// "json schema at <at>: refused: <what> (cannot be enforced yet; ...)": INVALID_ARGUMENT.
absl::Status SchemaRefusal(const std::string& what, const std::string& at);

// Whether `key` is a validation keyword the compiler enforces.
bool SupportedKeyword(const std::string& key);
// Whether `key` (with this value) is a validation keyword of some draft the compiler cannot
// enforce (refused by name). A key that is neither is no validation keyword (an annotation, a
// vendor's extension): validators ignore it, and so does the compiler.
bool UnenforcedKeyword(const std::string& key, const SchemaJson& value);

class SchemaAlgebra {
 public:
  // `root`: the document $refs point into; it must outlive this.
  explicit SchemaAlgebra(const SchemaJson& root) : root_(root) {}

  // Whether Normalize would change more than dropping annotations: allOf, or $ref / anyOf / oneOf /
  // enum / const beside another validation keyword. The compiler takes the others as they are
  // (no copy: a large schema is compiled without copying its subtrees at every level).
  static bool Folds(const SchemaJson& s);

  // The schema a "#/..." reference names; null when it names nothing (or another document).
  const SchemaJson* Resolve(const std::string& ref) const;

  // `s` (at `at`, for messages) in one of the compiler's shapes: the boolean schemas true / false
  // (false: no value satisfies it), or an object with only enforced keywords where $ref, anyOf and
  // oneOf stand alone, allOf is gone, and an enum stands alone with the values that satisfy its
  // siblings (a const is a one-value enum).
  absl::StatusOr<SchemaJson> Normalize(const SchemaJson& s, const std::string& at);
  // The schema of the values valid under both, normalized.
  absl::StatusOr<SchemaJson> Intersect(const SchemaJson& a, const SchemaJson& b, const std::string& at);

  // Whether `value` is valid under `s`; nullopt where `s` uses what this does not decide (formats,
  // patterns, unenforced keywords).
  std::optional<bool> Validate(const SchemaJson& value, const SchemaJson& s);

  // The values `s` does not take, as a schema (normalized): types, bounds, lengths, counts,
  // required and properties negate; the rest (patterns, formats, items, enums of strings or
  // numbers, ...) is refused by name.
  absl::StatusOr<SchemaJson> Negate(const SchemaJson& s, const std::string& at);
  // oneOf's branches made pairwise disjoint: each one less the others it may overlap
  // (b_i & not b_j), as an anyOf; refused where a negation is.
  absl::StatusOr<SchemaJson> ExclusiveBranches(const SchemaJson& branches, const std::string& at);

  // True only when no value is valid under both (proven from types, enums, and object members
  // both require with disjoint schemas or one forbids); false when unsure.
  bool Disjoint(const SchemaJson& a, const SchemaJson& b);

 private:
  absl::StatusOr<SchemaJson> NormalizeAt(const SchemaJson& s, const std::string& at, int depth);
  absl::StatusOr<SchemaJson> IntersectAt(const SchemaJson& a, const SchemaJson& b, const std::string& at, int depth);
  // A normalized schema with a lone $ref replaced by what it names (normalized), hop by hop.
  absl::StatusOr<SchemaJson> Dereference(SchemaJson s, const std::string& at, int depth);
  absl::StatusOr<SchemaJson> MergePlain(const SchemaJson& a, const SchemaJson& b, const std::string& at, int depth);
  absl::Status MergeObjects(const SchemaJson& a, const SchemaJson& b, const std::string& at, int depth, SchemaJson* out);
  absl::StatusOr<SchemaJson> NegateAt(const SchemaJson& s, const std::string& at, int depth);
  std::optional<bool> ValidateAt(const SchemaJson& value, const SchemaJson& s, int depth);
  bool DisjointAt(const SchemaJson& a, const SchemaJson& b, int depth);

  // Counts the steps of every operation: a schema whose folding would take more (a hostile one, or
  // alternations multiplying through negations) is refused rather than burning the CPU.
  bool Spend();

  const SchemaJson& root_;
  int64_t work_ = 0;
};

// Steps (normalizations, intersections, negations, validations) one SchemaAlgebra may take.
constexpr int64_t kMaxSchemaAlgebraWork = 20000;

}  // namespace gla::constraints
