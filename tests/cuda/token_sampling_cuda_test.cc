// GPU sampling against the CPU sampler (engine/sampler.cc) on the same fresh random logits: every
// rule (greedy with ties, temperature, top-k, top-p, min-p, the three penalties, a vocabulary
// limit below the row width, top-n logprobs), batches mixing greedy and sampled rows, vocabularies
// of 512 and 32000, many seeds. Tokens must be equal; log-probabilities within 1e-4.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "engine/sample_row_spec.h"
#include "engine/sampler.h"
#include "kernels/token_sampling.h"
#include "tests/cuda/cuda_test_util.h"

namespace gla {
namespace {

struct Case {
  const char* name;
  SamplingParams params;
  bool with_history;
};

std::vector<Case> Cases() {
  std::vector<Case> c;
  auto add = [&](const char* n, SamplingParams p, bool h = false) { c.push_back({n, p, h}); };
  SamplingParams p;
  add("greedy", p);
  p.logprobs = 5;
  add("greedy_logprobs", p);
  p = {};
  p.temperature = 0.8f;
  add("temperature", p);
  p.top_k = 40;
  add("top_k", p);
  p = {};
  p.temperature = 1.0f;
  p.top_p = 0.9f;
  add("top_p", p);
  p = {};
  p.temperature = 1.2f;
  p.min_p = 0.05f;
  add("min_p", p);
  p = {};
  p.temperature = 0.7f;
  p.top_k = 100;
  p.top_p = 0.8f;
  p.min_p = 0.02f;
  p.logprobs = 20;
  add("all_cuts_logprobs", p);
  p = {};
  p.repetition_penalty = 1.3f;
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.25f;
  add("greedy_penalties", p, true);
  p.temperature = 0.9f;
  p.top_p = 0.95f;
  add("sampled_penalties", p, true);
  return c;
}

class TokenSampling : public ::testing::TestWithParam<int> {};

TEST_P(TokenSampling, EqualsCpuSampler) {
  GLA_REQUIRE_CUDA_DEVICE();
  const int width = GetParam(), vocab_limit = width == 512 ? 500 : width;
  std::mt19937 rng(width);
  std::normal_distribution<float> nd(0.f, 3.f);
  const auto cases = Cases();
  const int seeds = 24;
  const int rows = static_cast<int>(cases.size()) * seeds;
  std::vector<float> logits(static_cast<size_t>(rows) * width);
  for (auto& x : logits) x = nd(rng);
  for (int r = 0; r < rows; r += 5) logits[static_cast<size_t>(r) * width + 7] = logits[static_cast<size_t>(r) * width + 3] = 50.f;  // exact ties

  std::vector<TokenHistory> histories(rows);
  std::vector<cuda::SampleRowSpec> specs;
  PenaltyLists pen;
  std::uniform_int_distribution<int> id(0, width - 1);
  const int max_top = 32;
  for (int r = 0; r < rows; ++r) {
    const Case& c = cases[r % cases.size()];
    SamplingParams p = c.params;
    p.seed = 1000 + r;
    if (c.with_history) {
      std::vector<int32_t> prompt(30);
      for (auto& t : prompt) t = id(rng);
      histories[r].AddPrompt(prompt);
      for (int k = 0; k < 10; ++k) histories[r].AddOutput(id(rng) % 50);  // repeats
    }
    specs.push_back(MakeSampleRowSpec(p, &histories[r], 17 + r, r, max_top, &pen));
  }
  pen.ids.push_back(0);  // never empty
  pen.all_counts.push_back(0);
  pen.output_counts.push_back(0);

  auto up = [](const void* h, size_t bytes) {
    void* d = nullptr;
    EXPECT_EQ(cudaMalloc(&d, bytes), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice), cudaSuccess);
    return d;
  };
  cuda::SampleArgs a;
  a.logits = static_cast<const float*>(up(logits.data(), logits.size() * 4));
  a.logits_stride = width;
  a.vocab = vocab_limit;
  a.rows = rows;
  a.specs = static_cast<const cuda::SampleRowSpec*>(up(specs.data(), specs.size() * sizeof(specs[0])));
  a.penalty_ids = static_cast<const int32_t*>(up(pen.ids.data(), pen.ids.size() * 4));
  a.penalty_all = static_cast<const int32_t*>(up(pen.all_counts.data(), pen.all_counts.size() * 4));
  a.penalty_out = static_cast<const int32_t*>(up(pen.output_counts.data(), pen.output_counts.size() * 4));
  a.needs_sort = true;
  a.max_top = max_top;
  GLA_CUDA_OK(cudaMalloc(&a.out_token, rows * 4));
  GLA_CUDA_OK(cudaMalloc(&a.out_logprob, rows * 4));
  GLA_CUDA_OK(cudaMalloc(&a.out_top_ids, rows * max_top * 4));
  GLA_CUDA_OK(cudaMalloc(&a.out_top_logprobs, rows * max_top * 4));
  a.workspace_bytes = cuda::SampleWorkspaceBytes(rows, vocab_limit);
  GLA_CUDA_OK(cudaMalloc(&a.workspace, a.workspace_bytes));
  GLA_CUDA_OK(cuda::SampleRows(a, nullptr));
  GLA_CUDA_OK(cudaDeviceSynchronize());
  std::vector<int32_t> tok(rows), top_ids(rows * max_top);
  std::vector<float> lp(rows), top_lp(rows * max_top);
  GLA_CUDA_OK(cudaMemcpy(tok.data(), a.out_token, rows * 4, cudaMemcpyDeviceToHost));
  GLA_CUDA_OK(cudaMemcpy(lp.data(), a.out_logprob, rows * 4, cudaMemcpyDeviceToHost));
  GLA_CUDA_OK(cudaMemcpy(top_ids.data(), a.out_top_ids, rows * max_top * 4, cudaMemcpyDeviceToHost));
  GLA_CUDA_OK(cudaMemcpy(top_lp.data(), a.out_top_logprobs, rows * max_top * 4, cudaMemcpyDeviceToHost));

  int mismatches = 0;
  for (int r = 0; r < rows; ++r) {
    const Case& c = cases[r % cases.size()];
    SamplingParams p = c.params;
    p.seed = 1000 + r;
    const SampledToken want = SampleToken(std::span<const float>(logits).subspan(static_cast<size_t>(r) * width, width),
                                          vocab_limit, p, histories[r], 17 + r);
    if (tok[r] != want.token) ++mismatches;
    EXPECT_EQ(tok[r], want.token) << c.name << " row " << r;
    EXPECT_NEAR(lp[r], want.logprob, 1e-4) << c.name << " row " << r;
    for (size_t j = 0; j < want.top.size(); ++j) {
      EXPECT_EQ(top_ids[r * max_top + j], want.top[j].first) << c.name << " row " << r << " top " << j;
      EXPECT_NEAR(top_lp[r * max_top + j], want.top[j].second, 1e-4) << c.name << " row " << r << " top " << j;
    }
  }
  std::printf("[ measure ] vocab %d: %d rows, %d token mismatches\n", width, rows, mismatches);
  for (const void* p : {static_cast<const void*>(a.logits), static_cast<const void*>(a.specs),
                        static_cast<const void*>(a.penalty_ids), static_cast<const void*>(a.penalty_all),
                        static_cast<const void*>(a.penalty_out), static_cast<const void*>(a.out_token),
                        static_cast<const void*>(a.out_logprob), static_cast<const void*>(a.out_top_ids),
                        static_cast<const void*>(a.out_top_logprobs), static_cast<const void*>(a.workspace)})
    cudaFree(const_cast<void*>(p));
}

INSTANTIATE_TEST_SUITE_P(Vocab, TokenSampling, ::testing::Values(512, 32000));

}  // namespace
}  // namespace gla
