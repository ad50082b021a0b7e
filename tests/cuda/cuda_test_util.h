// Helpers for the CUDA tests: they run on the GPU machine and skip, saying why, anywhere else.
#pragma once

#include <cuda_runtime.h>  // the typed cudaMalloc template
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

namespace gla::testing {

inline bool HaveCudaDevice(std::string* why) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    *why = cudaGetErrorString(e);
    return false;
  }
  if (n == 0) *why = "no CUDA device";
  return n > 0;
}

// ||out - ref|| / ||ref|| over n values (infinite when out has a non-finite value).
inline double RelErr(const float* out, const float* ref, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(out[i])) return INFINITY;
    num += (double(out[i]) - ref[i]) * (double(out[i]) - ref[i]);
    den += double(ref[i]) * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

// Device buffers freed on every exit path (ASSERTs return early).
struct DeviceBuffers {
  std::vector<void*> ptrs;
  ~DeviceBuffers() {
    for (void* p : ptrs) cudaFree(p);
  }
  template <typename T>
  cudaError_t Upload(const std::vector<T>& host, T** out) {
    *out = nullptr;
    void* d = nullptr;
    cudaError_t e = cudaMalloc(&d, std::max<size_t>(host.size(), 1) * sizeof(T));
    if (e != cudaSuccess) return e;
    ptrs.push_back(d);
    *out = static_cast<T*>(d);
    return host.empty() ? cudaSuccess : cudaMemcpy(d, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice);
  }
  cudaError_t Alloc(size_t bytes, void** out) {
    cudaError_t e = cudaMalloc(out, std::max<size_t>(bytes, 1));
    if (e == cudaSuccess) ptrs.push_back(*out);
    return e;
  }
};

// Realistic forget gates: logsigmoid(x) / 16 with x ~ N(0, 1), plus ~1% strongly negative ones
// (down to -30: exp underflows inside a sub-chunk).
inline std::vector<float> RandomGates(size_t n, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.f, 1.f);
  std::uniform_real_distribution<float> u01(0.f, 1.f), strong(2.f, 30.f);
  std::vector<float> g(n);
  for (auto& x : g) {
    const float z = normal(rng);
    x = (std::min(z, 0.f) - std::log1p(std::exp(-std::fabs(z)))) / 16.f;
    if (u01(rng) < 0.01f) x = -strong(rng);
  }
  return g;
}

}  // namespace gla::testing

#define GLA_REQUIRE_CUDA_DEVICE()                                                                          \
  do {                                                                                                     \
    std::string gla_why_;                                                                                  \
    if (!::gla::testing::HaveCudaDevice(&gla_why_))                                                        \
      GTEST_SKIP() << "CUDA test skipped: no usable GPU here (" << gla_why_                                \
                   << "); CUDA tests run on the GPU machine through deploy/gpu-check.sh";                  \
  } while (0)

#define GLA_CUDA_OK(expr)                                      \
  do {                                                         \
    const cudaError_t gla_err_ = (expr);                       \
    ASSERT_EQ(gla_err_, cudaSuccess) << #expr << ": " << cudaGetErrorString(gla_err_); \
  } while (0)
