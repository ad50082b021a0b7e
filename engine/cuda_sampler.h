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
};

class CudaSampler {
 public:
  static absl::StatusOr<std::unique_ptr<CudaSampler>> Create(int max_rows, int vocab, cudaStream_t stream);

  // Samples each request's row of logits (device, [.., stride]); waits for the result.
  absl::Status Sample(const float* logits, int64_t stride, int vocab_limit, std::span<const SampleRequest> requests,
                      std::vector<SampledToken>* out);
  int64_t device_bytes() const;

 private:
  CudaSampler() = default;
  int max_rows_ = 0, vocab_ = 0;
  cudaStream_t stream_ = nullptr;
  DeviceMemory device_;           // workspace + outputs
  PinnedMemory host_;             // outputs, copied back
  DeviceMemory inputs_device_;    // row specs + penalty lists, grown on demand
  PinnedMemory inputs_host_;
  size_t workspace_bytes_ = 0;
};

}  // namespace gla
