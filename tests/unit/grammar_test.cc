// GBNF grammars (engine/constraints/grammar.h): a JSON grammar against nlohmann::json's parser on
// samples and thousands of random mutations of them, left recursion and ambiguity, stepping back,
// errors by name, limits, and token masks against feeding every token alone.
#include <gtest/gtest.h>

#include <chrono>
#include <random>
#include <string>
#include <vector>

#include "engine/constraints/grammar.h"
#include "engine/constraints/grammar_fusion.h"
#include "nlohmann/json.hpp"

namespace gla::constraints {
namespace {

constexpr char kJson[] = R"GBNF(
# JSON (RFC 8259), whitespace after values only
root   ::= value
value  ::= object | array | string | number | ("true" | "false" | "null") ws
object ::= "{" ws ( member ( "," ws member )* )? "}" ws
member ::= string ":" ws value
array  ::= "[" ws ( value ( "," ws value )* )? "]" ws
string ::= "\"" ( [^"\\\x00-\x1f] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} ) )* "\"" ws
number ::= "-"? ( "0" | [1-9] [0-9]* ) ( "." [0-9]+ )? ( [eE] [-+]? [0-9]+ )? ws
ws     ::= [ \t\n]*
)GBNF";

Grammar MustParse(std::string_view text) {
  auto g = Grammar::Parse(text);
  EXPECT_TRUE(g.ok()) << g.status();
  return g.ok() ? *std::move(g) : *Grammar::Parse("root ::= \"x\"");
}

// Whether the whole text is in the language; bytes fed one at a time.
bool Accepts(const Grammar& g, std::string_view text) {
  GrammarMatcher m(g);
  for (char c : text)
    if (!m.Advance(static_cast<uint8_t>(c))) return false;
  return m.CanEnd();
}

TEST(Grammar, JsonGrammarAgreesWithAJsonParser) {
  const Grammar g = MustParse(kJson);
  const std::vector<std::string> samples = {
      R"({"a": 1, "b": [true, false, null], "c": {"d": "e\n\u00e9"}})",
      R"([1, -0.5, 2e10, -3E-2, 0, "x", [], {}])",
      R"("caf\u00e9 \"quoted\" \\ \/")",
      "\"\xc3\xa9\xe4\xb8\xad\"",
      "{\"k\":[{\"k\":[{\"k\":[1]}]}]}",
      "123",
      "[01]",
      "{\"a\" 1}",
      "[1,]",
      "\"\x01\"",
      "-",
      "1.",
      "tru",
  };
  int agree = 0, valid = 0;
  for (const std::string& s : samples) {
    const bool want = nlohmann::json::accept(s);
    EXPECT_EQ(Accepts(g, s), want) << s;
    valid += want;
  }
  EXPECT_GE(valid, 6);
  // Random edits of the samples: a character replaced, inserted or deleted.
  std::mt19937 rng(3);
  const std::string alphabet = "{}[],:\"0123456789.-+eEtrufalsn x\n";
  for (int i = 0; i < 3000; ++i) {
    std::string s = samples[rng() % 6];
    for (int edits = 1 + static_cast<int>(rng() % 3); edits > 0 && !s.empty(); --edits) {
      const size_t at = rng() % s.size();
      const char c = alphabet[rng() % alphabet.size()];
      switch (rng() % 3) {
        case 0: s[at] = c; break;
        case 1: s.insert(s.begin() + static_cast<std::ptrdiff_t>(at), c); break;
        default: s.erase(at, 1); break;
      }
    }
    if (s.empty() || s[0] == ' ' || s[0] == '\n') continue;  // the grammar takes no leading whitespace
    const bool want = nlohmann::json::accept(s);
    ASSERT_EQ(Accepts(g, s), want) << "\"" << s << "\"";
    ++agree;
  }
  EXPECT_GT(agree, 2500);
}

TEST(Grammar, LeftRecursionAmbiguityRepeatsAndSteppingBack) {
  const Grammar g = MustParse(R"G(
root ::= expr
expr ::= expr "+" expr | expr "*" expr | "(" expr ")" | num
num  ::= [0-9]{1,3}
)G");
  for (const char* s : {"1", "1+2*3", "(1+2)*3", "((7))", "123+456"}) EXPECT_TRUE(Accepts(g, s)) << s;
  for (const char* s : {"", "1+", "(1", "1234", "+1", "1**2"}) EXPECT_FALSE(Accepts(g, s)) << s;
  GrammarMatcher m(g);
  for (char c : std::string("(1+2")) ASSERT_TRUE(m.Advance(static_cast<uint8_t>(c)));
  EXPECT_FALSE(m.CanEnd());
  EXPECT_FALSE(m.Advance('(')) << "'(1+2(' has no completion";
  EXPECT_EQ(m.position(), 4) << "a refused byte changes nothing";
  ASSERT_TRUE(m.Advance(')'));
  EXPECT_TRUE(m.CanEnd());
  m.Rollback(2);  // back to "(1+"
  EXPECT_FALSE(m.CanEnd());
  ASSERT_TRUE(m.Advance('9'));
  ASSERT_TRUE(m.Advance(')'));
  EXPECT_TRUE(m.CanEnd());
  const Grammar counted = MustParse("root ::= \"a\"{2,4} \"b\"? [xy]*\n");
  for (const char* s : {"aa", "aaab", "aaaaxyx", "aabyy"}) EXPECT_TRUE(Accepts(counted, s)) << s;
  for (const char* s : {"a", "aaaaa", "aabb"}) EXPECT_FALSE(Accepts(counted, s)) << s;
  const Grammar empty = MustParse("root ::= \"\" | \"a\"\n");
  EXPECT_TRUE(Accepts(empty, ""));
  EXPECT_TRUE(Accepts(empty, "a"));
  const Grammar continued = MustParse("root ::= \"a\"\n     | \"b\" # a rule goes on after a newline at '|'\n");
  EXPECT_TRUE(Accepts(continued, "b"));
}

// /regex/ terminals: one automaton per expression, the same language as the rules it replaces;
// "\/" is a slash inside.
TEST(Grammar, RegexTerminals) {
  const Grammar g = MustParse(R"G(root ::= "<" /[a-z]+(\/[a-z]+)*/ ">" | /"([^"\\]|\\.)*"/
)G");
  for (const char* ok : {"<a>", "<ab/cd/e>", R"("")", R"("x\"y")"}) EXPECT_TRUE(Accepts(g, ok)) << ok;
  for (const char* bad : {"<>", "<a/>", "</a>", R"("x)", R"("\")"}) EXPECT_FALSE(Accepts(g, bad)) << bad;
}

TEST(Grammar, ErrorsNameWhatIsWrong) {
  const struct {
    const char* text;
    const char* says;
  } cases[] = {
      {"root ::= missing\n", "rule 'missing' is used but not defined"},
      {"start ::= \"a\"\n", "no 'root' rule"},
      {"root ::= \"a\"\nroot ::= \"b\"\n", "defined twice"},
      {"root = \"a\"\n", "'::='"},
      {"root ::= \"a\n", "end of a string literal"},
      {"root ::= [a-\n", "end of a character class"},
      {"root ::= (\"a\"\n", "')'"},
      {"root ::= \"\\q\"\n", "known escape"},
      {"root ::= [z-a]\n", "out of order"},
      {"root ::= \"a\"{3,1}\n", "in order"},
      {"root ::= @\n", "an element"},
      {"root ::= /ab\n", "'/' closing"},
      {"root ::= /a*/\n", "matches the empty text"},
      {"root ::= //\n", "a regular expression"},
  };
  for (const auto& c : cases) {
    auto g = Grammar::Parse(c.text);
    ASSERT_FALSE(g.ok()) << c.text;
    EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument) << c.text << ": " << g.status();
    EXPECT_NE(g.status().message().find(c.says), std::string::npos) << c.text << ": " << g.status();
  }
  EXPECT_EQ(Grammar::Parse("root ::= \"a\"{1000}\n").status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(Grammar::Parse(std::string(300 << 10, ' ')).status().code(), absl::StatusCode::kResourceExhausted);
  std::string deep = "root ::= ";
  for (int i = 0; i < 200; ++i) deep += "(";
  deep += "\"a\"";
  for (int i = 0; i < 200; ++i) deep += ")";
  EXPECT_EQ(Grammar::Parse(deep + "\n").status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(Grammar, MaskEqualsFeedingEveryTokenAlone) {
  const Grammar g = MustParse(kJson);
  std::mt19937 rng(11);
  std::vector<std::string> vocab = {""};
  for (int b = 32; b < 127; ++b) vocab.push_back(std::string(1, static_cast<char>(b)));
  const std::vector<std::string> pieces = {"{\"", "\":", "\": ", ", \"", "true", "false", "null", "[]", "{}", "12",
                                           "0.", "e+", "\"}", "\"]", " ", "\n", "ab", "\\u00", "\\n", "},", "],"};
  vocab.insert(vocab.end(), pieces.begin(), pieces.end());
  while (vocab.size() < 2000) {
    std::string s;
    for (int len = 1 + static_cast<int>(rng() % 5); len > 0; --len) s += "abc{}[]\":, 019.-e"[rng() % 18];
    vocab.push_back(s);
  }
  const TokenTrie trie(vocab);
  for (const std::string prefix : {"", "{", "{\"a", "{\"a\": [1", "{\"a\": [1, tr", "\"x\\"}) {
    GrammarMatcher m(g);
    for (char c : prefix) ASSERT_TRUE(m.Advance(static_cast<uint8_t>(c))) << prefix;
    int64_t visited = 0;
    const auto t0 = std::chrono::steady_clock::now();
    const TokenMask mask = m.Allowed(trie, &visited);
    const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_EQ(m.position(), static_cast<int>(prefix.size())) << "the walk gives every byte back";
    int allowed = 0;
    for (size_t t = 0; t < vocab.size(); ++t) {
      GrammarMatcher alone(g);
      bool ok = !vocab[t].empty();
      for (char c : prefix) ok = ok && alone.Advance(static_cast<uint8_t>(c));
      for (char c : vocab[t]) ok = ok && alone.Advance(static_cast<uint8_t>(c));
      ASSERT_EQ(Allowed(mask, static_cast<int32_t>(t)), ok) << "after \"" << prefix << "\": \"" << vocab[t] << "\"";
      allowed += ok;
    }
    std::printf("[ measure ] JSON grammar after \"%s\": %d of %zu tokens allowed, %lld trie nodes, %.0f us\n",
                prefix.c_str(), allowed, vocab.size(), static_cast<long long>(visited), us);
  }
}


// A random grammar over a few bytes: literals, classes, /regex/ terminals (some that may end and
// go on, like a number), recursion, repeats and the empty string.
std::string RandomGrammar(std::mt19937& rng) {
  static const std::vector<std::string> kTerminals = {
      "\"a\"", "\"ab\"", "\"\\\"\"", "\",\"", "\" \"", "[ab]", "[^a\"]", "/a+/", "/[0-9]+(\\.[0-9]+)?/",
      "/\"[a-z ]*\"/", "/b(ab)*a?/", "\"{\"", "\"}\"", "[0-9]"};
  const int rules = 2 + static_cast<int>(rng() % 4);
  std::string g;
  for (int r = 0; r < rules; ++r) {
    g += (r == 0 ? std::string("root") : "r" + std::to_string(r)) + " ::= ";
    const int alts = 1 + static_cast<int>(rng() % 3);
    for (int a = 0; a < alts; ++a) {
      if (a > 0) g += " | ";
      const int len = static_cast<int>(rng() % 4);
      if (len == 0) g += "\"\"";
      for (int k = 0; k < len; ++k) {
        if (rng() % 3 == 0 && rules > 1) g += "r" + std::to_string(1 + rng() % (rules - 1));
        else g += kTerminals[rng() % kTerminals.size()];
        g += rng() % 5 == 0 ? "* " : rng() % 6 == 0 ? "? " : rng() % 7 == 0 ? "+ " : " ";
      }
    }
    g += "\n";
  }
  return g;
}

std::vector<std::string> RandomVocabulary(std::mt19937& rng, size_t size) {
  std::vector<std::string> vocab = {""};
  for (int b = 0; b < 256; ++b) vocab.push_back(std::string(1, static_cast<char>(b)));
  while (vocab.size() < size) {
    std::string s;
    for (int len = 1 + static_cast<int>(rng() % 6); len > 0; --len) s += "ab\"{}, 01.9z"[rng() % 12];
    vocab.push_back(s);
  }
  return vocab;
}

// Allowed (cached inside tokens + the parser on crossing paths) against AllowedByWalk (the parser
// over the whole trie) and against feeding each token alone, on random grammars at random
// positions, with the cache cold and warm, and with an item limit small enough to be reached.
TEST(Grammar, CachedMaskEqualsTheWalkOnRandomGrammars) {
  std::mt19937 rng(5);
  const std::vector<std::string> vocab = RandomVocabulary(rng, 1500);
  const TokenTrie trie(vocab);
  int compared = 0, limited = 0;
  for (int round = 0; round < 300; ++round) {
    const std::string text = RandomGrammar(rng);
    GrammarLimits limits;
    if (round % 4 == 3) limits.max_items_per_set = 3 + static_cast<int>(rng() % 6), ++limited;
    limits.fuse_regular_stretches = round % 2 == 0;  // the grammar as written, and fused
    auto g = Grammar::Parse(text, limits);
    ASSERT_TRUE(g.ok()) << text << g.status();
    TerminalTokensCache cache;
    GrammarMatcher m(*g);
    for (int step = 0; step < 12; ++step) {
      for (int warm = 0; warm < 2; ++warm) {
        const TokenMask cached = m.Allowed(trie, cache);
        ASSERT_EQ(cached, m.AllowedByWalk(trie)) << text << "at position " << m.position() << (warm ? " (warm)" : "");
        for (size_t t = 0; t < vocab.size(); t += 7) {
          GrammarMatcher alone = m;
          bool ok = !vocab[t].empty();
          for (char c : vocab[t]) ok = ok && alone.Advance(static_cast<uint8_t>(c));
          ASSERT_EQ(Allowed(cached, static_cast<int32_t>(t)), ok) << text << "token \"" << vocab[t] << "\"";
        }
        ++compared;
      }
      // On by a random allowed byte (a random token's first byte would often be refused).
      std::vector<int> bytes;
      for (int b = 0; b < 256; ++b) {
        GrammarMatcher probe = m;
        if (probe.Advance(static_cast<uint8_t>(b))) bytes.push_back(b);
      }
      if (bytes.empty()) break;
      ASSERT_TRUE(m.Advance(static_cast<uint8_t>(bytes[rng() % bytes.size()])));
    }
  }
  EXPECT_GT(compared, 2000);
  EXPECT_GT(limited, 50);
}

// The item limit keeps every item that carries a terminal on, so a token that stays inside a
// waiting terminal is taken whatever the limit (what the cached masks rely on), and an ambiguous
// parse past the limit loses alternatives without admitting text outside the language.
TEST(Grammar, ItemLimitKeepsTheTerminalsThatGoOn) {
  GrammarLimits limits;
  limits.max_items_per_set = 4;
  limits.fuse_regular_stretches = false;  // x x x x x would be one terminal: no ambiguity left to limit
  const Grammar g = *Grammar::Parse("root ::= x x x x x | /a+/\nx ::= \"a\" | \"a\" \"a\" | \"\"\n", limits);
  GrammarMatcher m(g);
  for (int i = 0; i < 40; ++i) ASSERT_TRUE(m.Advance('a')) << "the /a+/ item survives byte " << i;
  EXPECT_TRUE(m.CanEnd());
  EXPECT_FALSE(m.Advance('b'));
  const Grammar full = *Grammar::Parse("root ::= x x x x x | /a+/\nx ::= \"a\" | \"a\" \"a\" | \"\"\n");
  for (const char* s : {"", "ab", "b"}) EXPECT_FALSE(Accepts(g, s)) << s << " is outside the language";
  EXPECT_TRUE(Accepts(full, "aaaa"));
}

// The first Earley set holds every alternative of root: with more than the dedup table's first size
// (32 at half load) the matcher hung before it had read a byte.
TEST(Grammar, ARootOfManyAlternatives) {
  std::string text = "root ::= \"a0\"";
  for (int i = 1; i < 500; ++i) text += " | \"a" + std::to_string(i) + "\" x";
  text += "\nx ::= \"!\" x | \"\"\n";
  GrammarLimits written;
  written.fuse_regular_stretches = false;
  for (const GrammarLimits& limits : {GrammarLimits{}, written}) {
    auto g = Grammar::Parse(text, limits);
    ASSERT_TRUE(g.ok()) << g.status();
    EXPECT_TRUE(Accepts(*g, "a499!!"));
    EXPECT_TRUE(Accepts(*g, "a0"));
    EXPECT_FALSE(Accepts(*g, "a500"));
  }
}

// A grammar of many distinct stretches over one rule would have its fusion write a copy of the
// rule's pattern per stretch: the pattern text one grammar's fusion writes stays within its budget
// (the stretches past it stay as written), and the language is the same.
TEST(Grammar, FusionWritesPatternsInProportionToTheGrammar) {
  const std::string word(300, 'w');
  std::string text = "root ::= ";
  for (int i = 0; i < 3000; ++i) text += (i ? " | \"x" : "\"x") + std::to_string(i) + "\" r";
  text += "\nr ::= \"" + word + "\"\n";
  const auto t0 = std::chrono::steady_clock::now();
  auto g = Grammar::Parse(text);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(30));
  size_t pattern_bytes = 0;
  for (const std::string& p : g->terminal_patterns()) pattern_bytes += p.size();
  EXPECT_LE(pattern_bytes, GrammarFusion::kMaxFusedBytesPerGrammar + (size_t{1} << 20)) << "the fusion's text outgrew its budget";
  EXPECT_GT(pattern_bytes, GrammarFusion::kMaxFusedBytesPerGrammar / 2) << "the budget was not reached: the test tests nothing";
  for (const char* x : {"x0", "x1500", "x2999"}) EXPECT_TRUE(Accepts(*g, x + word)) << x;
  EXPECT_FALSE(Accepts(*g, "x3000" + word));
  EXPECT_FALSE(Accepts(*g, "x7" + word.substr(1)));
}

// Fusing regular stretches into terminals (grammar_fusion.h) changes how the parse divides the
// text, never the language: on random grammars, at every position of random walks, the fused
// grammar's mask (from the cache) equals the written grammar's (the parser over the whole trie),
// the same bytes go on and the same texts end; the JSON grammar's rules become single terminals.
TEST(Grammar, FusedStretchesKeepTheLanguageAndTheMasks) {
  std::mt19937 rng(9);
  const std::vector<std::string> vocab = RandomVocabulary(rng, 1500);
  const TokenTrie trie(vocab);
  GrammarLimits written;
  written.fuse_regular_stretches = false;
  int compared = 0, fewer_terminals = 0;
  for (int round = 0; round < 300; ++round) {
    const std::string text = RandomGrammar(rng);
    auto plain = Grammar::Parse(text, written);
    auto fused = Grammar::Parse(text);
    ASSERT_TRUE(plain.ok() && fused.ok()) << text;
    GrammarMatcher p(*plain), f(*fused);
    TerminalTokensCache cache;
    for (int step = 0; step < 12; ++step) {
      ASSERT_EQ(f.CanEnd(), p.CanEnd()) << text << "at position " << p.position();
      ASSERT_EQ(f.Allowed(trie, cache), p.AllowedByWalk(trie)) << text << "at position " << p.position();
      ++compared;
      std::vector<int> bytes;
      for (int b = 0; b < 256; ++b) {
        GrammarMatcher probe = p, fprobe = f;
        const bool goes_on = probe.Advance(static_cast<uint8_t>(b));
        ASSERT_EQ(fprobe.Advance(static_cast<uint8_t>(b)), goes_on) << text << "byte " << b << " at " << p.position();
        if (goes_on) bytes.push_back(b);
      }
      if (bytes.empty()) break;
      const int b = bytes[rng() % bytes.size()];
      ASSERT_TRUE(p.Advance(static_cast<uint8_t>(b)) && f.Advance(static_cast<uint8_t>(b)));
    }
    // What the fusion did: a grammar whose rules are all regular becomes one terminal for root.
    fewer_terminals += fused->rules()[fused->root()].alternatives.size() == 1 &&
                       fused->rules()[fused->root()].alternatives[0].size() == 1 &&
                       fused->rules()[fused->root()].alternatives[0][0].terminal;
  }
  EXPECT_GT(compared, 1500);
  EXPECT_GT(fewer_terminals, 30) << "random grammars whose root became one terminal";
  // JSON: `member ::= string ":" ws value` becomes one terminal (a string, a colon, spaces) and
  // the recursive `value`.
  const Grammar json = MustParse(kJson);
  int member = -1;
  for (size_t r = 0; r < json.rules().size(); ++r)
    if (json.rules()[r].name == "member") member = static_cast<int>(r);
  ASSERT_GE(member, 0);
  ASSERT_EQ(json.rules()[member].alternatives.size(), 1u);
  const Grammar::Alternative& m = json.rules()[member].alternatives[0];
  ASSERT_EQ(m.size(), 2u);
  EXPECT_TRUE(m[0].terminal);
  EXPECT_FALSE(m[1].terminal);
  EXPECT_TRUE(json.terminal(m[0].index).Matches("\"k\\u00e9\": \n"));
}

}  // namespace
}  // namespace gla::constraints
