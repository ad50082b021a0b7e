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
#include <memory>
#include <string>
#include <string_view>
#include <utility>
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
  // An Earley set stops growing at this many items: the items that carry a terminal on through the
  // byte are always kept, the others (a terminal ending, what it completes and predicts) only up to
  // the limit. A parse that explodes loses alternatives (it may refuse text of the language, never
  // admits text outside it), and a token whose bytes keep a waiting terminal going is taken whatever
  // the limit, which is what lets a mask take such tokens from a cache (TerminalTokens).
  int max_items_per_set = 100000;
  // Stretches of terminals and non-recursive rules fused into single terminals (grammar_fusion.h):
  // the same language, far fewer tokens for the parser to walk. Off only to test that equality.
  bool fuse_regular_stretches = true;
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
  int num_terminals() const { return static_cast<int>(terminals_.size()); }
  // Terminal i's automaton (shared with other grammars through RegexCache).
  const Regex& terminal(int i) const { return *terminals_[i]; }
  // Terminal i's pattern (regex dialect) and its std::hash: what TerminalTokensCache keys on. A
  // fused terminal's (grammar_fusion.h) is its stretch written out, a key that may nest "(?&)".
  const std::vector<std::string>& terminal_patterns() const { return terminal_patterns_; }
  const std::vector<uint64_t>& terminal_hashes() const { return terminal_hashes_; }
  const std::vector<bool>& nullable() const { return nullable_; }
  int root() const { return root_; }
  const GrammarLimits& limits() const { return limits_; }

 private:
  friend class GrammarBuilder;
  friend class GrammarFusion;
  std::vector<Rule> rules_;
  std::vector<std::shared_ptr<const Regex>> terminals_;
  std::vector<std::string> terminal_patterns_;
  std::vector<uint64_t> terminal_hashes_;
  std::vector<bool> nullable_;
  int root_ = 0;
  GrammarLimits limits_;
};

class GrammarMatcher {
 public:
  explicit GrammarMatcher(const Grammar& g);
  // Takes one more byte: false (and nothing changes) when no text with this prefix is in the
  // language (as far as the item limit lets the parse see: GrammarLimits::max_items_per_set).
  bool Advance(uint8_t byte);
  // Steps back over the last n bytes taken.
  void Rollback(int n);
  // Whether the bytes taken so far are a whole sentence of the language.
  bool CanEnd() const;
  int position() const { return top_ - 1; }
  // The tokens whose bytes may come next (the matcher is left as it was). For each terminal the
  // parse waits at, the tokens that stay inside it come from `cache` (TerminalTokens); the parser
  // walks only the tokens that may end a terminal. *visited (optional): trie nodes the parser took.
  TokenMask Allowed(const TokenTrie& trie, TerminalTokensCache& cache, int64_t* visited = nullptr);
  TokenMask Allowed(const TokenTrie& trie, int64_t* visited = nullptr) {
    return Allowed(trie, TerminalTokensCache::Shared(), visited);
  }
  // The same mask by the parser alone over the whole trie: the definition the cached one is
  // tested against.
  TokenMask AllowedByWalk(const TokenTrie& trie, int64_t* visited = nullptr);

 private:
  struct Item {
    int rule, alt, dot, origin;
    int term_state;  // the automaton state inside the terminal at `dot`; -1: none at dot
    bool operator==(const Item& o) const {
      return rule == o.rule && alt == o.alt && dot == o.dot && origin == o.origin && term_state == o.term_state;
    }
  };
  using Set = std::vector<Item>;
  // Closes the set being built (predict, complete), up to the item limit.
  void Close(int pos, Set& set);
  // Membership of the set being built: an open-addressed table of indices into it, reused across
  // bytes (a mask walks thousands of bytes; a hash set per byte was half of its time).
  void BeginDedup(const Set& set);
  // false: already there, or (unless `always`) the set is at the item limit.
  bool Insert(Set& set, const Item& item, bool always = false);
  // Each terminal the top set waits at, with its automaton state, once.
  void WaitingTerminals(std::vector<std::pair<int, int>>* out) const;

  const Grammar& g_;
  // The chart: sets_[0 .. top_) are live; the ones above are kept for their storage (a walk's
  // Rollback and Advance reuse them without allocating).
  std::vector<Set> sets_;
  int top_ = 0;
  std::vector<uint32_t> table_;  // index + 1 into the set being built; 0: empty
  std::vector<uint32_t> stamp_;  // a slot is live only when its stamp is generation_
  uint32_t generation_ = 0;
  // Scratch of Allowed, kept for its storage.
  std::vector<std::pair<int, int>> waiting_;
  std::vector<std::shared_ptr<const TerminalTokens>> terminal_tokens_;
  std::vector<TrieWalkNode> walk_nodes_, merged_;
};

}  // namespace gla::constraints
