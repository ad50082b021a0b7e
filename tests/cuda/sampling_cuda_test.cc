// gla::cuda::SampleRows (kernels/sampling.h) against the CPU sampler gla::SampleToken
// (engine/sampler.cc) on the same fresh random logits: every rule (greedy with ties, temperature,
// top-k, top-p, min-p and their combinations, the three penalties with histories, a vocabulary
// limit below the row width, top-n logprobs) in batches mixing greedy and sampled rows, over
// logits drawn flat, peaked, with many exact ties, with masked (-inf) ids and all equal, for
// vocabularies of 512, 32000 and 128256 (the last one through the workspace instead of shared
// memory), many seeds. Row specs and penalty lists come from MakeSampleRowSpec
// (engine/sample_row_spec.h), as in the engine. Tokens and top-n ids must be equal;
// log-probabilities within 1e-4. Also: the same bits on every run, under CUDA graph capture and
// replay, and argument checks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "engine/sample_row_spec.h"
#include "engine/sampler.h"
#include "kernels/sampling.h"
#include "tests/cuda/cuda_test_util.h"

namespace gla {
namespace {

enum class Logits { kFlat, kPeaked, kTies, kMasked, kEqual };

struct Case {
  const char* name;
  SamplingParams params;
  bool with_history = false;
  Logits logits = Logits::kFlat;
};

std::vector<Case> Cases() {
  std::vector<Case> c;
  auto add = [&](const char* n, SamplingParams p, bool h = false, Logits l = Logits::kFlat) { c.push_back({n, p, h, l}); };
  SamplingParams p;
  add("greedy", p);
  add("greedy_ties", p, false, Logits::kTies);
  add("greedy_equal", p, false, Logits::kEqual);
  p.logprobs = 5;
  add("greedy_logprobs", p);
  p.logprobs = 20;
  add("greedy_logprobs_ties", p, false, Logits::kTies);
  p = {};
  p.temperature = 0.8f;
  add("temperature", p);
  p.temperature = 1.5f;
  add("temperature_hot_peaked", p, false, Logits::kPeaked);
  add("temperature_ties", p, false, Logits::kTies);
  add("temperature_masked", p, false, Logits::kMasked);
  add("temperature_equal", p, false, Logits::kEqual);
  p = {};
  p.temperature = 0.8f;
  p.top_k = 40;
  add("top_k", p);
  p.top_k = 1;
  add("top_k_1", p);
  p.top_k = 3000;
  add("top_k_3000_ties", p, false, Logits::kTies);
  p.top_k = 1 << 20;
  add("top_k_beyond_vocab", p);
  p = {};
  p.temperature = 1.0f;
  p.top_p = 0.9f;
  add("top_p", p);
  add("top_p_peaked", p, false, Logits::kPeaked);
  add("top_p_ties", p, false, Logits::kTies);
  add("top_p_masked", p, false, Logits::kMasked);
  p.top_p = 0.0f;
  add("top_p_zero", p);
  p.top_p = 0.999f;
  p.temperature = 2.0f;
  add("top_p_0999_hot", p);
  p = {};
  p.temperature = 1.2f;
  p.min_p = 0.05f;
  add("min_p", p);
  add("min_p_ties", p, false, Logits::kTies);
  p.min_p = 1.5f;
  add("min_p_above_one", p);
  p = {};
  p.temperature = 0.7f;
  p.top_k = 100;
  p.top_p = 0.8f;
  p.min_p = 0.02f;
  p.logprobs = 20;
  add("all_cuts_logprobs", p);
  add("all_cuts_logprobs_ties", p, false, Logits::kTies);
  p = {};
  p.temperature = 1.1f;
  p.top_k = 500;
  p.top_p = 0.95f;
  add("top_k_top_p_peaked", p, false, Logits::kPeaked);
  p = {};
  p.temperature = 0.9f;
  p.min_p = 0.001f;
  p.top_p = 0.7f;
  p.logprobs = 3;
  add("min_p_top_p_logprobs", p);
  p = {};
  p.repetition_penalty = 1.3f;
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.25f;
  add("greedy_penalties", p, true);
  p.logprobs = 8;
  add("greedy_penalties_logprobs", p, true);
  p.temperature = 0.9f;
  p.top_p = 0.95f;
  add("sampled_penalties", p, true);
  p = {};
  p.temperature = 1.0f;
  p.repetition_penalty = 0.7f;  // < 1: boosts
  p.frequency_penalty = -0.3f;
  add("sampled_penalties_negative", p, true, Logits::kPeaked);
  // OpenAI's logit_bias, alone and on ids the penalties also touch (one entry each: merged).
  p = {};
  p.logit_bias = {{5, 100.0f}, {9, -100.0f}, {3, 2.5f}, {70000, 1.0f}};  // 70000: beyond every vocab here
  p.logprobs = 4;
  add("greedy_logit_bias", p, false);
  p.temperature = 0.8f;
  p.top_p = 0.9f;
  p.repetition_penalty = 1.2f;
  p.presence_penalty = 0.3f;
  p.logit_bias = {{3, -1.5f}, {7, 3.0f}, {11, 0.25f}};
  add("sampled_logit_bias_penalties", p, true);
  return c;
}

struct Batch {
  int width = 0, vocab_limit = 0, rows = 0;
  std::vector<float> logits;  // [rows, width]
  std::vector<SamplingParams> params;
  std::vector<TokenHistory> histories;
  std::vector<const char*> names;
  std::vector<cuda::SampleRowSpec> specs;
  PenaltyLists pen;
};

constexpr int kMaxTop = 32;

// Request r samples from logits row rows - 1 - r, to exercise logits_row.
Batch MakeBatch(int width, int vocab_limit, int seeds, uint32_t rng_seed) {
  Batch b;
  b.width = width;
  b.vocab_limit = vocab_limit;
  const auto cases = Cases();
  b.rows = static_cast<int>(cases.size()) * seeds;
  b.logits.resize(static_cast<size_t>(b.rows) * width);
  b.params.resize(b.rows);
  b.histories.resize(b.rows);
  b.names.resize(b.rows);
  b.specs.resize(b.rows);
  std::mt19937 rng(rng_seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::uniform_int_distribution<int> any_id(0, width - 1), small_id(0, 49);
  for (int r = 0; r < b.rows; ++r) {
    const Case& c = cases[r % cases.size()];
    const int src = b.rows - 1 - r;
    float* row = b.logits.data() + static_cast<size_t>(src) * width;
    for (int i = 0; i < width; ++i) {
      const float x = nd(rng);
      switch (c.logits) {
        case Logits::kFlat: row[i] = 3.f * x; break;
        case Logits::kPeaked: row[i] = 1.5f * x; break;
        case Logits::kTies: row[i] = std::round(4.f * x) * 0.5f; break;  // ~33 distinct values
        case Logits::kMasked: row[i] = (i % 10 < 3) ? -std::numeric_limits<float>::infinity() : 2.f * x; break;
        case Logits::kEqual: row[i] = 1.25f; break;
      }
    }
    if (c.logits == Logits::kPeaked)
      for (int j = 0; j < 6; ++j) row[any_id(rng) % vocab_limit] += 9.f + j;
    if (r % 5 == 0 && c.logits != Logits::kEqual && vocab_limit > 7)  // exact ties at the top
      row[7] = row[3] = 40.f;
    if (r % 7 == 1) row[any_id(rng) % vocab_limit] = -0.0f;  // -0 must equal +0
    if (width > vocab_limit) row[vocab_limit + (r % (width - vocab_limit))] = 1000.f;  // beyond the limit: ignored

    SamplingParams p = c.params;
    p.seed = 1000 + 7919ull * r;
    b.params[r] = p;
    b.names[r] = c.name;
    if (c.with_history) {
      std::vector<int32_t> prompt(30);
      for (auto& t : prompt) t = any_id(rng);  // some beyond vocab_limit when width > vocab_limit
      prompt.push_back(3);
      prompt.push_back(7);
      b.histories[r].AddPrompt(prompt);
      for (int k = 0; k < 12; ++k) b.histories[r].AddOutput(small_id(rng));  // repeats
    }
    b.specs[r] = MakeSampleRowSpec(p, &b.histories[r], 17 + 3 * r, src, kMaxTop, &b.pen);
  }
  b.pen.ids.push_back(0);  // never empty
  b.pen.all_counts.push_back(0);
  b.pen.output_counts.push_back(0);
  b.pen.bias.push_back(0.0f);
  return b;
}

struct GpuResult {
  std::vector<int32_t> token, top_ids;
  std::vector<float> logprob, top_logprobs;
  bool operator==(const GpuResult& o) const {
    auto same = [](const std::vector<float>& a, const std::vector<float>& b) {
      return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
    };
    return token == o.token && top_ids == o.top_ids && same(logprob, o.logprob) && same(top_logprobs, o.top_logprobs);
  }
};

// Device copies of a batch and the outputs.
class DeviceBatch {
 public:
  explicit DeviceBatch(const Batch& b) : rows_(b.rows) {
    a_.logits = Up(b.logits);
    a_.logits_stride = b.width;
    a_.rows = b.rows;
    a_.vocab_limit = b.vocab_limit;
    a_.specs = Up(b.specs);
    a_.penalty_ids = Up(b.pen.ids);
    a_.penalty_all_counts = Up(b.pen.all_counts);
    a_.penalty_output_counts = Up(b.pen.output_counts);
    a_.penalty_bias = Up(b.pen.bias);
    a_.max_top = kMaxTop;
    a_.out_token = Alloc<int32_t>(rows_);
    a_.out_logprob = Alloc<float>(rows_);
    a_.out_top_ids = Alloc<int32_t>(static_cast<size_t>(rows_) * kMaxTop);
    a_.out_top_logprobs = Alloc<float>(static_cast<size_t>(rows_) * kMaxTop);
    a_.workspace_bytes = cuda::SampleWorkspaceBytes(b.rows, b.vocab_limit);
    a_.workspace = a_.workspace_bytes ? Alloc<char>(a_.workspace_bytes) : nullptr;
  }
  ~DeviceBatch() {
    for (void* p : owned_) EXPECT_EQ(cudaFree(p), cudaSuccess);
  }
  DeviceBatch(const DeviceBatch&) = delete;
  DeviceBatch& operator=(const DeviceBatch&) = delete;
  const cuda::SampleArgs& args() const { return a_; }

  void Clear() {  // so that results are the kernel's, not a previous run's
    EXPECT_EQ(cudaMemset(a_.out_token, 0xff, rows_ * sizeof(int32_t)), cudaSuccess);
    EXPECT_EQ(cudaMemset(a_.out_logprob, 0xff, rows_ * sizeof(float)), cudaSuccess);
    EXPECT_EQ(cudaMemset(a_.out_top_ids, 0xff, static_cast<size_t>(rows_) * kMaxTop * sizeof(int32_t)), cudaSuccess);
    EXPECT_EQ(cudaMemset(a_.out_top_logprobs, 0xff, static_cast<size_t>(rows_) * kMaxTop * sizeof(float)),
              cudaSuccess);
  }
  GpuResult Read() {
    GpuResult g;
    g.token.resize(rows_);
    g.logprob.resize(rows_);
    g.top_ids.resize(static_cast<size_t>(rows_) * kMaxTop);
    g.top_logprobs.resize(g.top_ids.size());
    EXPECT_EQ(cudaMemcpy(g.token.data(), a_.out_token, rows_ * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(g.logprob.data(), a_.out_logprob, rows_ * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(g.top_ids.data(), a_.out_top_ids, g.top_ids.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(g.top_logprobs.data(), a_.out_top_logprobs, g.top_ids.size() * 4, cudaMemcpyDeviceToHost),
              cudaSuccess);
    return g;
  }

 private:
  template <class T>
  T* Alloc(size_t n) {
    void* d = nullptr;
    EXPECT_EQ(cudaMalloc(&d, std::max<size_t>(n, 1) * sizeof(T)), cudaSuccess);
    owned_.push_back(d);
    return static_cast<T*>(d);
  }
  template <class T>
  const T* Up(const std::vector<T>& h) {
    T* d = Alloc<T>(h.size());
    EXPECT_EQ(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
    return d;
  }

  int rows_;
  cuda::SampleArgs a_;
  std::vector<void*> owned_;
};

struct Shape {
  int width, vocab_limit, seeds;
};

class GpuSampling : public ::testing::TestWithParam<Shape> {};

TEST_P(GpuSampling, EqualsCpuSampler) {
  GLA_REQUIRE_CUDA_DEVICE();
  const Shape shape = GetParam();
  const Batch b = MakeBatch(shape.width, shape.vocab_limit, shape.seeds, 1234u + shape.width);
  DeviceBatch d(b);
  d.Clear();
  GLA_CUDA_OK(cuda::SampleRows(d.args(), nullptr));
  GLA_CUDA_OK(cudaDeviceSynchronize());
  const GpuResult g = d.Read();

  int token_mismatches = 0, sampled = 0;
  std::vector<int32_t> seen;
  for (int r = 0; r < b.rows; ++r) {
    const SampledToken want = SampleToken(
        std::span<const float>(b.logits).subspan(static_cast<size_t>(b.specs[r].logits_row) * b.width, b.width),
        b.vocab_limit, b.params[r], b.histories[r], b.specs[r].step);
    sampled += b.params[r].temperature > 0.f ? 1 : 0;
    seen.push_back(want.token);
    if (g.token[r] != want.token) ++token_mismatches;
    EXPECT_EQ(g.token[r], want.token) << b.names[r] << " row " << r;
    EXPECT_NEAR(g.logprob[r], want.logprob, 1e-4) << b.names[r] << " row " << r;
    const size_t n = std::min<size_t>(want.top.size(), kMaxTop);
    for (size_t j = 0; j < n; ++j) {
      EXPECT_EQ(g.top_ids[r * kMaxTop + j], want.top[j].first) << b.names[r] << " row " << r << " top " << j;
      EXPECT_NEAR(g.top_logprobs[r * kMaxTop + j], want.top[j].second, 1e-4)
          << b.names[r] << " row " << r << " top " << j;
    }
  }
  std::sort(seen.begin(), seen.end());
  const int distinct_tokens = static_cast<int>(std::unique(seen.begin(), seen.end()) - seen.begin());
  std::printf("[ measure ] width %d, vocab_limit %d: %d rows (%d sampled), %d distinct tokens, %d token mismatches\n",
              b.width, b.vocab_limit, b.rows, sampled, distinct_tokens, token_mismatches);

  // The same bits again, on a stream.
  cudaStream_t stream;
  GLA_CUDA_OK(cudaStreamCreate(&stream));
  d.Clear();
  GLA_CUDA_OK(cuda::SampleRows(d.args(), stream));
  GLA_CUDA_OK(cudaStreamSynchronize(stream));
  EXPECT_TRUE(d.Read() == g) << "a second run differs";
  GLA_CUDA_OK(cudaStreamDestroy(stream));
}

INSTANTIATE_TEST_SUITE_P(Vocab, GpuSampling,
                         ::testing::Values(Shape{512, 500, 24}, Shape{32000, 32000, 16}, Shape{32064, 32000, 8},
                                           Shape{131072, 128256, 4}),
                         [](const ::testing::TestParamInfo<Shape>& i) {
                           return "w" + std::to_string(i.param.width) + "_v" + std::to_string(i.param.vocab_limit);
                         });

TEST(GpuSamplingGraph, CapturedGraphGivesTheSameBits) {
  GLA_REQUIRE_CUDA_DEVICE();
  const Batch b = MakeBatch(32000, 32000, 2, 99u);
  DeviceBatch d(b);
  d.Clear();
  GLA_CUDA_OK(cuda::SampleRows(d.args(), nullptr));
  GLA_CUDA_OK(cudaDeviceSynchronize());
  const GpuResult direct = d.Read();

  cudaStream_t stream;
  GLA_CUDA_OK(cudaStreamCreate(&stream));
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  GLA_CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  const cudaError_t sampled = cuda::SampleRows(d.args(), stream);
  GLA_CUDA_OK(cudaStreamEndCapture(stream, &graph));
  GLA_CUDA_OK(sampled);
  GLA_CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
  for (int i = 0; i < 2; ++i) {
    d.Clear();
    GLA_CUDA_OK(cudaDeviceSynchronize());
    GLA_CUDA_OK(cudaGraphLaunch(exec, stream));
    GLA_CUDA_OK(cudaStreamSynchronize(stream));
    EXPECT_TRUE(d.Read() == direct) << "graph replay " << i;
  }
  GLA_CUDA_OK(cudaGraphExecDestroy(exec));
  GLA_CUDA_OK(cudaGraphDestroy(graph));
  GLA_CUDA_OK(cudaStreamDestroy(stream));
}

TEST(GpuSamplingArgs, RejectsBadArguments) {
  GLA_REQUIRE_CUDA_DEVICE();
  const Batch b = MakeBatch(512, 500, 1, 5u);
  DeviceBatch d(b);
  cuda::SampleArgs a = d.args();
  a.max_top = cuda::kSampleMaxTop + 1;
  EXPECT_EQ(cuda::SampleRows(a, nullptr), cudaErrorInvalidValue);
  a = d.args();
  a.logits_stride = a.vocab_limit - 1;
  EXPECT_EQ(cuda::SampleRows(a, nullptr), cudaErrorInvalidValue);
  a = d.args();
  a.vocab_limit = 0;
  EXPECT_EQ(cuda::SampleRows(a, nullptr), cudaErrorInvalidValue);
  a = d.args();
  a.rows = 0;
  EXPECT_EQ(cuda::SampleRows(a, nullptr), cudaSuccess);
  // A vocabulary too large for shared memory needs the workspace.
  EXPECT_GT(cuda::SampleWorkspaceBytes(4, 128256), 0u);
  EXPECT_EQ(cuda::SampleWorkspaceBytes(4, 32000), 0u);
  a = d.args();
  a.vocab_limit = 128256;
  a.logits_stride = 128256;
  a.workspace = nullptr;
  a.workspace_bytes = 0;
  EXPECT_EQ(cuda::SampleRows(a, nullptr), cudaErrorInvalidValue);
  GLA_CUDA_OK(cudaDeviceSynchronize());
}

}  // namespace
}  // namespace gla
