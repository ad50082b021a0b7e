// The GPU sampler's inputs for one request (kernels/sampling.h), from the CPU sampler's arguments
// (SamplingParams, TokenHistory, the generated-token index): used by the CUDA backend
// (engine/cuda_sampler.cc), the sampling kernel's test and its benchmark, so all of them feed the
// kernel the same way.
#pragma once

#include <algorithm>
#include <cstdint>
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
// forced >= 0: a scored row (prompt scoring), not a sampled one.
inline cuda::SampleRowSpec MakeSampleRowSpec(const SamplingParams& p, const TokenHistory* history, uint64_t step,
                                             int logits_row, int max_top, PenaltyLists* lists, int32_t forced = -1) {
  cuda::SampleRowSpec s;
  s.forced_token = forced;
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

}  // namespace gla
