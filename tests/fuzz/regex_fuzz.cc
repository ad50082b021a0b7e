// Fuzzes the structured-output regex compiler (engine/constraints/regex.h) with arbitrary pattern
// bytes: a request's pattern is untrusted input. Promise: Compile ends with OK, INVALID_ARGUMENT
// or RESOURCE_EXHAUSTED in bounded time and memory (small limits here keep each input cheap);
// a compiled automaton is well formed (every transition in range, the start live or dead) and
// matching the pattern's own bytes runs without UB.
#include <cstddef>
#include <cstdint>
#include <string>

#include "engine/constraints/regex.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string pattern(reinterpret_cast<const char*>(data), size);
  gla::constraints::RegexLimits limits;
  limits.max_repeat = 64;
  limits.max_nfa_states = 20000;
  limits.max_dfa_states = 2000;
  auto re = gla::constraints::Regex::Compile(pattern, limits);
  if (!re.ok()) {
    GLA_FUZZ_CHECK(re.status().code() == absl::StatusCode::kInvalidArgument ||
                       re.status().code() == absl::StatusCode::kResourceExhausted,
                   "compile refused with %s", re.status().ToString().c_str());
    return 0;
  }
  const int n = re->num_states();
  GLA_FUZZ_CHECK(n <= limits.max_dfa_states, "%d states over the limit", n);
  GLA_FUZZ_CHECK(re->start() == gla::constraints::Regex::kDead || (re->start() >= 0 && re->start() < n),
                 "start %d out of range", re->start());
  for (int s = 0; s < n; ++s)
    for (int b = 0; b < 256; ++b) {
      const int t = re->Next(s, static_cast<uint8_t>(b));
      GLA_FUZZ_CHECK(t == gla::constraints::Regex::kDead || (t >= 0 && t < n), "transition %d out of range", t);
    }
  (void)re->Matches(pattern);
  return 0;
}
