// The byte-level regex compiler of structured output (engine/constraints/regex.h) against
// std::regex (ECMAScript, whole-string match) on random ASCII strings, UTF-8 classes against
// hand-made cases, refusals by name, bounded sizes; and token masks (token_mask.h) against
// checking every token alone.
#include <gtest/gtest.h>

#include <chrono>
#include <random>
#include <regex>
#include <string>
#include <vector>

#include "engine/constraints/regex.h"
#include "engine/constraints/token_mask.h"

namespace gla::constraints {
namespace {

Regex Must(std::string_view p) {
  auto r = Regex::Compile(p);
  EXPECT_TRUE(r.ok()) << p << ": " << r.status();
  return r.ok() ? *std::move(r) : *Regex::Compile("a");
}

// Random strings over the characters a pattern talks about, plus a few others.
std::string RandomString(std::mt19937& rng, const std::string& alphabet, int max_len) {
  std::uniform_int_distribution<int> len(0, max_len), pick(0, static_cast<int>(alphabet.size()) - 1);
  std::string s;
  for (int i = len(rng); i > 0; --i) s += alphabet[pick(rng)];
  return s;
}

TEST(Regex, AgreesWithStdRegexOnRandomAsciiStrings) {
  const struct {
    const char* pattern;
    const char* alphabet;
    const char* matching;  // a string that matches (so both answers are exercised)
  } cases[] = {
      {"abc", "abcx", "abc"},
      {"a|bc|", "abc", "bc"},
      {"(ab)*c+d?", "abcd", "ababccd"},
      {"[a-c]{2,4}x{3}", "abcdx", "abcxxx"},
      {"[^a-c]{1,}", "abcdz ", "dz "},
      {"\\d{3}-\\d{4}", "0129-a", "012-9999"},
      {"\\w+@\\w+\\.com", "ab1_@.com", "a_1@b.com"},
      {"\\s*\\S+\\s*", " \tab", " ab\t"},
      {"(?:x|yz){0,3}q?", "xyzq", "xyzxq"},
      {"^[A-Z][a-z]*$", "Aazb", "Abz"},
      {"(a|b)*abb", "ab", "babb"},
      {"[\\-\\]x]+", "-]x\\a", "-]x"},
      {"\\.\\*\\+\\?", ".*+?a", ".*+?"},
            {"[0-9a-fA-F]{1,8}", "09afAFgz", "0aF"},
      {"(-?(0|[1-9][0-9]*)(\\.[0-9]+)?([eE][+-]?[0-9]+)?)", "0129.-+eE", "-10.5e+3"},
      {"\"([^\"\\\\]|\\\\.)*\"", "\"\\ab", "\"a\\\"b\""},
      {"x{0,2}y{1,}z{0}", "xyz", "xxyy"},
      {"(a*)*b", "ab", "aab"},
  };
  std::mt19937 rng(5);
  for (const auto& c : cases) {
    auto ours = Regex::Compile(c.pattern);
    ASSERT_TRUE(ours.ok()) << c.pattern << ": " << ours.status();
    const std::regex theirs(c.pattern, std::regex::ECMAScript);
    ASSERT_TRUE(std::regex_match(c.matching, theirs)) << c.pattern << " / " << c.matching;
    EXPECT_TRUE(ours->Matches(c.matching)) << c.pattern << " on \"" << c.matching << "\"";
    for (int i = 0; i < 3000; ++i) {
      const std::string s = RandomString(rng, c.alphabet, 12);
      ASSERT_EQ(ours->Matches(s), std::regex_match(s, theirs)) << c.pattern << " on \"" << s << "\"";
    }
  }
}

// A(?&)B at the top level: the texts both match (a product automaton); inside a group, a class
// or after a backslash it is no operator.
TEST(Regex, TopLevelAndIntersects) {
  auto both = Regex::Compile("[a-z]*(?&).{1,3}");
  ASSERT_TRUE(both.ok()) << both.status();
  for (const char* ok : {"a", "abc"}) EXPECT_TRUE(both->Matches(ok)) << ok;
  for (const char* bad : {"", "abcd", "ab1"}) EXPECT_FALSE(both->Matches(bad)) << bad;
  EXPECT_EQ(both->Next(both->Next(both->Next(both->start(), 'a'), 'b'), 'c') == Regex::kDead, false);
  int s = both->start();
  for (char c : std::string("abc")) s = both->Next(s, static_cast<uint8_t>(c));
  EXPECT_EQ(both->Next(s, 'd'), Regex::kDead) << "a prefix that cannot end well is dead at once";
  auto none = Regex::Compile("a(?&)b");
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(none->start(), Regex::kDead);
  auto in_class = Regex::Compile("[(?&)]");
  ASSERT_TRUE(in_class.ok()) << in_class.status();
  EXPECT_TRUE(in_class->Matches("&"));
  EXPECT_FALSE(Regex::Compile("x((?&)y)").ok()) << "inside a group it is no operator (and no ECMAScript)";
}

TEST(Regex, UnicodeClassesWorkOnCodePoints) {
  Regex any = Must(".");
  for (const char* s : {"a", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80"}) EXPECT_TRUE(any.Matches(s)) << s;
  EXPECT_FALSE(any.Matches("\n"));
  EXPECT_FALSE(any.Matches("\xc3")) << "half a character";
  EXPECT_FALSE(any.Matches("ab"));
  Regex range = Must("[\\u00e0-\\u00ff\\u{1F600}-\\u{1F64F}]+");
  EXPECT_TRUE(range.Matches("\xc3\xa9\xf0\x9f\x98\x80"));   // é 😀
  EXPECT_FALSE(range.Matches("\xc3\x9f"));                   // ß (U+00DF): below the range
  Regex pair = Must("\\uD83D\\uDE00");                       // a surrogate pair is one code point
  EXPECT_TRUE(pair.Matches("\xf0\x9f\x98\x80"));
  Regex negated = Must("[^a]");
  EXPECT_TRUE(negated.Matches("\xe4\xb8\xad"));              // 中
  EXPECT_FALSE(negated.Matches("a"));
  EXPECT_FALSE(negated.Matches("\xed\xa0\x80")) << "an encoded surrogate is not UTF-8";
  Regex literal = Must("caf\xc3\xa9");
  EXPECT_TRUE(literal.Matches("caf\xc3\xa9"));
  EXPECT_FALSE(literal.Matches("cafe"));
}

TEST(Regex, DeadStatesArePrunedSoAPrefixKnowsItCanStillMatch) {
  Regex r = Must("ab|cd");
  int s = r.Next(r.start(), 'a');
  EXPECT_NE(s, Regex::kDead);
  EXPECT_EQ(r.Next(s, 'd'), Regex::kDead) << "'ad' can never complete";
  EXPECT_FALSE(r.Accepting(s));
  EXPECT_TRUE(r.Accepting(r.Next(s, 'b')));
  EXPECT_EQ(Must("[^\\s\\S]").start(), Regex::kDead) << "a pattern that matches nothing";
}

TEST(Regex, RefusesWhatAnAutomatonCannotEnforceByName) {
  const struct {
    const char* pattern;
    const char* says;
  } cases[] = {
      {"(a)\\1", "backreference"},        {"a(?=b)", "lookaround"},
      {"a(?!b)", "lookaround"},           {"(?<=a)b", "lookaround"},
      {"\\bword\\b", "word boundary"},    {"(?i)abc", "inline flag"},
      {"a^b", "anchor inside"},           {"\\p{L}", "Unicode property"},
      {"(ab", "without its ')'"},         {"ab)", "unbalanced"},
      {"*a", "nothing to repeat"},        {"a**", "nothing to repeat"},
      {"[abc", "unterminated class"},     {"[z-a]", "out of order"},
      {"a{3,2}", "out of order"},         {"\\q", "unknown escape"},
      {"\\", "ending in"},                {"\xff", "invalid UTF-8"},
      {"\\uD800", "lone surrogate"},      {"\\u{110000}", "out of range"},
  };
  for (const auto& c : cases) {
    auto r = Regex::Compile(c.pattern);
    ASSERT_FALSE(r.ok()) << c.pattern;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << c.pattern << ": " << r.status();
    EXPECT_NE(r.status().message().find(c.says), std::string::npos) << c.pattern << ": " << r.status();
  }
}

TEST(Regex, HostilePatternsHitALimitNotTheMemory) {
  auto big_repeat = Regex::Compile("a{100000}");
  EXPECT_EQ(big_repeat.status().code(), absl::StatusCode::kResourceExhausted) << big_repeat.status();
  auto nested = Regex::Compile("((((a{1000}){1000}){1000}){1000})");
  EXPECT_EQ(nested.status().code(), absl::StatusCode::kResourceExhausted) << nested.status();
  // The classic exponential DFA: (a|b)*a(a|b){n} needs 2^n states.
  auto blowup = Regex::Compile("(a|b)*a(a|b){20}");
  EXPECT_EQ(blowup.status().code(), absl::StatusCode::kResourceExhausted) << blowup.status();
  EXPECT_EQ(Regex::Compile(std::string(100000, 'a')).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(Regex::Compile(std::string(300, '(') + std::string(300, ')')).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(Regex::Compile("(a|b)*a(a|b){8}").ok()) << "2^9 states fit";
}

// A vocabulary like a SentencePiece one's: single bytes, ASCII words with and without a leading
// space, digits, punctuation runs and some multi-byte pieces.
std::vector<std::string> Vocabulary(int n) {
  std::mt19937 rng(9);
  std::vector<std::string> v = {""};  // a control token: never allowed
  for (int b = 0; b < 256; ++b) v.push_back(std::string(1, static_cast<char>(b)));
  const std::string letters = "abcdefghijklmnopqrstuvwxyz", digits = "0123456789", punct = "{}[]\":,.-+ eE";
  while (static_cast<int>(v.size()) < n) {
    const int kind = static_cast<int>(rng() % 4);
    std::string s = kind == 0 ? " " : "";
    const std::string& from = kind == 2 ? digits : kind == 3 ? punct : letters;
    for (int len = 1 + static_cast<int>(rng() % 7); len > 0; --len) s += from[rng() % from.size()];
    if (rng() % 20 == 0) s += "\xc3\xa9";
    v.push_back(s);
  }
  return v;
}

TEST(TokenTrie, MaskEqualsCheckingEveryTokenAlone) {
  const std::vector<std::string> vocab = Vocabulary(32000);
  const TokenTrie trie(vocab);
  for (const char* pattern : {"-?(0|[1-9][0-9]*)(\\.[0-9]+)?([eE][+-]?[0-9]+)?", "\\{\"name\": \"[a-z ]*\"\\}",
                              "[a-z]+( [a-z]+)*", "(true|false|null)"}) {
    const Regex re = Must(pattern);
    // From the start and from a few states along a matching string.
    std::vector<int> states = {re.start()};
    for (int s = re.start(), i = 0; i < 3 && s != Regex::kDead; ++i) {
      int next = Regex::kDead;
      for (int b = 0; b < 256 && next == Regex::kDead; ++b) next = re.Next(s, static_cast<uint8_t>(b));
      if (next != Regex::kDead) states.push_back(next);
      s = next;
    }
    for (int state : states) {
      int64_t visited = 0;
      const auto t0 = std::chrono::steady_clock::now();
      const TokenMask mask = trie.Allowed(re, state, &visited);
      const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
      int allowed = 0;
      for (size_t t = 0; t < vocab.size(); ++t) {
        int s = vocab[t].empty() ? Regex::kDead : state;
        for (char ch : vocab[t]) {
          if (s == Regex::kDead) break;
          s = re.Next(s, static_cast<uint8_t>(ch));
        }
        const bool want = s != Regex::kDead;
        ASSERT_EQ(Allowed(mask, static_cast<int32_t>(t)), want) << pattern << " token " << t << " \"" << vocab[t] << "\"";
        allowed += want;
      }
      std::printf("[ measure ] mask of %zu tokens for %s: %d allowed, %lld trie nodes, %.1f us\n", vocab.size(),
                  pattern, allowed, static_cast<long long>(visited), us);
    }
  }
}

TEST(TokenTrie, RegexMasksAreMadeOncePerStateAndEqualTheWalk) {
  const std::vector<std::string> vocab = Vocabulary(4000);
  const TokenTrie trie(vocab);
  const Regex re = Must("[a-z]+( [a-z]+)*");
  RegexMasks masks(re, trie);
  for (int s = 0; s < re.num_states(); ++s) {
    const TokenMask& a = masks.For(s);
    EXPECT_EQ(a, trie.Allowed(re, s)) << "state " << s;
    EXPECT_EQ(&masks.For(s), &a) << "made once";
  }
}

// TerminalTokens against each token alone: inside = the automaton lives through every byte; every
// token that passes an accepting state and then dies is reached by a walk of the crossing nodes
// (they are what the parser walks); the walk over them gives back every byte it takes.
TEST(TokenTrie, TerminalTokensSplitTheVocabularyAsTheAutomatonSays) {
  const std::vector<std::string> vocab = Vocabulary(8000);
  const TokenTrie trie(vocab);
  for (const char* pattern : {"-?(0|[1-9][0-9]*)(\\.[0-9]+)?", "\"[a-z ]*\"", "[a-z]+( [a-z]+)*", "true"}) {
    const Regex re = Must(pattern);
    for (int state = 0; state < re.num_states(); ++state) {
      const TerminalTokens tt = trie.Terminal(re, state);
      TokenMask inside((vocab.size() + 63) / 64, 0);
      tt.AddInside(inside);
      int depth = 0, crossing_tokens = 0;
      int64_t walked = 0;
      TokenMask reached((vocab.size() + 63) / 64, 0);
      trie.WalkNodes(tt.crossing, [&](uint8_t) { return ++depth, true; }, [&](int n) { depth -= n; }, reached, &walked);
      EXPECT_EQ(depth, 0) << "every byte given back";
      for (size_t t = 0; t < vocab.size(); ++t) {
        int s = vocab[t].empty() ? Regex::kDead : state;
        bool could_end = false, died = vocab[t].empty();
        for (char ch : vocab[t]) {
          s = re.Next(s, static_cast<uint8_t>(ch));
          if (s == Regex::kDead) {
            died = true;
            break;
          }
          could_end = could_end || re.Accepting(s);
        }
        ASSERT_EQ(Allowed(inside, static_cast<int32_t>(t)), !died) << pattern << " state " << state << " \"" << vocab[t] << "\"";
        if (died && could_end) {
          ASSERT_TRUE(Allowed(reached, static_cast<int32_t>(t))) << pattern << " state " << state << " \"" << vocab[t] << "\"";
          ++crossing_tokens;
        }
      }
      if (state == re.start())
        std::printf("[ measure ] %s from the start: %zu crossing nodes, %d tokens that end it and go on\n", pattern,
                    tt.crossing.size(), crossing_tokens);
    }
  }
}

}  // namespace
}  // namespace gla::constraints
