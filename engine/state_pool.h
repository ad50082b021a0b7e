// A fixed set of per-sequence state slots, allocated up front. Acquire/Release are O(1) (a free
// stack); the storage lives in host memory (HostStatePool, CPU backend) or GPU memory
// (GpuStatePool, CUDA backend) behind the same interface. Not thread-safe: the scheduler thread
// owns it.
//
// A state is state_words() 4-byte words in the pool's dtype (engine/state_storage.h): fp32 values,
// or pairs of bf16 values with --state_dtype bf16. Every copy below moves words and never looks
// inside them; the backend's model reads and writes the values.
//
// States also live outside the slots (sessions at rest, preempted sequences, the prefix-state
// cache: issue 8) in HostState buffers. Moving a state between a slot and a HostState is
// asynchronous on the GPU (a copy stream, so swaps overlap with the steps): the pool orders
// every copy against the steps that read or write the slot, and HostState::Ready says when the
// host side of a copy has finished.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/state_storage.h"

namespace gla {

// One state in host memory (page-locked for the GPU pool).
class HostState {
 public:
  virtual ~HostState() = default;  // waits for a copy still in flight
  int64_t words() const { return words_; }
  // The state's words (StatePool's comment says what they hold). Valid once Wait() has returned
  // OK (a copy out of a slot may still be writing it).
  virtual float* data() = 0;
  // Whether the last copy into or out of this buffer has finished (always true on the CPU).
  virtual bool Ready() = 0;
  virtual absl::Status Wait() = 0;

 protected:
  explicit HostState(int64_t words) : words_(words) {}
  int64_t words_;
};

class StatePool {
 public:
  // A state of `state_values` values (StateLayout::floats()), kept in `dtype`.
  StatePool(int slots, int64_t state_values, StateDType dtype);
  virtual ~StatePool() = default;

  int capacity() const { return static_cast<int>(used_.size()); }
  int in_use() const { return capacity() - static_cast<int>(free_.size()); }
  int64_t state_values() const { return state_values_; }
  int64_t state_words() const { return state_words_; }
  int64_t state_bytes() const { return state_words_ * static_cast<int64_t>(sizeof(float)); }
  StateDType state_dtype() const { return dtype_; }

  // A free slot, its state zeroed (an empty past); nullopt when all are taken.
  std::optional<int> Acquire();
  void Release(int slot);

  virtual absl::Status Zero(int slot) = 0;
  virtual absl::Status Copy(int src, int dst) = 0;

  // A host buffer for one state (its contents are undefined until a copy or the caller writes it).
  // RESOURCE_EXHAUSTED when the host cannot give the memory.
  virtual absl::StatusOr<std::unique_ptr<HostState>> NewHostState() = 0;
  // Copies the slot's state (as the steps already run or queued leave it) into `dst`. The slot
  // may be released or written by later steps at once; dst.Ready() says when the copy is done.
  virtual absl::Status SaveToHost(int slot, HostState& dst) = 0;
  // Copies `src` into the slot. The steps after it see the copied state; until src.Ready() a step
  // that uses the slot may wait for the copy (the scheduler holds such a sequence back a step).
  // `src` must outlive the copy (its destructor waits).
  virtual absl::Status LoadFromHost(HostState& src, int slot) = 0;

 protected:
  // Whether a copy out of the slot may still be reading it (the GPU pool's copy stream): Acquire
  // hands such a slot out only when no other free slot is left.
  virtual bool CopyPending(int slot) { (void)slot; return false; }
  absl::Status CheckSlot(int slot, const char* what) const;

  int64_t state_values_, state_words_;
  StateDType dtype_;

 private:
  std::vector<int> free_;
  std::vector<bool> used_;
};

class HostStatePool : public StatePool {
 public:
  HostStatePool(int slots, int64_t state_values, StateDType dtype);
  float* data(int slot) { return storage_.data() + slot * state_words_; }
  absl::Status Zero(int slot) override;
  absl::Status Copy(int src, int dst) override;
  absl::StatusOr<std::unique_ptr<HostState>> NewHostState() override;
  absl::Status SaveToHost(int slot, HostState& dst) override;
  absl::Status LoadFromHost(HostState& src, int slot) override;

 private:
  std::vector<float> storage_;
};

}  // namespace gla
