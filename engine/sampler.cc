#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace gla {

void TokenHistory::AddPrompt(std::span<const int32_t> ids) {
  for (int32_t id : ids) ++all_counts_[id];
}

void TokenHistory::AddOutput(int32_t id) {
  ++output_counts_[id];
  ++all_counts_[id];
}

namespace {
uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// log sum exp of the row, in the sampler's arithmetic (the GPU kernel's reference).
float LogSumExp(std::span<const float> logits) {
  const float mx = *std::max_element(logits.begin(), logits.end());
  double z = 0.0;
  for (float l : logits) z += std::exp(static_cast<double>(l - mx));
  return mx + static_cast<float>(std::log(z));
}

// The `n` most likely ids (ties by id) with their log-probabilities, most likely first.
void AddTop(std::span<const float> logits, float log_z, int n, SampledToken* out) {
  if (n <= 0) return;
  const int V = static_cast<int>(logits.size());
  n = std::min(n, V);
  std::vector<int32_t> ids(V);
  std::iota(ids.begin(), ids.end(), 0);
  std::partial_sort(ids.begin(), ids.begin() + n, ids.end(),
                    [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
  for (int i = 0; i < n; ++i) out->top.emplace_back(ids[i], logits[ids[i]] - log_z);
}
}  // namespace

double UniformFromCounter(uint64_t seed, uint64_t step) {
  const uint64_t bits = SplitMix64(SplitMix64(seed) ^ (step * 0xD1B54A32D192ED03ull));
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

SampledToken SampleToken(std::span<const float> row, int vocab_limit, const SamplingParams& p,
                         const TokenHistory& history, uint64_t step, const uint64_t* allowed) {
  const int V = std::min<int>(vocab_limit, static_cast<int>(row.size()));
  std::vector<float> logits(row.begin(), row.begin() + V);
  int candidates = V;  // ids a mask leaves (all without one)
  if (allowed != nullptr) {
    candidates = 0;
    for (int i = 0; i < V; ++i) {
      if ((allowed[i >> 6] >> (i & 63)) & 1) ++candidates;
      else logits[i] = -std::numeric_limits<float>::infinity();
    }
    if (candidates == 0) candidates = V;  // callers never send an empty mask; stay defined
  }
  for (const auto& [id, bias] : p.logit_bias)
    if (id >= 0 && id < V) logits[id] += bias;
  // Penalties (vLLM's conventions): repetition over prompt + output, presence/frequency over output.
  if (p.repetition_penalty != 1.0f)
    for (const auto& [id, n] : history.all_counts())
      if (id >= 0 && id < V) logits[id] = logits[id] > 0 ? logits[id] / p.repetition_penalty : logits[id] * p.repetition_penalty;
  if (p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f)
    for (const auto& [id, n] : history.output_counts())
      if (id >= 0 && id < V) logits[id] -= p.presence_penalty + p.frequency_penalty * static_cast<float>(n);

  SampledToken out;
  const float log_z = LogSumExp(logits);

  if (p.temperature <= 0.0f) {
    out.token = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  } else {
    // Candidates sorted by logit (ties by id, so the order is deterministic).
    std::vector<int32_t> order(V);
    std::iota(order.begin(), order.end(), 0);
    const int keep_k = std::min(p.top_k > 0 ? std::min(p.top_k, V) : V, candidates);  // masked ids never
    auto by_logit = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
    std::partial_sort(order.begin(), order.begin() + keep_k, order.end(), by_logit);
    order.resize(keep_k);
    std::vector<double> prob(order.size());
    const double top = logits[order[0]] / p.temperature;
    double sum = 0.0;
    for (size_t i = 0; i < order.size(); ++i) sum += prob[i] = std::exp(logits[order[i]] / p.temperature - top);
    size_t n = order.size();
    if (p.min_p > 0.0f)  // prob[0] is the largest
      while (n > 1 && prob[n - 1] < p.min_p * prob[0]) sum -= prob[--n];
    if (p.top_p < 1.0f) {
      double acc = 0.0;
      size_t keep = 0;
      while (keep < n && acc < p.top_p * sum) acc += prob[keep++];
      n = std::max<size_t>(keep, 1);
      sum = std::accumulate(prob.begin(), prob.begin() + n, 0.0);
    }
    const double u = UniformFromCounter(p.seed, step) * sum;
    double acc = 0.0;
    size_t pick = n - 1;
    for (size_t i = 0; i < n; ++i) {
      acc += prob[i];
      if (u < acc) {
        pick = i;
        break;
      }
    }
    out.token = order[pick];
  }
  out.logprob = logits[out.token] - log_z;
  AddTop(logits, log_z, std::min(p.logprobs, candidates), &out);
  return out;
}

SampledToken ScoreToken(std::span<const float> row, int vocab_limit, int32_t token, int top) {
  const int V = std::min<int>(vocab_limit, static_cast<int>(row.size()));
  const std::span<const float> logits = row.first(V);
  SampledToken out;
  out.token = token;
  const float log_z = LogSumExp(logits);
  out.logprob = token >= 0 && token < V ? logits[token] - log_z : -std::numeric_limits<float>::infinity();
  AddTop(logits, log_z, top, &out);
  return out;
}

}  // namespace gla
