// Host vectors for the CUDA layer tests: random values, bf16 and FP8 rounding, a plain
// double-precision projection to compare with, and a device copy freed at scope exit.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "models/dtype.h"

namespace gla::testing {

inline double RelErr(const std::vector<float>& out, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    if (!std::isfinite(out[i])) return INFINITY;
    num += (static_cast<double>(out[i]) - ref[i]) * (static_cast<double>(out[i]) - ref[i]);
    den += static_cast<double>(ref[i]) * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

inline std::vector<float> Random(size_t n, std::mt19937& rng, float lo = -1.f, float hi = 1.f) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// y[M, N] = x[M, K] W[N, K]^T + beta y in double: the plain reference for cuBLAS (the CPU backend's
// GEMM has the same contract through OpenBLAS, which the GPU machine does not have).
inline void NaiveLinear(const float* x, int xs, const float* W, int N, int K, float* y, int M, float beta = 0.f) {
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      double acc = 0;
      for (int k = 0; k < K; ++k) acc += static_cast<double>(x[m * xs + k]) * W[n * K + k];
      y[m * N + n] = static_cast<float>(acc + beta * y[m * N + n]);
    }
}

inline std::vector<__nv_bfloat16> ToBf16(const std::vector<float>& v) {
  std::vector<__nv_bfloat16> b(v.size());
  for (size_t i = 0; i < v.size(); ++i) b[i] = __float2bfloat16(v[i]);
  return b;
}
inline std::vector<float> FromBf16(const std::vector<__nv_bfloat16>& b) {
  std::vector<float> v(b.size());
  for (size_t i = 0; i < b.size(); ++i) v[i] = __bfloat162float(b[i]);
  return v;
}
inline std::vector<float> RoundBf16(const std::vector<float>& v) { return FromBf16(ToBf16(v)); }

// A device copy of a host vector, freed at scope exit.
template <typename T>
struct Dev {
  T* p = nullptr;
  size_t n = 0;
  explicit Dev(const std::vector<T>& h) : n(h.size()) {
    EXPECT_EQ(cudaMalloc(&p, n * sizeof(T)), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  explicit Dev(size_t count) : n(count) {
    EXPECT_EQ(cudaMalloc(&p, n * sizeof(T)), cudaSuccess);
    EXPECT_EQ(cudaMemset(p, 0, n * sizeof(T)), cudaSuccess);
  }
  ~Dev() { cudaFree(p); }
  std::vector<T> Get() const {
    std::vector<T> h(n);
    EXPECT_EQ(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
  }
};

// W [N, K] as one-byte codes with a scale per row, FP8 E4M3 (QuantizeFp8E4M3PerRow) or INT8
// (symmetric, max / 127), and those values back in fp32 (scale x code): what the FP8 / INT8 kernels
// read, and what their references multiply.
struct ByteRowsHost {
  std::vector<uint8_t> q;
  std::vector<float> scale, values;
};
inline ByteRowsHost QuantizeRowsHost(const std::vector<float>& W, int N, int K, bool int8) {
  ByteRowsHost h{std::vector<uint8_t>(W.size()), std::vector<float>(static_cast<size_t>(N)),
                 std::vector<float>(W.size())};
  if (int8) {  // cpu::QuantizeInt8PerRow's rule (here without the CPU kernels' BLAS: gpu-check builds these alone)
    for (int n = 0; n < N; ++n) {
      float mx = 0.f;
      for (int k = 0; k < K; ++k) mx = std::max(mx, std::fabs(W[static_cast<size_t>(n) * K + k]));
      h.scale[n] = mx / 127.f;
      for (int k = 0; k < K; ++k) {
        const size_t i = static_cast<size_t>(n) * K + k;
        h.q[i] = static_cast<uint8_t>(static_cast<int8_t>(mx > 0.f ? std::lrintf(W[i] / h.scale[n]) : 0));
      }
    }
  } else {
    EXPECT_TRUE(QuantizeFp8E4M3PerRow(W.data(), N, K, h.q.data(), h.scale.data()));
  }
  for (size_t i = 0; i < W.size(); ++i) {
    const float code = int8 ? static_cast<float>(static_cast<int8_t>(h.q[i])) : Float8E4M3ToFloat(h.q[i]);
    h.values[i] = h.scale[i / static_cast<size_t>(K)] * code;
  }
  return h;
}

}  // namespace gla::testing
