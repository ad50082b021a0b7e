// fla's float64 answers for the reference checkpoint (shared/reference/gla-tiny/expected.safetensors):
// what the CPU and CUDA model tests compare against.
#pragma once

#include <cstdint>
#include <vector>

namespace gla::testing {

struct TinyExpected {
  std::vector<std::vector<int32_t>> seq_ids;      // three sequences, T = 2, 37, 130
  std::vector<std::vector<double>> seq_logits;    // [T, vocab] each, from an empty state
  std::vector<int32_t> prompt, greedy;            // a prompt and its 16-token greedy continuation
  std::vector<double> margins;                    // top-2 logit gap at each greedy step
};

// Fails the calling test (and returns what it could read) when the file is missing or malformed.
TinyExpected LoadTinyExpected();

}  // namespace gla::testing
