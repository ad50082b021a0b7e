// Where the GPU kernels find sequences' recurrent states: a state pool's slots (engine's
// GpuStatePool), one contiguous array, each slot the same number of values.
//
// The values are fp32, or bf16 when `bf16` is set (--state_dtype bf16, issue 23: half the bytes a
// decode step moves per sequence). Either way a kernel computes in fp32: it widens each bf16 value
// as it loads it and rounds to nearest-even (as engine/state_storage.h's PackBf16State) only when
// it stores the state back at the end of its step. So a bf16 state is rounded once per step, the
// same points at which the CPU backend's bf16 pool rounds.
#pragma once

#include <cstdint>

#include "kernels/host_device.h"

namespace gla {

struct CudaStateSlots {
  void* base = nullptr;     // slot 0's first value (device memory)
  int64_t slot_stride = 0;  // values (not bytes) from one slot to the next
  bool bf16 = false;

  // The same slots seen `values` further in (a layer's matrix state, a conv tail).
  CudaStateSlots At(int64_t values) const {
    CudaStateSlots s = *this;
    s.base = static_cast<char*>(base) + values * (bf16 ? 2 : 4);
    return s;
  }
  // Whether groups of 4 values starting at multiples of 4 are 16-byte (fp32) / 8-byte (bf16)
  // aligned in every slot: what the vectorized kernels (decode, recurrent prefill) need.
  bool FourValueAligned() const {
    return base != nullptr && reinterpret_cast<uintptr_t>(base) % (bf16 ? 8 : 16) == 0 && slot_stride % 4 == 0;
  }
  // The same for groups of 8 values (16-byte bf16 accesses).
  bool EightValueAligned() const {
    return base != nullptr && reinterpret_cast<uintptr_t>(base) % (bf16 ? 16 : 32) == 0 && slot_stride % 8 == 0;
  }
  // Value index of `offset` inside slot `slot`.
  GLA_HOST_DEVICE int64_t Index(int64_t slot, int64_t offset) const { return slot * slot_stride + offset; }
};

}  // namespace gla
