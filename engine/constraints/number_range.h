// The decimal numerals of a bounded range, as GBNF, for JSON Schema's minimum / maximum /
// exclusiveMinimum / exclusiveMaximum (issue 21): exact for integer and decimal bounds alike, by a
// digit-by-digit walk that stays tight to a bound's digits while it follows them (the way a
// numeral compares with a bound: integer part first, then the fraction digit by digit).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace gla::constraints {

// A decimal number as its digits: (negative ? -1 : 1) * (integer . fraction), the fraction without
// trailing zeros.
struct Decimal {
  bool negative = false;
  int64_t integer = 0;
  std::string fraction;
};

// A JSON number's text (as a schema writes a bound) as a Decimal: INVALID_ARGUMENT for an exponent
// this does not expand (|e| > 30) or an integer part of 18 digits or more.
absl::StatusOr<Decimal> ParseDecimal(const std::string& text);

// -1, 0, 1 as x compares with y.
int CompareDecimal(const Decimal& x, const Decimal& y);

// One end of a range; exclusive: the bound itself is not in it.
struct Bound {
  Decimal value;
  bool exclusive = false;
};

// GBNF for the JSON numerals without exponent of [lo, hi] (an absent end: unbounded): integers
// with no leading zeros, an optional fraction; "-0" is never written. Empty when no numeral is in
// the range. integers_only: no fraction (for "type": "integer").
std::string NumberRangeGbnf(const std::optional<Bound>& lo, const std::optional<Bound>& hi, bool integers_only);

// The numerals of the integers [a, b] (a >= 1; b < 0: unbounded), no leading zeros.
std::string PositiveIntegersGbnf(int64_t a, int64_t b);

}  // namespace gla::constraints
