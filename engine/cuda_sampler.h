// Token sampling on the GPU for the CUDA backend: the logits stay on the device; only the chosen
// tokens, their log-probabilities and the requested top-n come back. Same semantics as
// SampleToken (engine/sampler.h), which is its reference in tests/cuda; the kernel is
// kernels/sampling.h.
#pragma once

#include <cuda_runtime_api.h>

#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/cuda_util.h"
#include "engine/sampler.h"

namespace gla {

struct SampleRequest {
  int row = 0;  // row of the logits matrix
  const SamplingParams* params = nullptr;
  const TokenHistory* history = nullptr;
  uint64_t step = 0;
  int32_t forced = -1;  // >= 0: score this token instead of sampling (prompt scoring)
  // Structured output: StepItem::allowed (vocab_limit bits, at least one set); null: any id.
  // Sampled rows only (forced < 0).
  const uint64_t* allowed = nullptr;
};

class CudaSampler {
 public:
  // Device memory for up to max_rows rows of `vocab` ids, token masks included.
  static absl::StatusOr<std::unique_ptr<CudaSampler>> Create(int max_rows, int vocab, cudaStream_t stream);

  // Samples each request's row of logits (device, [.., stride]); waits for the result. Masked
  // requests' masks go up in one copy with the rest of the call's inputs.
  absl::Status Sample(const float* logits, int64_t stride, int vocab_limit, std::span<const SampleRequest> requests,
                      std::vector<SampledToken>* out);
  int64_t device_bytes() const;

 private:
  CudaSampler() = default;
  int max_rows_ = 0, vocab_ = 0;
  cudaStream_t stream_ = nullptr;
  DeviceMemory device_;           // workspace + outputs
  PinnedMemory host_;             // outputs, copied back
  // Row specs + penalty lists (grown on demand) + token masks (room for max_rows of them from
  // the start: a masked step never grows them).
  DeviceMemory inputs_device_;
  PinnedMemory inputs_host_;
  size_t mask_bytes_ = 0;  // max_rows masks of (vocab + 63) / 64 words
  size_t workspace_bytes_ = 0;
};

}  // namespace gla
