// Automata composed from automata (engine/constraints/regex_composition.h) against the same
// expression compiled from its text, by an exact language comparison; the process's pattern cache
// (regex_cache.h); and a trie walk's whole-subtree steps (Regex::SelfLoops) against a plain walk.
#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "engine/constraints/regex.h"
#include "engine/constraints/regex_cache.h"
#include "engine/constraints/regex_composition.h"
#include "engine/constraints/token_mask.h"

namespace gla::constraints {
namespace {

// Whether two automata take the same texts: their product explored over every byte, each pair of
// states agreeing on acceptance and on whether a byte leads anywhere (both are pruned: a live
// state can still reach acceptance, so "alive" is "some text goes on from here").
bool SameLanguage(const Regex& a, const Regex& b, std::string* witness) {
  if ((a.start() == Regex::kDead) != (b.start() == Regex::kDead)) return false;
  if (a.start() == Regex::kDead) return true;
  std::set<std::pair<int, int>> seen = {{a.start(), b.start()}};
  std::vector<std::pair<std::pair<int, int>, std::string>> todo = {{{a.start(), b.start()}, ""}};
  while (!todo.empty()) {
    auto [states, text] = todo.back();
    todo.pop_back();
    auto [sa, sb] = states;
    if (a.Accepting(sa) != b.Accepting(sb)) return *witness = text, false;
    for (int byte = 0; byte < 256; ++byte) {
      const int na = a.Next(sa, static_cast<uint8_t>(byte)), nb = b.Next(sb, static_cast<uint8_t>(byte));
      if ((na == Regex::kDead) != (nb == Regex::kDead)) return *witness = text + static_cast<char>(byte), false;
      if (na == Regex::kDead || !seen.insert({na, nb}).second) continue;
      todo.push_back({{na, nb}, text + static_cast<char>(byte)});
    }
  }
  return true;
}

// A random expression over a few atoms (none matches the empty text), built both ways: as nodes
// of a composition and as pattern text.
struct Built {
  int node;
  std::string text;
};

class RandomExpression {
 public:
  RandomExpression(std::mt19937& rng, std::vector<Regex>& atoms, const std::vector<std::string>& patterns)
      : rng_(rng), atoms_(atoms), patterns_(patterns) {}

  Built Make(RegexComposition& c, int depth) {
    const int kind = depth >= 3 ? 0 : static_cast<int>(rng_() % 4);
    if (kind == 0) {
      const size_t a = rng_() % atoms_.size();
      return {c.Atom(&atoms_[a]), "(?:" + patterns_[a] + ")"};
    }
    const int n = kind == 3 ? 1 : static_cast<int>(rng_() % 4);  // a sequence or alternation of 0-3
    std::vector<int> nodes;
    std::vector<std::string> texts;
    for (int i = 0; i < n; ++i) {
      Built b = Make(c, depth + 1);
      nodes.push_back(b.node);
      texts.push_back(b.text);
    }
    if (kind == 1) {  // a sequence ("" when empty)
      std::string text;
      for (const std::string& t : texts) text += t;
      return {c.Sequence(nodes), text.empty() ? "" : "(?:" + text + ")"};
    }
    if (kind == 2) {  // alternatives, maybe with the empty text (an empty child is one too)
      const bool or_empty = rng_() % 2 == 0 || texts.empty();
      std::string text;
      bool empty_child = false;
      for (const std::string& t : texts) {
        if (t.empty()) empty_child = true;
        else text += (text.empty() ? "" : "|") + t;
      }
      const int node = c.Alternatives(nodes, or_empty);
      return {node, text.empty() ? "" : "(?:" + text + ")" + (or_empty || empty_child ? "?" : "")};
    }
    return {c.Star(nodes[0]), texts[0].empty() ? "" : "(?:" + texts[0] + ")*"};
  }

 private:
  std::mt19937& rng_;
  std::vector<Regex>& atoms_;
  const std::vector<std::string>& patterns_;
};

TEST(RegexComposition, EqualsTheSameExpressionCompiledFromItsText) {
  const std::vector<std::string> patterns = {
      "a", "ab", "[ab]", "b+", "[0-9]+(\\.[0-9]+)?", "\"[a-z ]*\"", "b(ab)*a?", "\\u{e9}", "[^a]", " ?,"};
  std::vector<Regex> atoms;
  for (const std::string& p : patterns) atoms.push_back(*Regex::Compile(p));
  std::mt19937 rng(7);
  int compared = 0, nullable = 0;
  for (int round = 0; round < 600; ++round) {
    RegexComposition c;
    RandomExpression gen(rng, atoms, patterns);
    const Built b = gen.Make(c, 0);
    if (b.text.empty()) continue;  // only the empty text: no pattern to compare with
    auto composed = c.Build(b.node);
    ASSERT_TRUE(composed.ok()) << b.text << composed.status();
    auto compiled = Regex::Compile(b.text);
    ASSERT_TRUE(compiled.ok()) << b.text << compiled.status();
    std::string witness;
    ASSERT_TRUE(SameLanguage(*composed, *compiled, &witness)) << b.text << " differs at \"" << witness << "\"";
    nullable += composed->Accepting(composed->start());
    ++compared;
  }
  EXPECT_GT(compared, 400);
  EXPECT_GT(nullable, 50);  // the empty text's paths were exercised too
}

TEST(RegexComposition, RefusesAnEmptyAtomAndStopsAtTheStateLimit) {
  const Regex empty_too = *Regex::Compile("a*");
  RegexComposition c;
  EXPECT_EQ(c.Build(c.Atom(&empty_too)).status().code(), absl::StatusCode::kInvalidArgument);
  // A node under two parents is refused, not composed into a larger language.
  const Regex x = *Regex::Compile("x");
  RegexComposition shared;
  const int atom = shared.Atom(&x);
  EXPECT_EQ(shared.Build(shared.Sequence({atom, atom})).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(shared.Build(7).status().code(), absl::StatusCode::kInvalidArgument);
  // (a|b)* a (a|b){12} needs 2^13 states as a DFA: the composition refuses it like Compile does.
  const Regex ab = *Regex::Compile("[ab]"), a = *Regex::Compile("a");
  RegexComposition big;
  std::vector<int> parts = {big.Star(big.Atom(&ab)), big.Atom(&a)};
  for (int i = 0; i < 12; ++i) parts.push_back(big.Atom(&ab));
  RegexLimits limits;
  limits.max_dfa_states = 1000;
  EXPECT_EQ(big.Build(big.Sequence(parts), limits).status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(RegexCache, CompilesAPatternOnceAndKeepsNoErrors) {
  RegexCache cache(1 << 20);
  auto first = cache.Compile("[a-z]+@[a-z]+");
  auto second = cache.Compile("[a-z]+@[a-z]+");
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_EQ(first->get(), second->get());
  EXPECT_FALSE(cache.Compile("(a").ok());
  EXPECT_FALSE(cache.Compile("(a").ok());
  EXPECT_EQ(cache.stats().entries, 1u);
  EXPECT_EQ(cache.Find("(a"), nullptr);
  // A fused stretch's key: Put keeps the first automaton under a key.
  auto other = std::make_shared<const Regex>(*Regex::Compile("x"));
  EXPECT_EQ(cache.Put("[a-z]+@[a-z]+", other).get(), first->get());
  // Past its budget the least recently used go (the newest stays).
  RegexCache small(1);
  ASSERT_TRUE(small.Compile("a").ok());
  ASSERT_TRUE(small.Compile("b").ok());
  EXPECT_EQ(small.stats().entries, 1u);
  EXPECT_NE(small.Find("b"), nullptr);
  EXPECT_EQ(small.Find("a"), nullptr);
}

// A walk takes a subtree whole where the automaton loops on every byte below; what it allows and
// what it leaves to the parser must be what a step per node finds. Checked against testing each
// token alone, for patterns whose states loop (strings, counters, numbers) over a vocabulary of
// long tokens, so that most subtrees are deep.
TEST(TokenTrie, WholeSubtreeStepsEqualATokenAtATime) {
  std::mt19937 rng(11);
  std::vector<std::string> vocab;
  for (int b = 0; b < 256; ++b) vocab.push_back(std::string(1, static_cast<char>(b)));
  while (vocab.size() < 6000) {
    std::string s;
    for (int len = 1 + static_cast<int>(rng() % 12); len > 0; --len) s += "abc \"\\,:{}01\xc3\xa9"[rng() % 15];
    vocab.push_back(s);
  }
  const TokenTrie trie(vocab);
  for (const char* pattern : {"\"([^\"\\\\\\x00-\\x1f]|\\\\[\"\\\\/bfnrt])*\"", "[a-c ]{0,7}", "[^,]*,",
                              "(ab|c)*\"", "[0-9]+", "([a-c]+ )*:"}) {
    const Regex re = *Regex::Compile(pattern);
    for (int state = 0; state < re.num_states(); ++state) {
      const TokenMask mask = trie.Allowed(re, state);
      const TerminalTokens terminal = trie.Terminal(re, state);
      TokenMask inside(mask.size(), 0);
      terminal.AddInside(inside);
      for (size_t t = 0; t < vocab.size(); ++t) {
        int s = state;
        for (char ch : vocab[t]) s = s == Regex::kDead ? s : re.Next(s, static_cast<uint8_t>(ch));
        ASSERT_EQ(Allowed(mask, static_cast<int32_t>(t)), s != Regex::kDead) << pattern << " state " << state << " \"" << vocab[t] << "\"";
        ASSERT_EQ(Allowed(inside, static_cast<int32_t>(t)), s != Regex::kDead) << pattern << " state " << state;
      }
    }
  }
}

// A fused terminal's pattern runs to kilobytes and the cache holds an entry per automaton state:
// the text is kept (and counted against the budget) once, however many states use it, and goes
// with the last of them.
TEST(TerminalTokensCache, KeepsAPatternOnceForAllItsStates) {
  const TokenTrie trie({"a", "aa", "b", "ab"});
  const std::string pattern = std::string(3000, 'a') + "b";
  const Regex re = *Regex::Compile(pattern);
  const uint64_t hash = std::hash<std::string>()(pattern);
  TerminalTokensCache cache(size_t{1} << 30);
  for (int state = 0; state < 3; ++state) ASSERT_NE(cache.Get(trie, pattern, hash, re, state), nullptr);
  EXPECT_EQ(cache.stats().entries, 3u);
  EXPECT_GE(cache.stats().bytes, pattern.size());
  EXPECT_LT(cache.stats().bytes, 2 * pattern.size());
  EXPECT_EQ(cache.stats().misses, 3);
  ASSERT_NE(cache.Get(trie, pattern, hash, re, 1), nullptr);
  EXPECT_EQ(cache.stats().hits, 1);
  // Past a budget smaller than one entry, only the newest stays, its pattern counted once.
  TerminalTokensCache tiny(1);
  for (int state = 0; state < 3; ++state) ASSERT_NE(tiny.Get(trie, pattern, hash, re, state), nullptr);
  EXPECT_EQ(tiny.stats().entries, 1u);
  EXPECT_LT(tiny.stats().bytes, 2 * pattern.size());
  ASSERT_NE(tiny.Get(trie, pattern, hash, re, 2), nullptr);
  EXPECT_EQ(tiny.stats().hits, 1);
}

}  // namespace
}  // namespace gla::constraints
