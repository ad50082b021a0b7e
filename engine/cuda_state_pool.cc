#include "engine/cuda_state_pool.h"

namespace gla {

absl::StatusOr<std::unique_ptr<GpuStatePool>> GpuStatePool::Create(int slots, int64_t state_floats,
                                                                   cudaStream_t stream) {
  if (slots < 1) return absl::InvalidArgumentError("the state pool needs at least 1 slot");
  const size_t bytes = static_cast<size_t>(slots + 1) * static_cast<size_t>(state_floats) * sizeof(float);
  auto storage = DeviceMemory::Allocate(bytes, absl::StrCat("the state pool (", slots, " slots + 1 scratch)").c_str());
  if (!storage.ok()) return storage.status();
  GLA_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(storage->get(), 0, bytes, stream));
  return std::unique_ptr<GpuStatePool>(new GpuStatePool(slots, state_floats, std::move(*storage), stream));
}

absl::Status GpuStatePool::CheckSlot(int slot, const char* what) const {
  if (slot < 0 || slot >= capacity()) return absl::OutOfRangeError(absl::StrCat(what, ": slot ", slot, " of ", capacity()));
  return absl::OkStatus();
}

absl::Status GpuStatePool::Zero(int slot) {
  if (auto s = CheckSlot(slot, "zero"); !s.ok()) return s;
  GLA_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(base() + slot * state_floats_, 0, state_bytes(), stream_));
  return absl::OkStatus();
}

absl::Status GpuStatePool::Copy(int src, int dst) {
  if (auto s = CheckSlot(src, "copy from"); !s.ok()) return s;
  if (auto s = CheckSlot(dst, "copy to"); !s.ok()) return s;
  if (src == dst) return absl::OkStatus();
  GLA_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(base() + dst * state_floats_, base() + src * state_floats_, state_bytes(),
                                           cudaMemcpyDeviceToDevice, stream_));
  return absl::OkStatus();
}

absl::Status GpuStatePool::Download(int slot, float* host) const {
  if (auto s = CheckSlot(slot, "download"); !s.ok()) return s;
  GLA_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(host, base() + slot * state_floats_, state_bytes(), cudaMemcpyDeviceToHost, stream_));
  GLA_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  return absl::OkStatus();
}

absl::Status GpuStatePool::Upload(int slot, const float* host) {
  if (auto s = CheckSlot(slot, "upload"); !s.ok()) return s;
  GLA_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(base() + slot * state_floats_, host, state_bytes(), cudaMemcpyHostToDevice, stream_));
  GLA_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  return absl::OkStatus();
}

}  // namespace gla
