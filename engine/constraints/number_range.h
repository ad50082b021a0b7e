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

// The same language as NumberRangeGbnf's GBNF, as a regex of regex.h's dialect (to intersect it
// with another automaton). Empty when no numeral is in the range.
std::string NumberRangeRegex(const std::optional<Bound>& lo, const std::optional<Bound>& hi, bool integers_only);

// JSON Schema's multipleOf m (> 0) as a / 10^s in lowest terms. Written here when a divides
// 1,000 (1, 2, 4, 5, 8, 10, 20, 25, 40, 50, 125 ... and 0.01, 0.25, 2.5 ...) or is 1 (any power of
// ten down to 0.0001):
// whether a numeral is a multiple then depends on its last few digits only. Else, or for m <= 0,
// INVALID_ARGUMENT naming why.
struct Multiple {
  int64_t a = 1;
  int s = 0;  // fraction digits of m
  int t = 0;  // a divides 10^t; t >= s
};
absl::StatusOr<Multiple> ParseMultiple(const Decimal& m);

// The JSON numerals without exponent that are multiples of m, as a regex (optional '-', the
// integer part, a fraction whose digits past m's are zeros). integers_only: no fraction.
std::string MultiplesRegex(const Multiple& m, bool integers_only);

// Whether x is a multiple of m (exact, in decimal).
bool IsMultiple(const Decimal& x, const Multiple& m);

}  // namespace gla::constraints
