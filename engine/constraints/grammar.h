// Context-free grammars for structured output (issue 21), in the GBNF dialect llama.cpp's users
// know:
//
//   root   ::= object                 # the start rule is `root`; '#' starts a comment
//   object ::= "{" ws ( pair ( "," ws pair )* )? "}"
//   pair   ::= string ":" ws value
//   ws     ::= [ \t\n]*
//
// Elements: string literals ("..." with \n \r \t \" \\ \xHH \uHHHH escapes), character classes
// ([...], [^...], the regex dialect's classes), /regex/ (a whole regular expression of regex.h's
// dialect as one terminal, "\/" for a slash; our extension, not llama.cpp's), rule names, groups
// ( ... ), alternation |, and the postfix repeats * + ? {m} {m,} {m,n}. Literals, classes and
// /regex/ are terminals compiled to byte automata (regex.h); the structure is recognised by an Earley parser over bytes, so any
// context-free grammar works (left recursion and ambiguity included).
//
// GrammarMatcher advances byte by byte and can step back (its chart is a stack of Earley sets),
// which is how a token mask walks the vocabulary trie: push a byte going down, pop it coming up.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/constraints/regex.h"
#include "engine/constraints/token_mask.h"

namespace gla::constraints {

struct GrammarLimits {
  size_t max_grammar_bytes = 256 << 10;
  int max_rules = 10000;      // after repeats and groups become rules of their own
  int max_terminals = 10000;
  int max_repeat = 100;       // {m,n} bounds
  int max_items_per_set = 100000;  // an Earley set larger than this: the matcher refuses the byte
};

class Grammar {
 public:
  // INVALID_ARGUMENT naming the rule or the offset for a syntax error, an undefined rule or a
  // missing root; RESOURCE_EXHAUSTED past a limit.
  static absl::StatusOr<Grammar> Parse(std::string_view text, const GrammarLimits& limits = {});

  struct Symbol {
    bool terminal = false;
    int index = 0;  // a terminal's or a rule's
  };
  using Alternative = std::vector<Symbol>;
  struct Rule {
    std::string name;
    std::vector<Alternative> alternatives;
  };
  const std::vector<Rule>& rules() const { return rules_; }
  const std::vector<Regex>& terminals() const { return terminals_; }
  const std::vector<bool>& nullable() const { return nullable_; }
  int root() const { return root_; }
  const GrammarLimits& limits() const { return limits_; }

 private:
  friend class GrammarBuilder;
  std::vector<Rule> rules_;
  std::vector<Regex> terminals_;
  std::vector<bool> nullable_;
  int root_ = 0;
  GrammarLimits limits_;
};

class GrammarMatcher {
 public:
  explicit GrammarMatcher(const Grammar& g);
  // Takes one more byte: false (and nothing changes) when no text with this prefix is in the
  // language, or when the parse grew past the grammar's item limit.
  bool Advance(uint8_t byte);
  // Steps back over the last n bytes taken.
  void Rollback(int n);
  // Whether the bytes taken so far are a whole sentence of the language.
  bool CanEnd() const;
  int position() const { return top_ - 1; }
  // The tokens whose bytes may come next (the matcher is left as it was).
  TokenMask Allowed(const TokenTrie& trie, int64_t* visited = nullptr);

 private:
  struct Item {
    int rule, alt, dot, origin;
    int term_state;  // the automaton state inside the terminal at `dot`; -1: none at dot
    bool operator==(const Item& o) const {
      return rule == o.rule && alt == o.alt && dot == o.dot && origin == o.origin && term_state == o.term_state;
    }
  };
  using Set = std::vector<Item>;
  // Adds an item to the set being built and closes it (predict, complete); false past the limit.
  bool Close(int pos, Set& set);
  // Membership of the set being built: an open-addressed table of indices into it, reused across
  // bytes (a mask walks thousands of bytes; a hash set per byte was half of its time).
  void BeginDedup(const Set& set);
  bool Insert(Set& set, const Item& item);  // false: already there

  const Grammar& g_;
  // The chart: sets_[0 .. top_) are live; the ones above are kept for their storage (a walk's
  // Rollback and Advance reuse them without allocating).
  std::vector<Set> sets_;
  int top_ = 0;
  std::vector<uint32_t> table_;  // index + 1 into the set being built; 0: empty
  std::vector<uint32_t> stamp_;  // a slot is live only when its stamp is generation_
  uint32_t generation_ = 0;
};

}  // namespace gla::constraints
