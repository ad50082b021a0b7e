// CUDA / cuBLAS errors as absl::Status, and owning device / pinned-host allocations.
// Host-side engine code only (the .cu files stay free of Abseil).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace gla {

// Out-of-memory is RESOURCE_EXHAUSTED (a full GPU is a condition to report, not a crash).
inline absl::Status CudaStatus(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return absl::OkStatus();
  const std::string msg = absl::StrCat(what, ": ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")");
  return e == cudaErrorMemoryAllocation ? absl::ResourceExhaustedError(msg) : absl::InternalError(msg);
}

inline absl::Status CublasStatus(cublasStatus_t s, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  const std::string msg = absl::StrCat(what, ": cuBLAS status ", static_cast<int>(s));
  return s == CUBLAS_STATUS_ALLOC_FAILED ? absl::ResourceExhaustedError(msg) : absl::InternalError(msg);
}

#define GLA_CUDA_RETURN_IF_ERROR(expr)                                             \
  do {                                                                             \
    if (const cudaError_t gla_e_ = (expr); gla_e_ != cudaSuccess) return ::gla::CudaStatus(gla_e_, #expr); \
  } while (0)

#define GLA_CUBLAS_RETURN_IF_ERROR(expr)                                           \
  do {                                                                             \
    if (const cublasStatus_t gla_s_ = (expr); gla_s_ != CUBLAS_STATUS_SUCCESS)     \
      return ::gla::CublasStatus(gla_s_, #expr);                                   \
  } while (0)

// One CUDA allocation, freed on destruction; move-only. Device memory, or page-locked host memory
// (asynchronous copies need it).
enum class MemoryKind { kDevice, kPinnedHost };

template <MemoryKind kKind>
class CudaMemory {
 public:
  CudaMemory() = default;
  static absl::StatusOr<CudaMemory> Allocate(size_t bytes, const char* what) {
    CudaMemory m;
    if (bytes == 0) return m;
    const cudaError_t e = kKind == MemoryKind::kDevice ? cudaMalloc(&m.ptr_, bytes) : cudaMallocHost(&m.ptr_, bytes);
    if (e != cudaSuccess) {
      cudaGetLastError();  // clear it, so that later calls are not blamed for it
      m.ptr_ = nullptr;
      return CudaStatus(e, absl::StrCat("allocating ", bytes >> 20, " MiB of ",
                                        kKind == MemoryKind::kDevice ? "GPU" : "pinned host", " memory for ", what)
                               .c_str());
    }
    m.bytes_ = bytes;
    return m;
  }
  CudaMemory(CudaMemory&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  CudaMemory& operator=(CudaMemory&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  CudaMemory(const CudaMemory&) = delete;
  CudaMemory& operator=(const CudaMemory&) = delete;
  ~CudaMemory() {
    if (ptr_ == nullptr) return;
    if constexpr (kKind == MemoryKind::kDevice) cudaFree(ptr_);
    else cudaFreeHost(ptr_);
  }
  template <typename T = void>
  T* get() const { return static_cast<T*>(ptr_); }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

using DeviceMemory = CudaMemory<MemoryKind::kDevice>;
using PinnedMemory = CudaMemory<MemoryKind::kPinnedHost>;

}  // namespace gla
