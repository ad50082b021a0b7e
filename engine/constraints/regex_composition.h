// A regular expression whose atoms are compiled automata (regex.h), determinized into one: how a
// grammar's regular stretches become single terminals (grammar_fusion.h) without going back to a
// pattern. Reparsing the text of every stretch would expand each string's UTF-8 classes into an NFA
// again; here the atoms' DFAs (a JSON string's is 26 states over a dozen byte classes) are the
// positions of a Glushkov construction, and a state of the result is a set of (atom, atom state).
//
// Nodes are added bottom up and form a tree (a node is a child once: an atom used twice in a
// pattern is added twice, it is two positions). Atoms never match the empty text (a grammar's
// terminals never do); sequences, alternatives and stars may.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/constraints/regex.h"

namespace gla::constraints {

class RegexComposition {
 public:
  // `re` is read by Build (it must outlive it) and must not match the empty text.
  int Atom(const Regex* re);
  int Sequence(std::vector<int> parts);  // no parts: the empty text
  int Alternatives(std::vector<int> alternatives, bool or_empty);
  int Star(int node);
  int num_nodes() const { return static_cast<int>(nodes_.size()); }
  // The automaton of `root`'s language; RESOURCE_EXHAUSTED past limits.max_dfa_states.
  absl::StatusOr<Regex> Build(int root, const RegexLimits& limits = {}) const;

 private:
  struct Node {
    enum Kind : uint8_t { kAtom, kSequence, kAlternatives, kStar } kind = kAtom;
    bool or_empty = false;
    const Regex* re = nullptr;
    std::vector<int> children;
  };
  std::vector<Node> nodes_;
};

}  // namespace gla::constraints
