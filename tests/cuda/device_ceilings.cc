#include "tests/cuda/device_ceilings.h"

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace gla::bench {
namespace {

void Check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return;
  std::fprintf(stderr, "device ceilings: %s: %s\n", what, cudaGetErrorString(e));
  std::exit(1);
}
void Check(cublasStatus_t s, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return;
  std::fprintf(stderr, "device ceilings: %s: cuBLAS status %d\n", what, static_cast<int>(s));
  std::exit(1);
}

// Best time in seconds of `reps` calls of `call` on `stream`, after two untimed ones.
template <typename F>
double BestSeconds(F&& call, int reps, cudaStream_t stream) {
  cudaEvent_t e0, e1;
  Check(cudaEventCreate(&e0), "cudaEventCreate");
  Check(cudaEventCreate(&e1), "cudaEventCreate");
  call();
  call();
  float best = 1e30f;
  for (int r = 0; r < reps; ++r) {
    Check(cudaEventRecord(e0, stream), "cudaEventRecord");
    call();
    Check(cudaEventRecord(e1, stream), "cudaEventRecord");
    Check(cudaEventSynchronize(e1), "cudaEventSynchronize");
    float ms = 0;
    Check(cudaEventElapsedTime(&ms, e0, e1), "cudaEventElapsedTime");
    best = std::min(best, ms);
  }
  Check(cudaEventDestroy(e0), "cudaEventDestroy");
  Check(cudaEventDestroy(e1), "cudaEventDestroy");
  return best * 1e-3;
}

double CopyBandwidth(cudaStream_t stream) {
  const size_t bytes = size_t{1} << 30;  // far beyond L2: every byte comes from and goes to HBM
  void *a = nullptr, *b = nullptr;
  Check(cudaMalloc(&a, bytes), "cudaMalloc (copy source)");
  Check(cudaMalloc(&b, bytes), "cudaMalloc (copy target)");
  Check(cudaMemsetAsync(a, 1, bytes, stream), "cudaMemsetAsync");
  // Three rounds of best-of-10, the best of all: one run on a fresh H200 (2026-12-04 09:05) read
  // 0.22 TB/s for every copy of its single round (the next run, same machine: 4.25), which would
  // have made every floor of that table 20x too low.
  double s = 1e30;
  for (int round = 0; round < 3; ++round)
    s = std::min(s, BestSeconds([&] { Check(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, stream), "copy"); },
                                10, stream));
  Check(cudaFree(a), "cudaFree");
  Check(cudaFree(b), "cudaFree");
  return 2.0 * bytes / s;
}

// FLOP/s of an 8192^3 GEMM on `type` operands with `compute` (bf16: fp32 accumulate; fp32: TF32).
double GemmPeak(cudaStream_t stream, cudaDataType_t type, cublasComputeType_t compute) {
  const int n = 8192;
  const size_t elems = size_t{n} * n, size = type == CUDA_R_16BF ? 2 : 4;
  void *a = nullptr, *b = nullptr, *c = nullptr;
  Check(cudaMalloc(&a, elems * size), "cudaMalloc (A)");
  Check(cudaMalloc(&b, elems * size), "cudaMalloc (B)");
  Check(cudaMalloc(&c, elems * size), "cudaMalloc (C)");
  // Small values (bytes 0x3C: bf16 ~0.011, fp32 ~0.011): no overflow, and zeros would not be a fair
  // test of the multipliers.
  Check(cudaMemsetAsync(a, 0x3C, elems * size, stream), "cudaMemsetAsync");
  Check(cudaMemsetAsync(b, 0x3C, elems * size, stream), "cudaMemsetAsync");
  cublasHandle_t h;
  Check(cublasCreate(&h), "cublasCreate");
  Check(cublasSetStream(h, stream), "cublasSetStream");
  const float alpha = 1.f, beta = 0.f;
  const double s = BestSeconds(
      [&] {
        Check(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &alpha, a, type, n, b, type, n, &beta, c, type, n,
                           compute, CUBLAS_GEMM_DEFAULT),
              "cublasGemmEx");
      },
      10, stream);
  Check(cublasDestroy(h), "cublasDestroy");
  for (void* p : {a, b, c}) Check(cudaFree(p), "cudaFree");
  return 2.0 * n * n * double(n) / s;
}

}  // namespace

DeviceCeilings MeasureDeviceCeilings() {
  int dev = 0;
  Check(cudaGetDevice(&dev), "cudaGetDevice");
  cudaDeviceProp prop;
  Check(cudaGetDeviceProperties(&prop, dev), "cudaGetDeviceProperties");
  cudaStream_t stream;
  Check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
  DeviceCeilings c;
  char detail[96];
  std::snprintf(detail, sizeof detail, " (%d SMs, %.0f GiB, sm_%d%d)", prop.multiProcessorCount,
                prop.totalGlobalMem / 1073741824.0, prop.major, prop.minor);
  c.device = std::string(prop.name) + detail;
  c.copy_bytes_per_s = CopyBandwidth(stream);
  c.bf16_gemm_flops = GemmPeak(stream, CUDA_R_16BF, CUBLAS_COMPUTE_32F);
  c.tf32_gemm_flops = GemmPeak(stream, CUDA_R_32F, CUBLAS_COMPUTE_32F_FAST_TF32);
  Check(cudaStreamDestroy(stream), "cudaStreamDestroy");
  return c;
}

}  // namespace gla::bench
