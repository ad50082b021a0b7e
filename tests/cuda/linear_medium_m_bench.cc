// Times the medium-sized projection kernel (cuda::LinearMediumM{,Fp8,Int8}, kernels/linear.h) at
// the projections of gla-1.3B and gla-340M for M = 17 ... 256 input rows (decode at batch 17-256)
// against what the engine ran there before it: cuBLAS's bf16 GEMM, and for INT8 the matrix
// dequantized to bf16 then that GEMM. Each against its floor: the weights (2 bytes a weight for
// bf16, 1 for FP8 / INT8 plus a scale a row), inputs and outputs once at the copy bandwidth measured
// in this run. Weights rotate through copies larger than L2 and a timing's launches are one CUDA
// graph, as in linear_small_m_bench. GLA_BENCH_OUT=DIR: DIR/linear-medium-m.json.
// A second table times the kernel's forms (cuda::MediumMTuning: the cluster's split capped, 64-feature
// blocks; and FP8 inputs) at 17-64 rows, with FP8 and bf16 rows, against the
// engine's FP8 path there (inputs quantized to FP8, cuBLASLt's FP8 GEMM) and cuBLAS's bf16 GEMM.
// --forms: the second table alone.
// --trace: a timeline of one launch from the kernel's own clock stamps (Trace below).
// --profile: no timing; each kernel launched once (after a warm-up launch) at a few shapes, for
// Nsight Compute (deploy/gpu-profile.sh medium) to say what bounds the medium-M kernel.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "kernels/linear.h"
#include "kernels/linear_fp8.h"
#include "tests/cuda/bench_report.h"
#include "tests/cuda/bench_util.h"
#include "tests/cuda/device_ceilings.h"

namespace {

struct Shape {
  const char* name;
  int64_t N, K;
};

// A matrix's copies spread over a pool larger than L2: launch c of a timing reads copy c, from DRAM
// as a decode step reads its weights (bf16 `bytes` each; the one-byte views read the first half).
struct RotatingWeights {
  void* pool;
  size_t pool_bytes, bytes;
  const float* scales;
  int Copies() const { return static_cast<int>(std::max<size_t>(4, pool_bytes / bytes)); }
  const __nv_bfloat16* Bf16(int c) const {
    return reinterpret_cast<const __nv_bfloat16*>(static_cast<char*>(pool) +
                                                  (size_t(c) * bytes) % (pool_bytes - bytes + 1) / 256 * 256);
  }
  gla::cuda::Fp8Weight Fp8(int c) const { return {reinterpret_cast<const uint8_t*>(Bf16(c)), scales}; }
  gla::cuda::Int8Weight Int8(int c) const { return {reinterpret_cast<const int8_t*>(Bf16(c)), scales}; }
};

// One launch of each path at the shapes the profile looks at (gla-1.3B in-proj and down at 17, 32
// and 128 rows; the decode-sized kernels at 16 for comparison), each after a warm-up launch of its
// own; the same weights every time.
int Profile() {
  const struct {
    int64_t N, K;
  } shapes[] = {{6160, 2048}, {2048, 5632}};
  const int ms[] = {17, 32, 128};
  cublasHandle_t cublas;
  if (cublasCreate(&cublas) != CUBLAS_STATUS_SUCCESS) return 1;
  void* w;
  __nv_bfloat16 *x, *y, *dequant;
  float* scales;
  CHECK(cudaMalloc(&w, size_t{6160} * 5632 * 2));
  CHECK(cudaMemset(w, 0x3C, size_t{6160} * 5632 * 2));
  CHECK(cudaMalloc(&x, size_t{128} * 5632 * 2));
  CHECK(cudaMemset(x, 0x3C, size_t{128} * 5632 * 2));
  CHECK(cudaMalloc(&y, size_t{128} * 6160 * 2));
  CHECK(cudaMalloc(&dequant, size_t{6160} * 5632 * 2));
  CHECK(cudaMalloc(&scales, 6160 * sizeof(float)));
  CHECK(cudaMemset(scales, 0, 6160 * sizeof(float)));
  const auto* wb = static_cast<const __nv_bfloat16*>(w);
  const gla::cuda::Fp8Weight w8{static_cast<const uint8_t*>(w), scales};
  const gla::cuda::Int8Weight wi{static_cast<const int8_t*>(w), scales};
  for (const auto& s : shapes) {
    // What streaming at bandwidth looks like in the counters: the decode-sized tensor-core kernel at
    // its largest bf16 size (16 rows) and the one-byte one at 16 rows, first.
    for (int rep = 0; rep < 2; ++rep) {
      CHECK(gla::cuda::LinearSmallMTensorCores(x, s.K, wb, s.N, s.K, y, true, s.N, 16, 0.f, nullptr));
      CHECK(gla::cuda::LinearSmallMInt8TensorCores(x, s.K, wi, s.N, s.K, y, true, s.N, 16, 0.f, nullptr));
      CHECK(cudaDeviceSynchronize());
    }
    for (int M : ms)
      for (int rep = 0; rep < 2; ++rep) {
        if (gla::cuda::LinearBf16(cublas, x, s.K, wb, s.N, s.K, y, true, s.N, M, 0.f) != CUBLAS_STATUS_SUCCESS) return 1;
        CHECK(gla::cuda::LinearMediumM(x, s.K, wb, s.N, s.K, y, true, s.N, M, 0.f, nullptr));
        CHECK(gla::cuda::LinearMediumMFp8(x, s.K, w8, s.N, s.K, y, true, s.N, M, 0.f, nullptr));
        CHECK(gla::cuda::LinearMediumMInt8(x, s.K, wi, s.N, s.K, y, true, s.N, M, 0.f, nullptr));
        CHECK(gla::cuda::DequantizeInt8ToBf16(wi, s.N, s.K, dequant, nullptr));
        CHECK(cudaDeviceSynchronize());
      }
  }
  std::printf("profile mode: at in-proj 6160x2048 and down 2048x5632, the decode-sized tensor-core kernels (bf16, "
              "int8) at M = 16, then cuBLAS bf16, medium bf16 / fp8 / int8 and the INT8 dequantizer at M = 17, 32, "
              "128; each twice\n");
  cublasDestroy(cublas);
  return 0;
}

// --trace: where a launch's time goes, from the kernel's own per-block stamps of the GPU clock
// (MediumMTuning::trace): one traced launch (after a warm-up one) per shape, row count, weight
// format and form (default, 64-feature blocks, split over at most 2 or 4 blocks, FP8 inputs), each
// block's start, first tile landed, end of its K loop, partial sums visible to its cluster and
// outputs written. Printed: the launch's span on the GPU against the weight floor, the most blocks
// any SM ran, how late the last block started, and the median and last block at each stage.
int Trace() {
  const gla::bench::DeviceCeilings ceilings = gla::bench::MeasureDeviceCeilings();
  const Shape shapes[] = {{"1.3B in-proj", 6160, 2048}, {"1.3B gate+up", 11264, 2048}, {"1.3B down", 2048, 5632},
                          {"340M in-proj", 3088, 1024}};
  void* w;
  __nv_bfloat16 *x, *y;
  float* scales;
  uint64_t* trace;
  constexpr size_t kTraceValues = size_t{1} << 18;
  CHECK(cudaMalloc(&w, size_t{11264} * 5632 * 2));
  CHECK(cudaMemset(w, 0x3C, size_t{11264} * 5632 * 2));
  CHECK(cudaMalloc(&x, size_t{64} * 11264 * 2));
  CHECK(cudaMemset(x, 0x3C, size_t{64} * 11264 * 2));
  CHECK(cudaMalloc(&y, size_t{64} * 11264 * 2));
  CHECK(cudaMalloc(&scales, 11264 * sizeof(float)));
  CHECK(cudaMemset(scales, 0, 11264 * sizeof(float)));
  CHECK(cudaMalloc(&trace, kTraceValues * sizeof(uint64_t)));
  uint8_t* xq;  // FP8 inputs: x's rows quantized (each shape quantizes its K before its launches)
  float* xscale;
  CHECK(cudaMalloc(&xq, size_t{64} * 11264));
  CHECK(cudaMalloc(&xscale, 64 * sizeof(float)));
  void* flush;  // written before each traced launch: its weights come from DRAM, not L2
  constexpr size_t kFlushBytes = size_t{128} << 20;
  CHECK(cudaMalloc(&flush, kFlushBytes));
  std::vector<uint64_t> host(kTraceValues);
  const auto* wb = static_cast<const __nv_bfloat16*>(w);
  const gla::cuda::Fp8Weight w8{static_cast<const uint8_t*>(w), scales};
  std::printf("| shape | M | rows | form | blocks | most on an SM | floor us | span us | last start us | "
              "first tile: median / last us | loop: median / last us | cluster: median us | stores: median us | "
              "last loop end us |\n"
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
  for (const Shape& s : shapes) {
    CHECK(gla::cuda::QuantizeRowsFp8(x, s.K, 64, s.K, xq, s.K, xscale, nullptr));
    for (int M : {17, 32, 64})
      for (bool one_byte : {true, false})
        for (int form = 0; form < 5; ++form) {  // default, narrow (M <= 32), split <= 2, split <= 4, fp8 inputs
          const bool narrow = form == 1;
          if ((narrow && M > 32) || (form == 4 && !one_byte)) continue;
          gla::cuda::MediumMTuning tuning{form == 2 ? 2 : form == 3 ? 4 : 0, narrow, nullptr};
          const char* names[] = {"default", "narrow", "split<=2", "split<=4", "fp8 inputs"};
          const char* form_name = names[form];
          auto launch = [&] {
            if (form == 4)  // the inputs quantized once, before the loop
              CHECK(gla::cuda::LinearMediumMFp8Inputs({xq, xscale, s.K}, w8, s.N, s.K, y, true, s.N, M, 0.f, nullptr,
                                                      tuning));
            else if (one_byte)
              CHECK(gla::cuda::LinearMediumMFp8(x, s.K, w8, s.N, s.K, y, true, s.N, M, 0.f, nullptr, tuning));
            else
              CHECK(gla::cuda::LinearMediumM(x, s.K, wb, s.N, s.K, y, true, s.N, M, 0.f, nullptr, tuning));
          };
          launch();  // warm-up: the attribute calls, the first launch's costs
          CHECK(cudaMemset(trace, 0, kTraceValues * sizeof(uint64_t)));
          CHECK(cudaMemset(flush, 1, kFlushBytes));
          CHECK(cudaDeviceSynchronize());
          tuning.trace = trace;
          tuning.trace_blocks = kTraceValues / gla::cuda::kMediumMTraceFields;
          launch();
          CHECK(cudaDeviceSynchronize());
          CHECK(cudaMemcpy(host.data(), trace, host.size() * sizeof(uint64_t), cudaMemcpyDeviceToHost));
          constexpr int F = gla::cuda::kMediumMTraceFields;
          std::vector<const uint64_t*> blocks;
          for (size_t b = 0; b + F <= host.size(); b += F)
            if (host[b] != 0) blocks.push_back(&host[b]);
          if (blocks.empty()) {
            std::fprintf(stderr, "no trace\n");
            return 1;
          }
          std::map<uint64_t, int> per_sm;  // blocks that ran on each SM over the launch
          for (const uint64_t* b : blocks) ++per_sm[b[5]];
          int max_per_sm = 0;
          for (const auto& [sm, n] : per_sm) max_per_sm = std::max(max_per_sm, n);
          uint64_t t0 = blocks[0][0];
          for (const uint64_t* b : blocks) t0 = std::min(t0, b[0]);
          auto stage = [&](int from, int to) {  // median and largest (to - from) over the blocks, us
            std::vector<double> d;
            for (const uint64_t* b : blocks) d.push_back(1e-3 * double(b[to] - b[from]));
            std::sort(d.begin(), d.end());
            return std::pair{d[d.size() / 2], d.back()};
          };
          auto last = [&](int field) {  // the last block's stamp, us after the first start
            uint64_t m = 0;
            for (const uint64_t* b : blocks) m = std::max(m, b[field]);
            return 1e-3 * double(m - t0);
          };
          const double weight_bytes = double(s.N) * s.K * (one_byte ? 1 : 2);
          const double floor_us = ceilings.BytesSeconds(weight_bytes + 2.0 * M * (s.K + s.N)) * 1e6;
          const auto first = stage(0, 1), loop = stage(1, 2), cluster = stage(2, 3), stores = stage(3, 4);
          std::printf("| %s | %d | %s | %s | %zu | %d | %.2f | %.2f | %.2f | %.2f / %.2f | %.2f / %.2f | %.2f | %.2f | "
                      "%.2f |\n",
                      s.name, M, one_byte ? "fp8" : "bf16", form_name, blocks.size(), max_per_sm, floor_us,
                      last(4), last(0), first.first, first.second, loop.first, loop.second, cluster.first,
                      stores.first, last(2));
        }
  }
  std::printf("\nus from the first block's start (GPU clock, %%globaltimer); floor: the weights, inputs and outputs "
              "at the copy bandwidth measured here (%.2f TB/s).\n", ceilings.copy_bytes_per_s * 1e-12);
  CHECK(cudaFree(w));
  CHECK(cudaFree(x));
  CHECK(cudaFree(y));
  CHECK(cudaFree(scales));
  CHECK(cudaFree(trace));
  CHECK(cudaFree(flush));
  CHECK(cudaFree(xq));
  CHECK(cudaFree(xscale));
  return 0;
}

// The forms of the kernel (MediumMTuning) side by side at 17-64 rows, FP8 and bf16 rows, with the
// paths the engine takes there now: FP8 inputs quantized then cuBLASLt's FP8 GEMM, cuBLAS's bf16.
void FormsTable(gla::bench::BenchReport& report, const Shape (&shapes)[8], void* pool, size_t pool_bytes,
                const __nv_bfloat16* x, __nv_bfloat16* y, const float* scales, cublasHandle_t cublas,
                cudaStream_t stream) {
  constexpr int kMaxM = 64;
  uint8_t* xq;
  float* xscale;
  void* workspace;
  constexpr size_t kWorkspace = size_t{32} << 20;
  CHECK(cudaMalloc(&xq, size_t{kMaxM} * 8192));
  CHECK(cudaMalloc(&xscale, kMaxM * sizeof(float)));
  CHECK(cudaMalloc(&workspace, kWorkspace));
  gla::cuda::LinearFp8Gemm fp8_gemm;
  const bool have_fp8_gemm = fp8_gemm.Init(workspace, kWorkspace) == CUBLAS_STATUS_SUCCESS;
  constexpr int kForms = 5;
  const gla::cuda::MediumMTuning forms[kForms] = {
      {0, false, nullptr}, {4, false, nullptr}, {2, false, nullptr}, {0, true, nullptr}, {4, true, nullptr}};
  const char* form_names[kForms] = {"default", "split<=4", "split<=2", "narrow", "narrow split<=4"};
  std::printf("\n| shape | M | rows | floor us | engine path us | default us | split<=4 us | split<=2 us | narrow us | "
              "narrow split<=4 us | fp8 inputs us | best of floor |\n"
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
  for (const Shape& s : shapes) {
    const RotatingWeights rotating{pool, pool_bytes, size_t(s.N) * s.K * 2, scales};
    const size_t bytes = rotating.bytes;
    const int copies = rotating.Copies();
    auto weights = [&](int c) { return rotating.Bf16(c); };
    auto w8 = [&](int c) { return rotating.Fp8(c); };
    for (int M : {17, 32, 48, 64}) {
      const double io = 2.0 * M * (s.K + s.N);
      for (bool one_byte : {true, false}) {
        const double floor_us =
            report.ceilings().BytesSeconds(one_byte ? double(s.N) * s.K + 4.0 * s.N + io : double(bytes) + io) * 1e6;
        double engine_us = -1;
        if (!one_byte) {
          engine_us = GraphLaunchUs([&](int c, cudaStream_t) {
            if (gla::cuda::LinearBf16(cublas, x, s.K, weights(c), s.N, s.K, y, true, s.N, M, 0.f) !=
                CUBLAS_STATUS_SUCCESS)
              std::exit(1);
          }, copies, stream);
        } else if (have_fp8_gemm) {
          engine_us = GraphLaunchUs([&](int c, cudaStream_t st) {
            CHECK(gla::cuda::QuantizeRowsFp8(x, s.K, M, s.K, xq, s.K, xscale, st));
            if (fp8_gemm.Run({xq, xscale, s.K}, w8(c), s.N, s.K, y, true, s.N, M, 0.f, st) != CUBLAS_STATUS_SUCCESS)
              std::exit(1);
          }, copies, stream);
        }
        double form_us[kForms], best = 1e30;
        for (int f = 0; f < kForms; ++f) {
          const bool applies = M <= 32 || !forms[f].narrow_features;
          form_us[f] = !applies ? -1
                       : one_byte
                           ? GraphLaunchUs([&](int c, cudaStream_t st) {
                               CHECK(gla::cuda::LinearMediumMFp8(x, s.K, w8(c), s.N, s.K, y, true, s.N, M, 0.f, st,
                                                                 forms[f]));
                             }, copies, stream)
                           : GraphLaunchUs([&](int c, cudaStream_t st) {
                               CHECK(gla::cuda::LinearMediumM(x, s.K, weights(c), s.N, s.K, y, true, s.N, M, 0.f, st,
                                                              forms[f]));
                             }, copies, stream);
          if (applies) best = std::min(best, form_us[f]);
        }
        // FP8 rows: the inputs quantized as the engine's FP8 GEMM path does, then the split form on the
        // raw bytes of both (LinearMediumMFp8Inputs).
        const double fp8_inputs_us =
            !one_byte ? -1 : GraphLaunchUs([&](int c, cudaStream_t st) {
              CHECK(gla::cuda::QuantizeRowsFp8(x, s.K, M, s.K, xq, s.K, xscale, st));
              CHECK(gla::cuda::LinearMediumMFp8Inputs({xq, xscale, s.K}, w8(c), s.N, s.K, y, true, s.N, M, 0.f, st));
            }, copies, stream);
        if (one_byte) best = std::min(best, fp8_inputs_us);
        std::printf("| %s | %d | %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.0f%% |\n", s.name, M,
                    one_byte ? "fp8" : "bf16", floor_us, engine_us, form_us[0], form_us[1], form_us[2], form_us[3],
                    form_us[4], fp8_inputs_us, 100.0 * floor_us / best);
        auto& row = report.AddRow()
                        .Str("table", "forms")
                        .Str("shape", s.name)
                        .Num("M", M)
                        .Str("rows", one_byte ? "fp8" : "bf16")
                        .Num("floor_us", floor_us)
                        .Num("engine_path_us", engine_us)
                        .Num("fp8_inputs_us", fp8_inputs_us);
        for (int f = 0; f < kForms; ++f) row.Num(std::string(form_names[f]) + "_us", form_us[f]);
      }
    }
  }
  std::printf("\nengine path: fp8 rows, the inputs quantized (QuantizeRowsFp8) then cuBLASLt's FP8 GEMM; bf16 rows, "
              "cuBLAS. fp8 inputs: the inputs quantized the same way, then the split form on FP8 x FP8 (no widening). "
              "-1: not run (narrow: M <= 32 only; fp8 inputs: FP8 rows only; no FP8 GEMM here).\n");
  CHECK(cudaFree(xq));
  CHECK(cudaFree(xscale));
  CHECK(cudaFree(workspace));
}

}  // namespace

int main(int argc, char** argv) {
  const bool forms_only = argc > 1 && std::string(argv[1]) == "--forms";
  if (argc > 1 && !forms_only) {
    if (std::string(argv[1]) == "--profile") return Profile();
    if (std::string(argv[1]) == "--trace") return Trace();
    std::fprintf(stderr, "usage: linear_medium_m_bench [--forms | --profile | --trace]\n");
    return 2;
  }
  gla::bench::BenchReport report("linear-medium-m", gla::bench::MeasureDeviceCeilings());
  report.PrintHeader();
  const Shape shapes[] = {{"1.3B in-proj (q,k,v,g,gk)", 6160, 2048}, {"1.3B o_proj", 2048, 2048},
                          {"1.3B gate+up", 11264, 2048},            {"1.3B down", 2048, 5632},
                          {"340M in-proj", 3088, 1024},             {"340M o_proj", 1024, 1024},
                          {"340M gate+up", 5632, 1024},             {"340M down", 1024, 2816}};
  const int ms[] = {17, 32, 48, 64, 128, 256};
  constexpr int kMaxM = 256;
  cudaStream_t stream;
  CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cublasHandle_t cublas;
  if (cublasCreate(&cublas) != CUBLAS_STATUS_SUCCESS || cublasSetStream(cublas, stream) != CUBLAS_STATUS_SUCCESS) {
    std::fprintf(stderr, "cublas setup failed\n");
    return 1;
  }
  const size_t pool_bytes = size_t{512} << 20;  // >> L2 (50 MiB on an H100, 60 on an H200)
  void* pool;
  CHECK(cudaMalloc(&pool, pool_bytes));
  CHECK(cudaMemset(pool, 0x3C, pool_bytes));  // bf16 1.17, E4M3 1.5, INT8 60
  __nv_bfloat16 *x, *y, *dequant;
  CHECK(cudaMalloc(&x, size_t{kMaxM} * 8192 * 2));
  CHECK(cudaMemset(x, 0x3C, size_t{kMaxM} * 8192 * 2));
  CHECK(cudaMalloc(&y, size_t{kMaxM} * 16384 * 2));
  CHECK(cudaMalloc(&dequant, size_t{11264} * 2048 * 2));
  float* scales;
  CHECK(cudaMalloc(&scales, 16384 * sizeof(float)));
  {
    const std::vector<float> ones(16384, 1e-3f);
    CHECK(cudaMemcpy(scales, ones.data(), ones.size() * sizeof(float), cudaMemcpyHostToDevice));
  }
  std::printf("| shape | N x K | M | bf16 floor us | cuBLAS us | medium us | medium of floor | vs cuBLAS | byte floor us "
              "| fp8 medium us | fp8 of floor | int8 medium us | int8 dequant+cuBLAS us | int8 of floor |\n"
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
  for (const Shape& s : forms_only ? std::span<const Shape>() : std::span<const Shape>(shapes)) {
    const RotatingWeights rotating{pool, pool_bytes, size_t(s.N) * s.K * 2, scales};
    const size_t bytes = rotating.bytes;
    const int copies = rotating.Copies();
    auto weights = [&](int c) { return rotating.Bf16(c); };
    auto w8 = [&](int c) { return rotating.Fp8(c); };
    auto wi = [&](int c) { return rotating.Int8(c); };
    for (int M : ms) {
      const double io = 2.0 * M * (s.K + s.N);
      const double floor_us = report.ceilings().BytesSeconds(double(bytes) + io) * 1e6;
      const double byte_floor_us = report.ceilings().BytesSeconds(double(s.N) * s.K + 4.0 * s.N + io) * 1e6;
      const double blas = GraphLaunchUs([&](int c, cudaStream_t) {
        if (gla::cuda::LinearBf16(cublas, x, s.K, weights(c), s.N, s.K, y, true, s.N, M, 0.f) != CUBLAS_STATUS_SUCCESS)
          std::exit(1);
      }, copies, stream);
      const double medium = GraphLaunchUs([&](int c, cudaStream_t st) {
        CHECK(gla::cuda::LinearMediumM(x, s.K, weights(c), s.N, s.K, y, true, s.N, M, 0.f, st));
      }, copies, stream);
      const double fp8 = GraphLaunchUs([&](int c, cudaStream_t st) {
        CHECK(gla::cuda::LinearMediumMFp8(x, s.K, w8(c), s.N, s.K, y, true, s.N, M, 0.f, st));
      }, copies, stream);
      const double int8 = GraphLaunchUs([&](int c, cudaStream_t st) {
        CHECK(gla::cuda::LinearMediumMInt8(x, s.K, wi(c), s.N, s.K, y, true, s.N, M, 0.f, st));
      }, copies, stream);
      const double int8_dequant = GraphLaunchUs([&](int c, cudaStream_t st) {
        CHECK(gla::cuda::DequantizeInt8ToBf16(wi(c), s.N, s.K, dequant, st));
        if (gla::cuda::LinearBf16(cublas, x, s.K, dequant, s.N, s.K, y, true, s.N, M, 0.f) != CUBLAS_STATUS_SUCCESS)
          std::exit(1);
      }, copies, stream);
      std::printf("| %s | %lld x %lld | %d | %.2f | %.2f | %.2f | %.0f%% | %.2fx | %.2f | %.2f | %.0f%% | %.2f | %.2f | "
                  "%.0f%% |\n",
                  s.name, static_cast<long long>(s.N), static_cast<long long>(s.K), M, floor_us, blas, medium,
                  100.0 * floor_us / medium, blas / medium, byte_floor_us, fp8, 100.0 * byte_floor_us / fp8, int8,
                  int8_dequant, 100.0 * byte_floor_us / int8);
      report.AddRow()
          .Str("shape", s.name)
          .Num("N", double(s.N))
          .Num("K", double(s.K))
          .Num("M", M)
          .Num("floor_us", floor_us)
          .Num("cublas_us", blas)
          .Num("medium_us", medium)
          .Num("byte_floor_us", byte_floor_us)
          .Num("fp8_medium_us", fp8)
          .Num("int8_medium_us", int8)
          .Num("int8_dequant_cublas_us", int8_dequant);
    }
  }
  FormsTable(report, shapes, pool, pool_bytes, x, y, scales, cublas, stream);
  CHECK(cudaFree(pool));
  CHECK(cudaFree(x));
  CHECK(cudaFree(y));
  CHECK(cudaFree(dequant));
  CHECK(cudaFree(scales));
  cublasDestroy(cublas);
  CHECK(cudaStreamDestroy(stream));
  std::printf("\nFloor: weights + inputs + outputs once at the measured copy bandwidth (byte floor: a byte a weight and "
              "a 4-byte scale a row). vs cuBLAS > 1: the medium kernel is faster.\n");
  return report.WriteJsonIfAsked() ? 0 : 1;
}
