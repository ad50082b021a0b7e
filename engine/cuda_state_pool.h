// The state pool in GPU memory: one contiguous array of slots, so the GLA kernels read and update a
// sequence's state in place from its slot index (no gather/scatter copies). States are fp32, or
// bf16 (--state_dtype bf16: twice the sequences in the same memory; the kernels widen on load and
// round on store, kernels/state_slots.h).
// One extra slot past capacity() is scratch: padding rows of a CUDA-graph decode bucket write
// there, never into a live sequence. Zero and Copy are asynchronous on the engine's stream, so
// they are ordered with the steps around them.
//
// Swaps between slots and page-locked host buffers (SaveToHost / LoadFromHost) run on a second
// stream, so a session or a preempted sequence moves while the next steps compute. Ordering,
// all on the GPU (the host never blocks):
//   - a copy starts after the engine-stream work queued before it (an event the copy stream
//     waits on): a save sees the state the steps left, a load lands after the slot was zeroed;
//   - a slot saved from is not handed out while its copy runs if another free slot exists, and
//     otherwise Zero makes the engine stream wait for that copy;
//   - a slot loaded into: OrderBeforeUse (the backend calls it for every slot of a step) makes
//     the engine stream wait for the load, unless it has already finished (the scheduler holds a
//     loading sequence back until HostState::Ready, so usually it has).
#pragma once

#include <cuda_runtime_api.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/cuda_util.h"
#include "engine/state_pool.h"
#include "kernels/state_slots.h"

namespace gla {

class PinnedRecycler;

class GpuStatePool : public StatePool {
 public:
  // RESOURCE_EXHAUSTED (naming the size) when the GPU cannot hold slots + 1 states.
  static absl::StatusOr<std::unique_ptr<GpuStatePool>> Create(int slots, int64_t state_values, StateDType dtype,
                                                              cudaStream_t stream);
  ~GpuStatePool() override;

  // Where the kernels find the slots (value strides: two bf16 values per word).
  CudaStateSlots device_slots() const {
    const bool bf16 = state_dtype() == StateDType::kBF16;
    return {storage_.get<void>(), state_words() * (bf16 ? 2 : 1), bf16};
  }
  int scratch_slot() const { return capacity(); }
  int64_t device_bytes() const { return static_cast<int64_t>(storage_.bytes()); }

  absl::Status Zero(int slot) override;
  absl::Status Copy(int src, int dst) override;
  absl::StatusOr<std::unique_ptr<HostState>> NewHostState() override;
  absl::Status SaveToHost(int slot, HostState& dst) override;
  absl::Status LoadFromHost(HostState& src, int slot) override;
  // Makes the engine stream wait for copies into or out of the slot that are still running.
  absl::Status OrderBeforeUse(int slot);

 protected:
  bool CopyPending(int slot) override;

 private:
  struct SlotCopies {
    cudaEvent_t out = nullptr, in = nullptr;  // the last save from / load into the slot
    bool out_pending = false, in_pending = false;
  };
  GpuStatePool(int slots, int64_t state_values, StateDType dtype, DeviceMemory storage, cudaStream_t stream)
      : StatePool(slots, state_values, dtype), storage_(std::move(storage)), stream_(stream), copies_(slots) {}
  float* word(int slot) const { return storage_.get<float>() + slot * state_words(); }
  absl::Status Init();
  // Makes the copy stream wait for the work queued on the engine stream so far.
  absl::Status CopyAfterEngine();

  DeviceMemory storage_;
  cudaStream_t stream_;
  cudaStream_t copy_stream_ = nullptr;
  cudaEvent_t engine_mark_ = nullptr;
  std::vector<SlotCopies> copies_;
  std::shared_ptr<PinnedRecycler> recycler_;  // page-locked state buffers for reuse
  std::thread prefill_;                        // fills recycler_ at start-up
  std::atomic<bool> stop_prefill_{false};
};

}  // namespace gla
