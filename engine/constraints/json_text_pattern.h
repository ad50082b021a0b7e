// A pattern over a string's decoded text, rewritten as a pattern over its JSON text (issue 21):
// JSON Schema's "pattern" speaks of the decoded string, but a generator writes the JSON text, where
// ", \ and the control characters appear escaped. Each atom of the pattern that can take one of
// those characters (., [^...], \S, \W, \D, \s, an escaped literal) is rewritten to take the rest
// of its characters raw and those escaped (\" \\ \b \f \n \r \t, \u00XX for controls). The
// rewritten pattern's language is the JSON writing of the original's (with those escape forms; a
// \uXXXX of another character is not generated).
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "engine/constraints/regex.h"

namespace gla::constraints {

// A JSON Schema pattern's anchors: a leading ^ and an unescaped trailing $ taken off `body`;
// top_alternation: a | outside every group and class (then ^a|b$ anchors each side, not the whole).
struct PatternAnchors {
  std::string body;
  bool head = false, tail = false, top_alternation = false;
};
PatternAnchors SplitAnchors(std::string pattern);

// The rewrite of `pattern` (regex.h's dialect, no anchors); INVALID_ARGUMENT naming what it cannot
// rewrite (a positive class that takes such a character other than through \s or a range).
absl::StatusOr<std::string> PatternOverJsonText(std::string_view pattern);

// Whether every text `re` accepts, and every prefix it can go on from, is a valid JSON string
// (quotes included) or a prefix of one: the check that a string terminal cannot write broken JSON.
bool WritesOnlyJsonStrings(const Regex& re);

}  // namespace gla::constraints
