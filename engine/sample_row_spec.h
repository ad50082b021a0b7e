// The GPU sampler's inputs for one request (kernels/sampling.h), from the CPU sampler's arguments
// (SamplingParams, TokenHistory, the generated-token index): used by the CUDA backend
// (engine/cuda_sampler.cc), the sampling kernel's test and its benchmark, so all of them feed the
// kernel the same way.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <unordered_map>
#include <vector>

#include "engine/sampler.h"
#include "kernels/sampling.h"

namespace gla {

// Per distinct id a sequence has seen (when a penalty is on) or that its logit_bias names: the id,
// its count in prompt + output, its count in output, its bias (0: none).
struct PenaltyLists {
  std::vector<int32_t> ids, all_counts, output_counts;
  std::vector<float> bias;
};

// The row spec for one request; appends its entries (only when a penalty or a bias is on: the
// kernel skips them otherwise) to *lists. Each id once, as the kernel requires.
// forced >= 0: a scored row (prompt scoring), not a sampled one. mask_row >= 0: the row's token
// mask is that row of the kernel's masks (CopyMaskRow put it there); -1: none.
inline cuda::SampleRowSpec MakeSampleRowSpec(const SamplingParams& p, const TokenHistory* history, uint64_t step,
                                             int logits_row, int max_top, PenaltyLists* lists, int32_t forced = -1,
                                             int mask_row = -1) {
  cuda::SampleRowSpec s;
  s.forced_token = forced;
  s.mask_row = mask_row;
  s.logits_row = logits_row;
  s.temperature = p.temperature;
  s.top_k = p.top_k;
  s.top_p = p.top_p;
  s.min_p = p.min_p;
  s.repetition_penalty = p.repetition_penalty;
  s.presence_penalty = p.presence_penalty;
  s.frequency_penalty = p.frequency_penalty;
  s.seed = p.seed;
  s.step = step;
  s.logprobs = std::min(p.logprobs, max_top);
  s.penalty_begin = static_cast<int>(lists->ids.size());
  const bool penalised =
      p.repetition_penalty != 1.0f || p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f;
  std::unordered_map<int32_t, size_t> at;  // id -> its entry in this row (for the biases)
  if (penalised && history != nullptr) {
    for (const auto& [id, n] : history->all_counts()) {
      const auto o = history->output_counts().find(id);
      if (!p.logit_bias.empty()) at[id] = lists->ids.size();
      lists->ids.push_back(id);
      lists->all_counts.push_back(n);
      lists->output_counts.push_back(o == history->output_counts().end() ? 0 : o->second);
      lists->bias.push_back(0.0f);
    }
  }
  for (const auto& [id, b] : p.logit_bias) {
    if (auto e = at.find(id); e != at.end()) {
      lists->bias[e->second] += b;
      continue;
    }
    at[id] = lists->ids.size();
    lists->ids.push_back(id);
    lists->all_counts.push_back(0);
    lists->output_counts.push_back(0);
    lists->bias.push_back(b);
  }
  s.biased = !p.logit_bias.empty();
  s.penalty_end = static_cast<int>(lists->ids.size());
  return s;
}

// Words of a token mask over `vocab_limit` ids: the kernel's SampleArgs::mask_words.
inline int MaskWords(int vocab_limit) { return (vocab_limit + 63) / 64; }

// Copies a StepItem::allowed mask (bit t of word t / 64; at least MaskWords(vocab_limit) words)
// to `dst`, a row of MaskWords(vocab_limit) words of the kernel's masks, bits at or beyond
// vocab_limit cleared. Returns the ids it allows below vocab_limit: the top-n a row can have
// (0: the kernel, as the CPU, then takes every id).
inline int CopyMaskRow(const uint64_t* allowed, int vocab_limit, uint64_t* dst) {
  const int words = MaskWords(vocab_limit);
  std::memcpy(dst, allowed, static_cast<size_t>(words) * sizeof(uint64_t));
  if (vocab_limit % 64 != 0) dst[words - 1] &= (uint64_t{1} << (vocab_limit % 64)) - 1;
  int n = 0;
  for (int w = 0; w < words; ++w) n += std::popcount(dst[w]);
  return n;
}

}  // namespace gla
