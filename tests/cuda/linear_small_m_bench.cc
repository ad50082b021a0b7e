// Times the decode-sized projection kernels (kernels/linear.h) at the projections of gla-1.3B and
// gla-340M for M = 1 ... 16 input rows: the CUDA-core kernel (M <= 8), the tensor-core kernel, and
// cuBLAS (what M > kSmallM takes), each against its floor, the weights read once at the copy
// bandwidth measured in this run; and the FP8-weight kernels (CUDA cores for M <= 8, tensor cores),
// against their own floor (a byte per weight). (The medium-M kernel and a K-split-over-clusters
// form of the tensor-core kernel were timed here at these row counts once: neither paid, and the
// split form was removed; docs/performance.md.) Weights rotate through copies larger than L2 (no
// launch reads them from cache), and the launches of one timing are captured in a CUDA graph with programmatic
// dependent launch, as the engine's decode step runs them. GLA_BENCH_OUT=DIR: DIR/linear-small-m.json.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "kernels/linear.h"
#include "tests/cuda/bench_report.h"
#include "tests/cuda/bench_util.h"
#include "tests/cuda/device_ceilings.h"

namespace {

struct Shape {
  const char* name;
  int64_t N, K;
};

}  // namespace

int main() {
  gla::bench::BenchReport report("linear-small-m", gla::bench::MeasureDeviceCeilings());
  report.PrintHeader();
  const Shape shapes[] = {{"1.3B in-proj (q,k,v,g,gk)", 6160, 2048}, {"1.3B o_proj", 2048, 2048},
                          {"1.3B gate+up", 11264, 2048},            {"1.3B down", 2048, 5632},
                          {"1.3B lm_head", 32000, 2048},            {"340M in-proj", 3088, 1024},
                          {"340M o_proj", 1024, 1024},              {"340M gate+up", 5632, 1024},
                          {"340M down", 1024, 2816}};
  const int ms[] = {1, 2, 4, 8, 12, 16};
  cudaStream_t stream;
  CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cublasHandle_t cublas;
  if (cublasCreate(&cublas) != CUBLAS_STATUS_SUCCESS || cublasSetStream(cublas, stream) != CUBLAS_STATUS_SUCCESS) {
    std::fprintf(stderr, "cublas setup failed\n");
    return 1;
  }
  const size_t pool_bytes = size_t{512} << 20;  // >> L2 (50 MiB on an H200)
  void* pool;
  CHECK(cudaMalloc(&pool, pool_bytes));
  CHECK(cudaMemset(pool, 0x3C, pool_bytes));
  __nv_bfloat16 *x, *y;
  CHECK(cudaMalloc(&x, 16 * 8192 * 2));
  CHECK(cudaMemset(x, 0x3C, 16 * 8192 * 2));
  CHECK(cudaMalloc(&y, 16 * 32000 * 2));
  float* scales;  // FP8 rows' scales (1: the pool's bytes, 0x3C, are 1.5 as E4M3)
  CHECK(cudaMalloc(&scales, 32000 * sizeof(float)));
  {
    const std::vector<float> ones(32000, 1.f);
    CHECK(cudaMemcpy(scales, ones.data(), ones.size() * sizeof(float), cudaMemcpyHostToDevice));
  }
  std::printf("| shape | N x K | M | weights MB | floor us | cuda cores us | tensor cores us | cuBLAS us | best of floor "
              "| fp8 floor us | fp8 cuda cores us | fp8 tensor cores us | fp8 best of floor | fp8 best vs best bf16 "
              "|\n"
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
  for (const Shape& s : shapes) {
    const size_t bytes = size_t(s.N) * s.K * 2;
    const int copies = static_cast<int>(std::max<size_t>(4, pool_bytes / bytes));
    auto weights = [&](int c) {
      return reinterpret_cast<const __nv_bfloat16*>(static_cast<char*>(pool) + (size_t(c) * bytes) % (pool_bytes - bytes + 1) / 256 * 256);
    };
    for (int M : ms) {
      const double floor_us = report.ceilings().BytesSeconds(double(bytes) + 2.0 * M * (s.K + s.N)) * 1e6;
      double cores = -1;
      if (M <= gla::cuda::kSmallMCudaCores)
        cores = GraphLaunchUs([&](int c, cudaStream_t st) {
          CHECK(gla::cuda::LinearSmallMCudaCores(x, s.K, weights(c), s.N, s.K, y, true, s.N, M, 0.f, st));
        }, copies, stream);
      const double tensor = GraphLaunchUs([&](int c, cudaStream_t st) {
        CHECK(gla::cuda::LinearSmallMTensorCores(x, s.K, weights(c), s.N, s.K, y, true, s.N, M, 0.f, st));
      }, copies, stream);
      const double blas = GraphLaunchUs([&](int c, cudaStream_t) {
        if (gla::cuda::LinearBf16(cublas, x, s.K, weights(c), s.N, s.K, y, true, s.N, M, 0.f) != CUBLAS_STATUS_SUCCESS)
          std::exit(1);
      }, copies, stream);
      double best = tensor;
      if (cores > 0) best = std::min(best, cores);
      best = std::min(best, blas);
      char cores_txt[32] = "-";
      if (cores > 0) std::snprintf(cores_txt, sizeof cores_txt, "%.2f", cores);
      // FP8: a byte per weight plus a scale per row; the same pool's bytes read as E4M3.
      const double fp8_floor_us =
          report.ceilings().BytesSeconds(double(s.N) * s.K + 4.0 * s.N + 2.0 * M * (s.K + s.N)) * 1e6;
      auto w8 = [&](int c) { return gla::cuda::Fp8Weight{reinterpret_cast<const uint8_t*>(weights(c)), scales}; };
      double fp8_cores = -1;
      if (M <= gla::cuda::kSmallMCudaCores)
        fp8_cores = GraphLaunchUs([&](int c, cudaStream_t st) {
          CHECK(gla::cuda::LinearSmallMFp8CudaCores(x, s.K, w8(c), s.N, s.K, y, true, s.N, M, 0.f, st));
        }, copies, stream);
      const double fp8_tensor = GraphLaunchUs([&](int c, cudaStream_t st) {
        CHECK(gla::cuda::LinearSmallMFp8TensorCores(x, s.K, w8(c), s.N, s.K, y, true, s.N, M, 0.f, st));
      }, copies, stream);
      const double fp8 = fp8_cores > 0 ? std::min(fp8_cores, fp8_tensor) : fp8_tensor;
      char fp8_cores_txt[32] = "-";
      if (fp8_cores > 0) std::snprintf(fp8_cores_txt, sizeof fp8_cores_txt, "%.2f", fp8_cores);
      char fp8_txt[128];
      std::snprintf(fp8_txt, sizeof fp8_txt, "%.2f | %s | %.2f | %.0f%% | %.2fx", fp8_floor_us, fp8_cores_txt,
                    fp8_tensor, 100.0 * fp8_floor_us / fp8, best / fp8);
      std::printf("| %s | %lld x %lld | %d | %.1f | %.2f | %s | %.2f | %.2f | %.0f%% | %s |\n", s.name,
                  static_cast<long long>(s.N), static_cast<long long>(s.K), M, bytes / 1e6, floor_us, cores_txt,
                  tensor, blas, 100.0 * floor_us / best, fp8_txt);
      report.AddRow()
          .Str("shape", s.name)
          .Num("N", double(s.N))
          .Num("K", double(s.K))
          .Num("M", M)
          .Num("floor_us", floor_us)
          .Num("cuda_cores_us", cores)
          .Num("tensor_cores_us", tensor)
          .Num("cublas_us", blas)
          .Num("fp8_floor_us", fp8_floor_us)
          .Num("fp8_cuda_cores_us", fp8_cores)
          .Num("fp8_tensor_cores_us", fp8_tensor);
    }
  }
  CHECK(cudaFree(pool));
  CHECK(cudaFree(x));
  CHECK(cudaFree(y));
  CHECK(cudaFree(scales));
  cublasDestroy(cublas);
  CHECK(cudaStreamDestroy(stream));
  std::printf("\ncuda cores: -1 / '-' where the kernel does not take M. Floor: weights + inputs + outputs once at the "
              "measured copy bandwidth.\n");
  return report.WriteJsonIfAsked() ? 0 : 1;
}
