// Token sampling on the GPU without copying logits to the host: the rules of gla::SampleToken
// (engine/sampler.h) for a batch of rows in one kernel launch, one thread block per row.
//   * penalties (vLLM's conventions): repetition over prompt + output counts, presence and
//     frequency over output counts, in the CPU's float arithmetic;
//   * temperature <= 0: greedy, argmax with the lowest id on ties;
//   * otherwise the candidates in the CPU's order (logit descending, ties by ascending id), top-k,
//     probabilities exp(l/T - top) in double, min-p, top-p, then the first candidate whose running
//     mass passes u * sum with u = UniformFromCounter(seed, step);
//   * logprob = penalised logit - log-sum-exp of the penalised row (ids < vocab_limit), and the
//     top-n (id, logprob) in the same order;
//   * a row with a token mask (structured output): the ids it leaves out get logit -infinity
//     before the bias and the penalties, and the candidates (for top-k, top-p, min-p, the pick)
//     and the top-n are the first `allowed` of the CPU's order, `allowed` = the ids the mask
//     leaves (every id when it leaves none, as the CPU), so the normaliser is over those alone.
// No full sort: the sorted order is only ever needed where a cumulative count or mass crosses a
// target (k-th candidate, top-p cut, the pick), and that place is found by histogram refinement
// over the row's (logit, id) keys, with masses summed exactly in 128-bit fixed point (so results
// are the same bits on every run and independent of the batch; against the CPU's sequential
// double sums they differ only by the CPU's own rounding).
// Framework-free: plain structs, no host synchronisation or allocation in SampleRows, so it can be
// captured in a CUDA graph. Everything it reads and writes is device memory.
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(GLA_HAVE_CUDA)
#include <cuda_runtime_api.h>

namespace gla::cuda {

// One request's row. Same meaning as gla::SamplingParams plus where its inputs are; built from them
// by gla::MakeSampleRowSpec (engine/sample_row_spec.h), for the engine and the tests alike.
struct SampleRowSpec {
  int logits_row = 0;       // row of the logits matrix this request samples from
  float temperature = 0.f;  // <= 0: greedy
  int top_k = 0;            // <= 0 or >= vocab_limit: off
  float top_p = 1.f;        // >= 1: off
  float min_p = 0.f;        // <= 0: off
  float repetition_penalty = 1.f;
  float presence_penalty = 0.f;
  float frequency_penalty = 0.f;
  uint64_t seed = 0;
  uint64_t step = 0;  // index of the token being generated (the CPU sampler's `step`)
  int logprobs = -1;  // -1 or 0: none; n > 0: top n (capped at SampleArgs::max_top)
  // >= 0: not sampled but scored (prompt scoring): the row's token is this one, its logprob that of
  // this id (-infinity at or beyond vocab_limit); the top n as for a sampled row.
  int forced_token = -1;
  bool biased = false;  // the row's entries carry logit biases (SampleArgs::penalty_bias)
  // This row's entries in the penalty arrays, [penalty_begin, penalty_end): one entry per
  // distinct token id the sequence has seen (each id at most once per row).
  int penalty_begin = 0, penalty_end = 0;
  // >= 0: the row's token mask is row mask_row of SampleArgs::masks (structured output); -1: none.
  // Sampled rows only (a scored row would be scored under the masked row). A row naming a mask
  // row outside [0, SampleArgs::mask_rows) samples nothing: token -1, logprob NaN, no top-n.
  int mask_row = -1;
};

constexpr int kSampleMaxTop = 1024;      // the largest max_top SampleRows accepts (one per thread)
constexpr int kSampleMaxVocab = 1 << 20;  // the largest vocab_limit: 2^20 masses <= 1 fit the fixed point

struct SampleArgs {
  const float* logits = nullptr;  // fp32, row r of the matrix at logits + r * logits_stride
  int64_t logits_stride = 0;      // >= vocab_limit
  int rows = 0;                   // requests (thread blocks); any number
  int vocab_limit = 0;            // candidates are ids [0, vocab_limit); 1 .. kSampleMaxVocab
  const SampleRowSpec* specs = nullptr;  // [rows]
  // Penalty entries, concatenated per row (ranges in the specs): the id, its count in prompt +
  // output (repetition penalty when > 0), its count in the output (presence / frequency when > 0).
  // May be null when no row has entries.
  const int32_t* penalty_ids = nullptr;
  const int32_t* penalty_all_counts = nullptr;
  const int32_t* penalty_output_counts = nullptr;
  // Per entry, OpenAI's logit_bias (0 for an id with none), added before the penalties in rows
  // with `biased`; may be null when no row is biased.
  const float* penalty_bias = nullptr;
  // Token masks, mask_rows rows of mask_words words (>= (vocab_limit + 63) / 64): bit t of word
  // t / 64 of a row set = id t may be sampled; bits at or beyond vocab_limit are ignored. May be
  // null (and mask_rows 0) when no row has a mask.
  const uint64_t* masks = nullptr;
  int mask_rows = 0;
  int mask_words = 0;
  int max_top = 0;                    // columns of out_top_*, 0 .. kSampleMaxTop
  int32_t* out_token = nullptr;       // [rows]
  float* out_logprob = nullptr;       // [rows]
  // [rows, max_top]: the first min(logprobs, max_top, allowed) columns of a row are written (allowed:
  // the ids its mask leaves, or vocab_limit), the rest are left alone.
  int32_t* out_top_ids = nullptr;
  float* out_top_logprobs = nullptr;
  void* workspace = nullptr;          // SampleWorkspaceBytes(rows, vocab_limit) bytes
  size_t workspace_bytes = 0;
};

// Device workspace SampleRows needs for up to `rows` rows of `vocab` candidates on the current
// device: 0 while a penalised row fits in a block's shared memory (vocab up to ~45k on H100/H200),
// rows * vocab * 4 bytes beyond that.
size_t SampleWorkspaceBytes(int rows, int vocab);

// Enqueues the sampling of every row on `stream`: one launch, no synchronisation, no allocation.
// cudaErrorInvalidValue (nothing launched) for a bad shape, a missing pointer, a workspace
// smaller than needed or masks narrower than the vocabulary. (The specs are device memory: their
// mask rows are checked by the kernel, see SampleRowSpec::mask_row.)
cudaError_t SampleRows(const SampleArgs& args, cudaStream_t stream);

}  // namespace gla::cuda
#endif
