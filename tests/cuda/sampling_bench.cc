// Times GPU token sampling (kernels/sampling.h) per call: rows x vocabulary x mode, median over
// trials of CUDA events around back-to-back calls on one stream. Logits are LM-like (N(0, 2.5)
// plus a few peaked ids per row); sampled rows carry 40 penalty entries. Row specs and penalty
// lists come from MakeSampleRowSpec (engine/sample_row_spec.h), as in the engine. The masked
// modes (structured output) give every row a token mask: half the ids, or 20 of them.
//
// The full-sort sampler this kernel replaced (a stable segmented cub sort of every row, removed
// since) took, on the H100 with this benchmark's inputs: 32 rows x 32000, top-p 0.95 T 0.8:
// 262.2 us against 84.5 us here; 1 row x 128256: 822 us against 270 us; 2.8-3.5x this kernel's
// time across the shapes up to 32 rows.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <random>
#include <vector>

#include "engine/sample_row_spec.h"
#include "engine/sampler.h"
#include "kernels/sampling.h"
#include "tests/cuda/bench_report.h"
#include "tests/cuda/bench_util.h"
#include "tests/cuda/device_ceilings.h"

namespace {

enum class Mode {
  kGreedy,
  kGreedyLogprobs,
  kTopP,
  kTopKTopP,
  kTemperature,
  kMixed,
  kTopPLogprobs,
  kTopPMaskHalf,
  kTopPMaskFew,
  kGreedyMaskFew
};
const char* Name(Mode m) {
  switch (m) {
    case Mode::kGreedy: return "greedy";
    case Mode::kGreedyLogprobs: return "greedy + logprobs 5";
    case Mode::kTopP: return "top-p 0.95, T 0.8";
    case Mode::kTopKTopP: return "top-k 50 + top-p 0.9";
    case Mode::kTemperature: return "temperature 1.0 only";
    case Mode::kMixed: return "half greedy, half top-p";
    case Mode::kTopPLogprobs: return "top-p + logprobs 20";
    case Mode::kTopPMaskHalf: return "top-p, mask of half";
    case Mode::kTopPMaskFew: return "top-p, mask of 20 ids";
    case Mode::kGreedyMaskFew: return "greedy, mask of 20 ids";
  }
  return "?";
}

float Median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

template <class F>
float TimePerCallUs(F&& call, cudaStream_t stream) {
  cudaEvent_t e0, e1;
  CHECK(cudaEventCreate(&e0));
  CHECK(cudaEventCreate(&e1));
  for (int i = 0; i < 3; ++i) call();
  CHECK(cudaStreamSynchronize(stream));
  constexpr int kCalls = 10;
  std::vector<float> us;
  for (int t = 0; t < 15; ++t) {
    CHECK(cudaEventRecord(e0, stream));
    for (int i = 0; i < kCalls; ++i) call();
    CHECK(cudaEventRecord(e1, stream));
    CHECK(cudaEventSynchronize(e1));
    float ms = 0.f;
    CHECK(cudaEventElapsedTime(&ms, e0, e1));
    us.push_back(ms * 1000.f / kCalls);
  }
  CHECK(cudaEventDestroy(e0));
  CHECK(cudaEventDestroy(e1));
  return Median(us);
}

}  // namespace

int main() {
  gla::bench::BenchReport report("sampling", gla::bench::MeasureDeviceCeilings());
  report.PrintHeader();
  // Floor: the logits read once (fp32) at the copy bandwidth; a launch (~2-4 us) dominates small calls.
  std::printf("%5s %7s  %-26s %12s %12s %9s\n", "rows", "vocab", "mode", "us/call", "floor us", "of floor");
  cudaStream_t stream;
  CHECK(cudaStreamCreate(&stream));
  constexpr int kMaxTop = 32;  // as the engine (engine/cuda_sampler.cc)
  for (const int vocab : {32000, 128256}) {
    for (const int rows : {1, 32, 256}) {
      std::mt19937 rng(rows * 7 + vocab);
      std::normal_distribution<float> nd(0.f, 2.5f);
      std::uniform_int_distribution<int> id(0, vocab - 1);
      std::vector<float> logits(static_cast<size_t>(rows) * vocab);
      for (auto& x : logits) x = nd(rng);
      for (int r = 0; r < rows; ++r)
        for (int j = 0; j < 5; ++j) logits[static_cast<size_t>(r) * vocab + id(rng)] += 6.f + 2.f * j;
      // 40 distinct ids a row has seen: 1 to 3 times in all, every other one once in the output.
      std::vector<gla::TokenHistory> histories(rows);
      for (int r = 0; r < rows; ++r)
        for (int j = 0; j < 40; ++j) {
          const int32_t t = (r * 977 + j * 131) % vocab;
          const int in_output = j % 2;
          for (int n = 0; n < 1 + j % 3 - in_output; ++n) histories[r].AddPrompt({&t, 1});
          if (in_output) histories[r].AddOutput(t);
        }
      float* d_logits;
      int32_t *d_token, *d_top_ids;
      float *d_lp, *d_top_lp;
      CHECK(cudaMalloc(&d_logits, logits.size() * 4));
      CHECK(cudaMemcpy(d_logits, logits.data(), logits.size() * 4, cudaMemcpyHostToDevice));
      CHECK(cudaMalloc(&d_token, rows * 4));
      CHECK(cudaMalloc(&d_lp, rows * 4));
      CHECK(cudaMalloc(&d_top_ids, rows * kMaxTop * 4));
      CHECK(cudaMalloc(&d_top_lp, rows * kMaxTop * 4));
      const size_t ws_bytes = gla::cuda::SampleWorkspaceBytes(rows, vocab);
      void* ws = nullptr;
      if (ws_bytes > 0) CHECK(cudaMalloc(&ws, ws_bytes));
      gla::cuda::SampleRowSpec* d_specs;
      CHECK(cudaMalloc(&d_specs, rows * sizeof(gla::cuda::SampleRowSpec)));
      // Sized for every mode's lists (the most: 40 entries a row).
      const size_t max_entries = static_cast<size_t>(rows) * 40;
      int32_t *d_ids, *d_all, *d_out;
      CHECK(cudaMalloc(&d_ids, max_entries * 4));
      CHECK(cudaMalloc(&d_all, max_entries * 4));
      CHECK(cudaMalloc(&d_out, max_entries * 4));
      const int words = gla::MaskWords(vocab);
      uint64_t* d_masks;
      CHECK(cudaMalloc(&d_masks, static_cast<size_t>(rows) * words * 8));

      for (const Mode mode : {Mode::kGreedy, Mode::kGreedyLogprobs, Mode::kTopP, Mode::kTopKTopP, Mode::kTemperature,
                              Mode::kMixed, Mode::kTopPLogprobs, Mode::kTopPMaskHalf, Mode::kTopPMaskFew,
                              Mode::kGreedyMaskFew}) {
        const bool masked = mode == Mode::kTopPMaskHalf || mode == Mode::kTopPMaskFew || mode == Mode::kGreedyMaskFew;
        if (masked) {
          std::vector<uint64_t> masks(static_cast<size_t>(rows) * words, 0);
          for (int r = 0; r < rows; ++r) {
            uint64_t* m = masks.data() + static_cast<size_t>(r) * words;
            if (mode == Mode::kTopPMaskHalf) {
              for (int w = 0; w < words; ++w) m[w] = (static_cast<uint64_t>(rng()) << 32) ^ rng();
            } else {
              for (int j = 0; j < 20; ++j) {
                const int t = id(rng);
                m[t >> 6] |= uint64_t{1} << (t & 63);
              }
            }
          }
          CHECK(cudaMemcpy(d_masks, masks.data(), masks.size() * 8, cudaMemcpyHostToDevice));
        }
        std::vector<gla::cuda::SampleRowSpec> specs(rows);
        gla::PenaltyLists pen;
        for (int r = 0; r < rows; ++r) {
          gla::SamplingParams p;
          p.seed = 42 + r;
          const bool sampled =
              mode != Mode::kGreedy && mode != Mode::kGreedyLogprobs && mode != Mode::kGreedyMaskFew &&
              !(mode == Mode::kMixed && r % 2 == 0);
          if (sampled) {
            p.temperature = mode == Mode::kTemperature ? 1.0f : mode == Mode::kTopKTopP ? 0.7f : 0.8f;
            p.top_p = mode == Mode::kTemperature ? 1.0f : mode == Mode::kTopKTopP ? 0.9f : 0.95f;
            p.top_k = mode == Mode::kTopKTopP ? 50 : 0;
            p.repetition_penalty = 1.1f;
            p.presence_penalty = 0.2f;
            p.frequency_penalty = 0.1f;
          }
          p.logprobs = mode == Mode::kGreedyLogprobs ? 5 : mode == Mode::kTopPLogprobs ? 20 : -1;
          specs[r] = gla::MakeSampleRowSpec(p, &histories[r], /*step=*/100, /*logits_row=*/r, kMaxTop, &pen,
                                            /*forced=*/-1, masked ? r : -1);
        }
        CHECK(cudaMemcpy(d_specs, specs.data(), rows * sizeof(specs[0]), cudaMemcpyHostToDevice));
        if (!pen.ids.empty()) {
          CHECK(cudaMemcpy(d_ids, pen.ids.data(), pen.ids.size() * 4, cudaMemcpyHostToDevice));
          CHECK(cudaMemcpy(d_all, pen.all_counts.data(), pen.ids.size() * 4, cudaMemcpyHostToDevice));
          CHECK(cudaMemcpy(d_out, pen.output_counts.data(), pen.ids.size() * 4, cudaMemcpyHostToDevice));
        }

        gla::cuda::SampleArgs a;
        a.logits = d_logits;
        a.logits_stride = vocab;
        a.rows = rows;
        a.vocab_limit = vocab;
        a.specs = d_specs;
        a.penalty_ids = d_ids;
        a.penalty_all_counts = d_all;
        a.penalty_output_counts = d_out;
        if (masked) {
          a.masks = d_masks;
          a.mask_rows = rows;
          a.mask_words = words;
        }
        a.max_top = kMaxTop;
        a.out_token = d_token;
        a.out_logprob = d_lp;
        a.out_top_ids = d_top_ids;
        a.out_top_logprobs = d_top_lp;
        a.workspace = ws;
        a.workspace_bytes = ws_bytes;
        const float us = TimePerCallUs([&] { CHECK(gla::cuda::SampleRows(a, stream)); }, stream);
        const double floor_us = report.ceilings().BytesSeconds(4.0 * rows * vocab) * 1e6;
        std::printf("%5d %7d  %-26s %12.1f %12.2f %8.1f%%\n", rows, vocab, Name(mode), us, floor_us, 100.0 * floor_us / us);
        report.AddRow().Num("rows", rows).Num("vocab", vocab).Str("mode", Name(mode)).Num("us", us).Num("floor_us", floor_us);
      }
      for (void* p : {static_cast<void*>(d_logits), static_cast<void*>(d_ids), static_cast<void*>(d_all),
                      static_cast<void*>(d_out), static_cast<void*>(d_token), static_cast<void*>(d_lp),
                      static_cast<void*>(d_top_ids), static_cast<void*>(d_top_lp), static_cast<void*>(d_specs),
                      static_cast<void*>(d_masks)})
        CHECK(cudaFree(p));
      if (ws != nullptr) CHECK(cudaFree(ws));
    }
  }
  CHECK(cudaStreamDestroy(stream));
  return report.WriteJsonIfAsked() ? 0 : 1;
}
