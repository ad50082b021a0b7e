// The state pool in GPU memory: fp32 states, one contiguous array of slots, so the GLA kernels
// read and update a sequence's state in place from its slot index (no gather/scatter copies).
// One extra slot past capacity() is scratch: padding rows of a CUDA-graph decode bucket write
// there, never into a live sequence. Zero and Copy are asynchronous on the engine's stream, so
// they are ordered with the steps around them.
#pragma once

#include <cuda_runtime_api.h>

#include <memory>

#include "absl/status/statusor.h"
#include "engine/cuda_util.h"
#include "engine/state_pool.h"

namespace gla {

class GpuStatePool : public StatePool {
 public:
  // RESOURCE_EXHAUSTED (naming the size) when the GPU cannot hold slots + 1 states.
  static absl::StatusOr<std::unique_ptr<GpuStatePool>> Create(int slots, int64_t state_floats, cudaStream_t stream);

  float* base() const { return storage_.get<float>(); }
  int64_t slot_stride() const { return state_floats_; }
  int scratch_slot() const { return capacity(); }
  int64_t device_bytes() const { return static_cast<int64_t>(storage_.bytes()); }

  absl::Status Zero(int slot) override;
  absl::Status Copy(int src, int dst) override;
  // Copies a slot's state to or from the host (tests, and session save/restore later).
  absl::Status Download(int slot, float* host) const;
  absl::Status Upload(int slot, const float* host);

 private:
  GpuStatePool(int slots, int64_t state_floats, DeviceMemory storage, cudaStream_t stream)
      : StatePool(slots, state_floats), storage_(std::move(storage)), stream_(stream) {}
  absl::Status CheckSlot(int slot, const char* what) const;

  DeviceMemory storage_;
  cudaStream_t stream_;
};

}  // namespace gla
