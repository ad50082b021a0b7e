// Fuzzes the GBNF grammar parser and the Earley matcher (engine/constraints/grammar.h): a request's
// grammar is untrusted input. The input is a grammar, then a NUL, then text to match. Promise:
// Parse ends with OK, INVALID_ARGUMENT or RESOURCE_EXHAUSTED; matching a parsed grammar byte by
// byte, stepping back and asking for the end runs in bounded time and memory with no UB.
#include <cstddef>
#include <cstdint>
#include <string>

#include "engine/constraints/grammar.h"
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
  m.Rollback(taken / 2);
  GLA_FUZZ_CHECK(m.position() == taken - taken / 2, "position %d after stepping back", m.position());
  return 0;
}
