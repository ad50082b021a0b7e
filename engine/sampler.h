// Token sampling: penalties, temperature, top-k, top-p, min-p, log-probabilities, seeded.
// Randomness is counter-based (seed, index of the generated token), so a request's output
// depends on its seed alone, never on what else shares its batch.
#pragma once

#include <cstdint>
#include <span>
#include <unordered_map>
#include <utility>
#include <vector>

namespace gla {

struct SamplingParams {
  float temperature = 0.0f;  // 0 = greedy
  int top_k = 0;             // 0 = off
  float top_p = 1.0f;
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;  // prompt and output tokens
  float presence_penalty = 0.0f;    // output tokens
  float frequency_penalty = 0.0f;   // output tokens
  uint64_t seed = 0;
  int logprobs = -1;  // -1: none; n >= 0: chosen token + top n
  // OpenAI's logit_bias: added to these ids' logits before the penalties (each id once; the front
  // door checks ids and values). Log-probabilities are those of the biased, penalised logits.
  std::vector<std::pair<int32_t, float>> logit_bias;
};

// The tokens a sequence has seen, for the penalties.
class TokenHistory {
 public:
  void AddPrompt(std::span<const int32_t> ids);
  void AddOutput(int32_t id);
  const std::unordered_map<int32_t, int>& output_counts() const { return output_counts_; }
  const std::unordered_map<int32_t, int>& all_counts() const { return all_counts_; }

 private:
  std::unordered_map<int32_t, int> output_counts_, all_counts_;
};

struct SampledToken {
  int32_t token = 0;
  float logprob = 0.0f;                          // log softmax of the penalised logits
  std::vector<std::pair<int32_t, float>> top;    // (id, logprob), most likely first
};

// Samples one row of logits. Only ids below `vocab_limit` are candidates (a checkpoint may pad
// its vocabulary beyond the tokenizer's). `step` is the index of the token being generated.
// `allowed` (structured output; bit t of word t / 64, at least one bit set): only those ids are
// candidates: the others' logits are -infinity before the bias and the penalties, so the
// log-probabilities are those of the distribution sampled from, and the top alternatives are
// allowed ids only.
SampledToken SampleToken(std::span<const float> logits, int vocab_limit, const SamplingParams& params,
                         const TokenHistory& history, uint64_t step, const uint64_t* allowed = nullptr);

// Prompt scoring: the log-probability of `token` under the raw row (log-softmax over the ids below
// `vocab_limit`; no penalties, no temperature) and the `top` most likely ids, as SampleToken reports
// its own pick. A token at or beyond vocab_limit has logprob -infinity.
SampledToken ScoreToken(std::span<const float> logits, int vocab_limit, int32_t token, int top);

// A uniform double in [0, 1) from (seed, step): splitmix64 of both.
double UniformFromCounter(uint64_t seed, uint64_t step);

}  // namespace gla
