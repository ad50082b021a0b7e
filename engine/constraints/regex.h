// Regular expressions compiled to a byte-level DFA, for structured output (issue 21): a constraint
// is applied token by token, so the question asked of a pattern is never "does this string match"
// but "which bytes may come next from here, and can the string still end well": a DFA over bytes
// (UTF-8) whose dead states are pruned answers both in O(1) per byte.
//
// The dialect is the ECMAScript subset JSON Schema's "pattern" uses (and what users write for
// OpenAI-style regex constraints): literals and escapes (\d \w \s and their negations, \n \r \t
// \f \v \0, \xHH, \uHHHH with surrogate pairs, \u{H...}, escaped punctuation), classes [...] with
// ranges and negation, '.', groups (capturing, (?:...), named), alternation, the quantifiers
// * + ? {n} {n,} {n,m} (lazy forms accepted: the language is the same), and ^ / $ at the ends.
// The whole string must match (a caller wanting a search writes .* around it). What a DFA cannot
// express is refused by name at compile time (backreferences, lookaround, word boundaries,
// anchors inside), never ignored. Every size is bounded: a hostile pattern gets an error, not
// gigabytes.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace gla::constraints {

struct RegexLimits {
  size_t max_pattern_bytes = 64 << 10;
  int max_repeat = 4096;        // {n,m} bounds (a string's maxLength)
  int max_nfa_states = 200000;  // after expanding the counted repeats
  int max_dfa_states = 20000;
};

// Where `token` first occurs outside every group, class and escape of `pattern`; npos: nowhere.
// (A top-level "|" or our "(?&)".)
size_t FindTopLevel(std::string_view pattern, std::string_view token);

class Regex {
 public:
  // INVALID_ARGUMENT for a syntax error or an unsupported construct (named, with its offset);
  // RESOURCE_EXHAUSTED past a limit.
  static absl::StatusOr<Regex> Compile(std::string_view pattern, const RegexLimits& limits = {});

  static constexpr int kDead = -1;
  int start() const { return start_; }  // kDead for a pattern that matches nothing
  // The state after one more byte; kDead when no string with this prefix matches.
  int Next(int state, uint8_t byte) const {
    return next_[static_cast<size_t>(state) * classes_ + class_of_[byte]];
  }
  bool Accepting(int state) const { return accepting_[state]; }
  // The bytes that keep the automaton in `state` (Next(state, b) == state) as a 256-bit set;
  // nullptr when none do. A token trie walk takes a whole subtree at once where all of its bytes
  // are in it (a JSON string's body).
  const std::array<uint64_t, 4>* SelfLoops(int state) const {
    const int32_t i = self_loop_of_[state];
    return i < 0 ? nullptr : &self_loops_[i];
  }
  int num_states() const { return static_cast<int>(accepting_.size()); }
  // The memory the automaton holds (what caches count).
  size_t bytes() const {
    return sizeof(*this) + next_.size() * sizeof(int32_t) + accepting_.size() / 8 +
           self_loop_of_.size() * sizeof(int32_t) + self_loops_.size() * sizeof(self_loops_[0]);
  }
  // Whether the whole of `s` matches.
  bool Matches(std::string_view s) const;
  // The texts both match (the product automaton, pruned). Compile takes it as "A(?&)B" at the top
  // level of a pattern (our extension: "(?&" is no ECMAScript syntax), which is how a grammar's
  // /regex/ terminal says "this pattern, and at most n characters".
  static absl::StatusOr<Regex> Intersect(const Regex& a, const Regex& b, const RegexLimits& limits = {});

 private:
  friend class RegexComposition;
  Regex() = default;
  // A table of `accepting.size()` states (state 0 the start) as a Regex, the dead ends pruned.
  static Regex FromTable(const std::vector<int32_t>& next, int classes, const std::vector<bool>& accepting,
                         const std::array<uint8_t, 256>& class_of);
  int start_ = kDead;
  // The bytes fall into classes no transition tells apart (a JSON string's automaton has about a
  // dozen): the table is [states * classes], a few dozen bytes a state instead of 1 KiB.
  std::array<uint8_t, 256> class_of_{};
  int classes_ = 1;
  std::vector<int32_t> next_;     // [states * classes_]
  std::vector<bool> accepting_;   // [states]
  std::vector<int32_t> self_loop_of_;                 // [states]: index into self_loops_, -1: none
  std::vector<std::array<uint64_t, 4>> self_loops_;
};

}  // namespace gla::constraints
