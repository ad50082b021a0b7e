// Regular stretches of a grammar fused into single terminals (issue 21's mask time).
//
// A mask is the union of what each terminal the parse waits at allows: the tokens that stay inside
// a terminal come from a cache shared by every grammar (TerminalTokensCache), and only the tokens
// that cross from one terminal into the next are walked by the Earley parser, a byte at a time.
// A grammar written with small terminals (a JSON Schema's `"\"name\"" ws ":" ws`, a date as
// `[0-9]{4} "-" [0-9]{2} ...`, `( "true" | "false" )`) makes a real vocabulary's JSON-shaped tokens
// (`":"`, `", "`, `{"`) cross terminals at every byte. Every stretch of an alternative made only of
// terminals and non-recursive rules is one regular language: fused into one /regex/ terminal, the
// same tokens stay inside it and come from the cache. The language is unchanged; only how the
// parser divides the text into terminals is.
//
// The fused automaton is composed from the terminals' own (regex_composition.h); its pattern text
// (the stretch written out in the regex dialect) is only the key the terminal caches share it by.
// A stretch stays as it was where even its halves' automata pass kMaxFusedDfaStates, its key
// kMaxFusedPatternBytes, or when it matches the empty text (a terminal never does).
#pragma once

#include <map>
#include <string>

namespace gla::constraints {

class Grammar;

class GrammarFusion {
 public:
  // A stretch is fused in chunks of at most kMaxFusedWeight (nodes of the composition plus its
  // terminals' automaton states); a chunk whose automaton still passes kMaxFusedDfaStates is split
  // in two. Larger automata cost more to build, and a mask walks the vocabulary once per state
  // it meets.
  static constexpr int kMaxFusedWeight = 1500;
  static constexpr int kMaxFusedDfaStates = 4000;
  static constexpr size_t kMaxFusedPatternBytes = 64 << 10;
  // All the pattern text one grammar's fusion may write (rules' and terminals' keys): a grammar of
  // many distinct stretches over one large rule would otherwise hold a copy of it per stretch.
  static constexpr size_t kMaxFusedBytesPerGrammar = size_t{4} << 20;
  // Rewrites g's alternatives in place. terminal_index: g's terminals by pattern (new ones are
  // added to both).
  static void Fuse(Grammar& g, std::map<std::string, int>& terminal_index);
};

}  // namespace gla::constraints
