// A fixed set of per-sequence state slots, allocated up front. Acquire/Release are O(1) (a free
// stack); the storage lives in host memory (HostStatePool, CPU backend) or GPU memory (CUDA
// backend, issue 4) behind the same interface. Not thread-safe: the scheduler thread owns it.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/status.h"

namespace gla {

class StatePool {
 public:
  StatePool(int slots, int64_t state_floats);
  virtual ~StatePool() = default;

  int capacity() const { return static_cast<int>(free_.capacity()); }
  int in_use() const { return capacity() - static_cast<int>(free_.size()); }
  int64_t state_bytes() const { return state_floats_ * static_cast<int64_t>(sizeof(float)); }

  // A free slot, its state zeroed (an empty past); nullopt when all are taken.
  std::optional<int> Acquire();
  void Release(int slot);

  virtual absl::Status Zero(int slot) = 0;
  virtual absl::Status Copy(int src, int dst) = 0;

 protected:
  int64_t state_floats_;

 private:
  std::vector<int> free_;
  std::vector<bool> used_;
};

class HostStatePool : public StatePool {
 public:
  HostStatePool(int slots, int64_t state_floats);
  float* data(int slot) { return storage_.data() + slot * state_floats_; }
  absl::Status Zero(int slot) override;
  absl::Status Copy(int src, int dst) override;

 private:
  std::vector<float> storage_;
};

}  // namespace gla
