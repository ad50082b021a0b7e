// Token sampling on the GPU, the same rules as gla::SampleToken (engine/sampler.h, its reference in
// tests/cuda): penalties (repetition over prompt + output counts, presence / frequency over output
// counts), greedy = argmax with the lowest id on ties, otherwise candidates sorted by logit (ties
// by id), top-k, probabilities exp(l/T - top) in double, min-p, top-p, then u * sum with
// u = UniformFromCounter(seed, step). Logits stay on the device; only tokens, their
// log-probabilities and the top-n come back. Framework-free.
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(GLA_HAVE_CUDA)
#include <cuda_runtime_api.h>

namespace gla::cuda {

struct SampleRowSpec {
  int logits_row = 0;  // row of the logits matrix this request samples from
  float temperature = 0.f;
  int top_k = 0;
  float top_p = 1.f, min_p = 0.f;
  float repetition_penalty = 1.f, presence_penalty = 0.f, frequency_penalty = 0.f;
  unsigned long long seed = 0, step = 0;
  int logprobs = -1;                     // -1: none; n >= 0: the chosen token + top n
  int penalty_begin = 0, penalty_end = 0;  // this row's entries in the penalty arrays
};

struct SampleArgs {
  const float* logits = nullptr;  // [.., logits_stride] fp32, device
  int64_t logits_stride = 0;
  int vocab = 0;  // candidates are ids [0, vocab) (the tokenizer's vocabulary may be smaller than the row)
  int rows = 0;
  const SampleRowSpec* specs = nullptr;  // [rows], device
  // Per distinct id a sequence has seen: the id, its count in prompt + output, its count in the
  // output (device; rows' ranges given by the specs).
  const int32_t* penalty_ids = nullptr;
  const int32_t* penalty_all = nullptr;
  const int32_t* penalty_out = nullptr;
  bool needs_sort = false;  // some row samples (temperature > 0) or wants logprobs > 0
  int max_top = 0;          // columns of out_top_*
  int32_t* out_token = nullptr;  // [rows]
  float* out_logprob = nullptr;  // [rows]
  int32_t* out_top_ids = nullptr;  // [rows, max_top]
  float* out_top_logprobs = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
};

// Workspace for up to `rows` rows of `vocab` candidates.
size_t SampleWorkspaceBytes(int rows, int vocab);

// Enqueues the sampling of every row; no host synchronisation, no allocation.
// cudaErrorInvalidValue (no launch) for a bad shape or a workspace smaller than needed.
cudaError_t SampleRows(const SampleArgs& args, cudaStream_t stream);

}  // namespace gla::cuda
#endif
