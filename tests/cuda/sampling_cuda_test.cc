// gla::cuda::SampleRows (kernels/sampling.h) against the CPU sampler gla::SampleToken
// (engine/sampler.cc) on the same fresh random logits: every rule (greedy with ties, temperature,
// top-k, top-p, min-p and their combinations, the three penalties with histories, a vocabulary
// limit below the row width, top-n logprobs) in batches mixing greedy and sampled rows, over
// logits drawn flat, peaked, with many exact ties, with masked (-inf) ids and all equal, for
// vocabularies of 512, 32000 and 128256 (the last one through the workspace instead of shared
// memory), many seeds. Row specs and penalty lists come from MakeSampleRowSpec
// (engine/sample_row_spec.h), as in the engine. Tokens and top-n ids must be equal;
// log-probabilities within 1e-4. Also: the same bits on every run, under CUDA graph capture and
// replay, and argument checks. Token masks (structured output) against SampleToken's `allowed`:
// masks of one id, a few, about half (also over rows with -inf logits), ids with very low logits
// only, every id, beside unmasked rows in one launch.
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
  // Token masks (the masked batches): row m is masks[m * mask_words ...]; specs name theirs.
  std::vector<uint64_t> masks;
  int mask_words = 0;
  const uint64_t* mask(int r) const {
    return specs[r].mask_row >= 0 ? masks.data() + static_cast<size_t>(specs[r].mask_row) * mask_words : nullptr;
  }
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
    if (!b.masks.empty()) {
      a_.masks = Up(b.masks);
      a_.mask_words = b.mask_words;
      a_.mask_rows = static_cast<int>(b.masks.size() / b.mask_words);
    }
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
  // One launch on `stream` from cleared outputs, waited for; its results.
  GpuResult Run(cudaStream_t stream = nullptr) {
    Clear();
    EXPECT_EQ(cuda::SampleRows(a_, stream), cudaSuccess);
    EXPECT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    return Read();
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
std::string ShapeName(const ::testing::TestParamInfo<Shape>& i) {
  return "w" + std::to_string(i.param.width) + "_v" + std::to_string(i.param.vocab_limit);
}

class GpuSampling : public ::testing::TestWithParam<Shape> {};

TEST_P(GpuSampling, EqualsCpuSampler) {
  GLA_REQUIRE_CUDA_DEVICE();
  const Shape shape = GetParam();
  const Batch b = MakeBatch(shape.width, shape.vocab_limit, shape.seeds, 1234u + shape.width);
  DeviceBatch d(b);
  const GpuResult g = d.Run();

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
  EXPECT_TRUE(d.Run(stream) == g) << "a second run differs";
  GLA_CUDA_OK(cudaStreamDestroy(stream));
}

INSTANTIATE_TEST_SUITE_P(Vocab, GpuSampling,
                         ::testing::Values(Shape{512, 500, 24}, Shape{32000, 32000, 16}, Shape{32064, 32000, 8},
                                           Shape{131072, 128256, 4}),
                         ShapeName);

TEST(GpuSamplingGraph, CapturedGraphGivesTheSameBits) {
  GLA_REQUIRE_CUDA_DEVICE();
  const Batch b = MakeBatch(32000, 32000, 2, 99u);
  DeviceBatch d(b);
  const GpuResult direct = d.Run();

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


// ---- Token masks (structured output).

enum class Mask { kNone, kOne, kFew, kHalf, kHalfOverInf, kLow, kAll };

struct MaskKind {
  const char* name;
  Mask mask;
};

constexpr MaskKind kMaskKinds[] = {{"unmasked", Mask::kNone},   {"one_id", Mask::kOne},
                                   {"few_ids", Mask::kFew},     {"half", Mask::kHalf},
                                   {"half_over_inf", Mask::kHalfOverInf}, {"low_logits", Mask::kLow},
                                   {"every_id", Mask::kAll}};

std::vector<Case> MaskedCases() {
  std::vector<Case> c;
  auto add = [&](const char* n, SamplingParams p, bool h = false) { c.push_back({n, p, h, Logits::kFlat}); };
  SamplingParams p;
  add("greedy", p);
  p.logprobs = 20;  // more than a few-id mask allows
  add("greedy_logprobs", p);
  p = {};
  p.temperature = 0.8f;
  add("temperature", p);
  p.temperature = 2.0f;
  p.logprobs = 8;
  add("temperature_hot_logprobs", p);
  p = {};
  p.temperature = 0.8f;
  p.top_k = 40;
  add("top_k", p);
  p.top_k = 3;  // below a few-id mask's count, above a one-id mask's
  add("top_k_3", p);
  p.top_k = 3000;  // above every mask's count but "every id"
  add("top_k_3000", p);
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
  // Penalties and logit_bias on masked ids leave them out: id 5's +100 is on a masked id.
  p = {};
  p.repetition_penalty = 1.3f;
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.25f;
  p.logit_bias = {{5, 100.0f}, {9, -100.0f}, {3, 2.5f}, {70000, 1.0f}};
  p.logprobs = 4;
  add("greedy_penalties_bias", p, true);
  p.temperature = 0.9f;
  p.top_p = 0.95f;
  add("sampled_penalties_bias", p, true);
  return c;
}

// Every masked case with every mask kind (kNone: unmasked rows among the masked ones), `seeds`
// times. Masks are built by hand, not through CopyMaskRow: where vocab_limit is not a multiple of
// 64 the bits beyond it are set, and the kernel must ignore them as the CPU does.
Batch MakeMaskedBatch(int width, int vocab_limit, int seeds, uint32_t rng_seed) {
  Batch b;
  b.width = width;
  b.vocab_limit = vocab_limit;
  b.mask_words = MaskWords(vocab_limit);
  const auto cases = MaskedCases();
  const int kinds = static_cast<int>(std::size(kMaskKinds));
  b.rows = static_cast<int>(cases.size()) * kinds * seeds;
  b.logits.resize(static_cast<size_t>(b.rows) * width);
  b.params.resize(b.rows);
  b.histories.resize(b.rows);
  b.names.resize(b.rows);
  b.specs.resize(b.rows);
  std::mt19937 rng(rng_seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::uniform_int_distribution<int> any_id(0, width - 1), small_id(0, 49), limit_id(0, vocab_limit - 1);
  std::bernoulli_distribution coin(0.5);
  int mask_rows = 0;
  for (int r = 0; r < b.rows; ++r) {
    const Case& c = cases[(r / kinds) % cases.size()];
    const MaskKind kind = kMaskKinds[r % kinds];
    const int src = b.rows - 1 - r;
    float* row = b.logits.data() + static_cast<size_t>(src) * width;
    for (int i = 0; i < width; ++i) {
      const float x = nd(rng);
      row[i] = kind.mask == Mask::kHalfOverInf ? ((i % 10 < 3) ? -std::numeric_limits<float>::infinity() : 2.f * x)
                                               : 3.f * x;
    }
    if (r % 5 == 0 && vocab_limit > 7) row[7] = row[3] = 40.f;  // exact ties at the top
    if (r % 7 == 1) row[limit_id(rng)] = -0.0f;                 // -0 must equal +0
    if (width > vocab_limit) row[vocab_limit + (r % (width - vocab_limit))] = 1000.f;  // beyond the limit: ignored

    std::vector<uint64_t> m(b.mask_words, 0);
    auto allow = [&](int id) { m[id >> 6] |= uint64_t{1} << (id & 63); };
    switch (kind.mask) {
      case Mask::kNone: break;
      case Mask::kOne: allow(limit_id(rng)); break;
      case Mask::kFew:
        for (int k = 0; k < 5; ++k) allow(limit_id(rng));
        break;
      case Mask::kHalf:
      case Mask::kHalfOverInf:
        for (int i = 0; i < vocab_limit; ++i)
          if (coin(rng)) allow(i);
        break;
      case Mask::kLow:  // far below every other id, and a few ties among them
        for (int k = 0; k < 8; ++k) {
          const int id = limit_id(rng);
          allow(id);
          row[id] = k < 2 ? -85.f : -80.f + 0.5f * nd(rng);
        }
        break;
      case Mask::kAll:
        for (int i = 0; i < vocab_limit; ++i) allow(i);
        break;
    }
    if (kind.mask != Mask::kNone) {
      if (!c.params.logit_bias.empty() && kind.mask != Mask::kAll) {
        m[0] &= ~(uint64_t{1} << 5);  // the +100 stays out
        bool any = false;
        for (int i = 0; i < vocab_limit; ++i) any |= ((m[i >> 6] >> (i & 63)) & 1) != 0;
        if (!any) allow(11 % vocab_limit);
      }
      if (vocab_limit % 64 != 0) m.back() |= ~uint64_t{0} << (vocab_limit % 64);  // not ids: ignored
      b.masks.insert(b.masks.end(), m.begin(), m.end());
    }

    SamplingParams p = c.params;
    p.seed = 5000 + 6007ull * r;
    b.params[r] = p;
    b.names[r] = c.name;
    if (c.with_history) {
      std::vector<int32_t> prompt(30);
      for (auto& t : prompt) t = any_id(rng);
      prompt.push_back(3);
      prompt.push_back(5);
      b.histories[r].AddPrompt(prompt);
      for (int k = 0; k < 12; ++k) b.histories[r].AddOutput(small_id(rng));
    }
    b.specs[r] = MakeSampleRowSpec(p, &b.histories[r], 11 + 5 * r, src, kMaxTop, &b.pen, /*forced=*/-1,
                                   kind.mask == Mask::kNone ? -1 : mask_rows++);
  }
  b.pen.ids.push_back(0);  // never empty
  b.pen.all_counts.push_back(0);
  b.pen.output_counts.push_back(0);
  b.pen.bias.push_back(0.0f);
  return b;
}

const char* MaskName(int r) { return kMaskKinds[r % std::size(kMaskKinds)].name; }

bool Allowed(const uint64_t* mask, int id) { return mask == nullptr || ((mask[id >> 6] >> (id & 63)) & 1) != 0; }

// Log-probabilities within 1e-4, or the same infinity.
void ExpectLogprob(float got, float want, const std::string& where) {
  if (std::isinf(want) || std::isinf(got)) {
    EXPECT_EQ(got, want) << where;
  } else {
    EXPECT_NEAR(got, want, 1e-4) << where;
  }
}

class GpuSamplingMasked : public ::testing::TestWithParam<Shape> {};

TEST_P(GpuSamplingMasked, EqualsCpuSampler) {
  GLA_REQUIRE_CUDA_DEVICE();
  const Shape shape = GetParam();
  const Batch b = MakeMaskedBatch(shape.width, shape.vocab_limit, shape.seeds, 4321u + shape.width);
  DeviceBatch d(b);
  const GpuResult g = d.Run();

  int token_mismatches = 0, masked = 0;
  for (int r = 0; r < b.rows; ++r) {
    const std::string where = std::string(b.names[r]) + " / " + MaskName(r) + " row " + std::to_string(r);
    const uint64_t* mask = b.mask(r);
    masked += mask != nullptr ? 1 : 0;
    const SampledToken want = SampleToken(
        std::span<const float>(b.logits).subspan(static_cast<size_t>(b.specs[r].logits_row) * b.width, b.width),
        b.vocab_limit, b.params[r], b.histories[r], b.specs[r].step, mask);
    if (g.token[r] != want.token) ++token_mismatches;
    EXPECT_EQ(g.token[r], want.token) << where;
    ExpectLogprob(g.logprob[r], want.logprob, where);
    EXPECT_TRUE(g.token[r] >= 0 && g.token[r] < b.vocab_limit && Allowed(mask, g.token[r])) << where;
    const size_t n = std::min<size_t>(want.top.size(), kMaxTop);
    for (size_t j = 0; j < n; ++j) {
      const int32_t id = g.top_ids[r * kMaxTop + j];
      EXPECT_EQ(id, want.top[j].first) << where << " top " << j;
      ExpectLogprob(g.top_logprobs[r * kMaxTop + j], want.top[j].second, where + " top " + std::to_string(j));
      // Rows with allowed ids at -inf tie them with masked ones by id, as the CPU does.
      if (std::isfinite(want.top[j].second)) {
        EXPECT_TRUE(id >= 0 && id < b.vocab_limit && Allowed(mask, id)) << where;
      }
    }
    // No more alternatives than the mask allows: the next column is left alone (Clear's -1).
    if (n < kMaxTop) {
      EXPECT_EQ(g.top_ids[r * kMaxTop + n], -1) << where << ": " << n << " alternatives expected";
    }
  }
  std::printf("[ measure ] width %d, vocab_limit %d: %d rows (%d masked), %d token mismatches\n", b.width,
              b.vocab_limit, b.rows, masked, token_mismatches);

  // The unmasked rows are the same bits without any mask in the launch.
  Batch plain = b;
  plain.masks.clear();
  for (auto& spec : plain.specs) spec.mask_row = -1;
  DeviceBatch pd(plain);
  const GpuResult u = pd.Run();
  for (int r = 0; r < b.rows; ++r) {
    if (b.mask(r) != nullptr) continue;
    EXPECT_EQ(g.token[r], u.token[r]) << "row " << r;
    EXPECT_EQ(std::memcmp(&g.logprob[r], &u.logprob[r], sizeof(float)), 0) << "row " << r;
    EXPECT_EQ(std::memcmp(&g.top_ids[r * kMaxTop], &u.top_ids[r * kMaxTop], kMaxTop * sizeof(int32_t)), 0) << "row " << r;
    EXPECT_EQ(std::memcmp(&g.top_logprobs[r * kMaxTop], &u.top_logprobs[r * kMaxTop], kMaxTop * sizeof(float)), 0)
        << "row " << r;
  }

  // The same bits again.
  EXPECT_TRUE(d.Run() == g) << "a second run differs";
}

INSTANTIATE_TEST_SUITE_P(Vocab, GpuSamplingMasked,
                         ::testing::Values(Shape{512, 500, 6}, Shape{32000, 32000, 3}, Shape{32064, 32000, 2},
                                           Shape{131072, 128256, 1}),
                         ShapeName);

TEST(GpuSamplingMaskedArgs, RejectsBadMasks) {
  GLA_REQUIRE_CUDA_DEVICE();
  const Batch b = MakeMaskedBatch(512, 500, 1, 6u);
  DeviceBatch d(b);
  cuda::SampleArgs a = d.args();
  a.mask_words = MaskWords(b.vocab_limit) - 1;  // narrower than the vocabulary
  EXPECT_EQ(cuda::SampleRows(a, nullptr), cudaErrorInvalidValue);
  a = d.args();
  a.masks = nullptr;
  EXPECT_EQ(cuda::SampleRows(a, nullptr), cudaErrorInvalidValue);
  a = d.args();
  a.mask_rows = -1;
  EXPECT_EQ(cuda::SampleRows(a, nullptr), cudaErrorInvalidValue);
  GLA_CUDA_OK(cudaDeviceSynchronize());
}

// A spec naming a mask row beyond the uploaded ones samples nothing (token -1, logprob NaN)
// rather than an unmasked token; the other rows are sampled as ever.
TEST(GpuSamplingMaskedArgs, MaskRowOutOfRangeSamplesNothing) {
  GLA_REQUIRE_CUDA_DEVICE();
  Batch b = MakeMaskedBatch(512, 500, 1, 7u);
  const int rows_of_masks = static_cast<int>(b.masks.size() / b.mask_words);
  int bad = -1;
  for (int r = 0; r < b.rows && bad < 0; ++r)
    if (b.specs[r].mask_row >= 0) bad = r;
  ASSERT_GE(bad, 0);
  b.specs[bad].mask_row = rows_of_masks;
  DeviceBatch d(b);
  const GpuResult g = d.Run();
  EXPECT_EQ(g.token[bad], -1);
  EXPECT_TRUE(std::isnan(g.logprob[bad]));
  for (int r = 0; r < b.rows; ++r) {
    if (r == bad) continue;
    const SampledToken want = SampleToken(
        std::span<const float>(b.logits).subspan(static_cast<size_t>(b.specs[r].logits_row) * b.width, b.width),
        b.vocab_limit, b.params[r], b.histories[r], b.specs[r].step, b.mask(r));
    EXPECT_EQ(g.token[r], want.token) << "row " << r;
  }
}

// The engine's copy of a StepItem mask (no GPU needed): the ids below the limit, counted.
TEST(SampleRowSpecMask, CopyMaskRowKeepsTheIdsBelowTheLimit) {
  const int limit = 130;  // 3 words, 2 ids in the last
  std::vector<uint64_t> src(MaskWords(limit), ~uint64_t{0}), dst(src.size(), 0);
  ASSERT_EQ(src.size(), 3u);
  EXPECT_EQ(CopyMaskRow(src.data(), limit, dst.data()), limit);
  EXPECT_EQ(dst[2], uint64_t{3});
  src.assign(src.size(), 0);
  src[1] = uint64_t{1} << 7;           // id 71
  src[2] = (uint64_t{1} << 1) | (uint64_t{1} << 40);  // id 129, and 168 beyond the limit
  EXPECT_EQ(CopyMaskRow(src.data(), limit, dst.data()), 2);
  EXPECT_EQ(dst[0], 0u);
  EXPECT_EQ(dst[1], uint64_t{1} << 7);
  EXPECT_EQ(dst[2], uint64_t{1} << 1);
  SamplingParams p;
  PenaltyLists pen;
  EXPECT_EQ(MakeSampleRowSpec(p, nullptr, 0, 0, kMaxTop, &pen).mask_row, -1);
  EXPECT_EQ(MakeSampleRowSpec(p, nullptr, 0, 0, kMaxTop, &pen, -1, 4).mask_row, 4);
}

}  // namespace
}  // namespace gla
