// Helpers for the CUDA tests: they run on the GPU machine and skip, saying why, anywhere else.
#pragma once

#include <cuda_runtime.h>  // the typed cudaMalloc template
#include <gtest/gtest.h>

#include <string>

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
