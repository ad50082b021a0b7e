// Fuzzes the GBNF grammar parser and the Earley matcher (engine/constraints/grammar.h): a request's
// grammar is untrusted input. The input is a grammar, then a NUL, then text to match. Promise:
// Parse ends with OK, INVALID_ARGUMENT or RESOURCE_EXHAUSTED; matching a parsed grammar byte by
// byte, stepping back and asking for the end runs in bounded time and memory with no UB.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/constraints/grammar.h"
#include "engine/constraints/token_mask.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string grammar = input.substr(0, nul), text = nul == std::string::npos ? "" : input.substr(nul + 1);
  gla::constraints::GrammarLimits limits;
  limits.max_rules = 500;
  limits.max_terminals = 200;
  limits.max_repeat = 16;
  limits.max_items_per_set = 5000;
  auto g = gla::constraints::Grammar::Parse(grammar, limits);
  if (!g.ok()) {
    GLA_FUZZ_CHECK(g.status().code() == absl::StatusCode::kInvalidArgument ||
                       g.status().code() == absl::StatusCode::kResourceExhausted,
                   "parse refused with %s", g.status().ToString().c_str());
    return 0;
  }
  gla::constraints::GrammarMatcher m(*g);
  int taken = 0;
  for (char c : text) {
    if (!m.Advance(static_cast<uint8_t>(c))) break;
    ++taken;
  }
  GLA_FUZZ_CHECK(m.position() == taken, "position %d after %d bytes", m.position(), taken);
  (void)m.CanEnd();
  static const std::vector<std::string> kVocab = {"a", "b", "ab", "ba", "abc", "\"", "\"a", "a\"", "\"\"", "{", "}",
                                                  "{\"", "\":", ",", " ", "  ", "0", "12", "1.5", "-", "x", "xyz", "\\",
                                                  "\\\"", "\xc3\xa9", "\xc3", "\xa9", "/", "[", "]", "true", "null"};
  static const gla::constraints::TokenTrie kTrie(kVocab);
  const gla::constraints::TokenMask mask = m.Allowed(kTrie);
  GLA_FUZZ_CHECK(m.position() == taken, "position %d after a mask", m.position());
  for (size_t t = 0; t < kVocab.size(); ++t) {
    gla::constraints::GrammarMatcher alone = m;
    bool fits = true;
    for (char c : kVocab[t]) fits = fits && alone.Advance(static_cast<uint8_t>(c));
    GLA_FUZZ_CHECK(fits == gla::constraints::Allowed(mask, static_cast<int32_t>(t)), "token %zu: mask %d, alone %d", t,
                   gla::constraints::Allowed(mask, static_cast<int32_t>(t)), fits);
  }
  m.Rollback(taken / 2);
  GLA_FUZZ_CHECK(m.position() == taken - taken / 2, "position %d after stepping back", m.position());
  return 0;
}
