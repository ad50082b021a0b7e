// The row kernels (RMSNorm, the gated head norm, the FP8 row quantizers with and without the made
// row; kernels/norm.h, kernels/linear_fp8.h) in both forms (kernels/row_form.h: a block a row, a
// warp a row) at gla-1.3B's and gla-340M's widths, for the row counts of a decode step (32), a short
// prompt (512) and a long one (4,096). Per row: bytes read and written, the floor (bytes / copy
// bandwidth measured in this run), each form's time and share of the floor, and the block form's
// time over the warp form's (where that passes 1 is where ProjectionPaths::warp_rows_from belongs). The FP8 profile put these kernels at 23% of an FP8 prefill
// at about half the copy rate (docs/performance.md, "Where an FP8 step goes"). Each time is one
// launch in a CUDA graph of launches over input copies that fill three times the L2 (inputs from
// HBM, as a step reads them). GLA_BENCH_OUT=DIR: DIR/row-kernels.json.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "kernels/linear.h"
#include "kernels/linear_fp8.h"
#include "kernels/norm.h"
#include "kernels/row_form.h"
#include "tests/cuda/bench_report.h"
#include "tests/cuda/bench_util.h"
#include "tests/cuda/device_ceilings.h"

namespace {

using gla::cuda::RowForm;

struct Model {
  const char* name;
  int D, I, heads, dv;
};

// A kernel call on input copy `c`: (copy, form, stream).
using Call = std::function<cudaError_t(int, RowForm, cudaStream_t)>;

struct Op {
  std::string name;
  double bytes_in, bytes_out;  // per call
  Call call;
};

}  // namespace

int main() {
  const gla::bench::DeviceCeilings ceilings = gla::bench::MeasureDeviceCeilings();
  gla::bench::BenchReport report("row-kernels", ceilings);
  report.PrintHeader();
  int dev = 0, l2 = 0;
  CHECK(cudaGetDevice(&dev));
  CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev));
  cudaStream_t stream;
  CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));

  const Model models[] = {{"gla-1.3B", 2048, 5632, 4, 512}, {"gla-340M", 1024, 2816, 4, 256}};
  std::printf("%-9s %-22s %5s %8s %9s %10s %7s %10s %7s %8s\n", "model", "kernel", "rows", "MB", "floor us",
              "block us", "of fl", "warp us", "of fl", "block/wp");
  for (const Model& m : models) {
    for (int64_t M : {int64_t{32}, int64_t{512}, int64_t{4096}}) {
      const int64_t D = m.D, I = m.I, HK = int64_t{m.heads} * m.dv;
      // One input arena big enough for the largest input of this size, times the copies that fill
      // three times the L2; every op reads its copies from it.
      const int64_t in_bytes = std::max({M * D * 4, M * 2 * I * 2, M * HK * 8});
      const int copies = static_cast<int>(std::max<int64_t>(2, (3 * int64_t{l2} + in_bytes - 1) / in_bytes));
      void* arena = nullptr;
      CHECK(cudaMalloc(&arena, static_cast<size_t>(in_bytes) * copies));
      CHECK(cudaMemset(arena, 0, static_cast<size_t>(in_bytes) * copies));
      {  // every 16 bits a bf16 in [-1, 1]: read as bf16 or as fp32 (whose top half is a bf16), finite
        std::vector<__nv_bfloat16> host(static_cast<size_t>(in_bytes) / 2);
        for (size_t i = 0; i < host.size(); ++i)
          host[i] = __float2bfloat16(0.001f * static_cast<float>((i * 2654435761u) % 2001) - 1.f);
        for (int c = 0; c < copies; ++c)
          CHECK(cudaMemcpy(static_cast<char*>(arena) + static_cast<size_t>(c) * in_bytes, host.data(),
                           static_cast<size_t>(in_bytes), cudaMemcpyHostToDevice));
      }
      auto f32 = [&](int c) {
        return reinterpret_cast<const float*>(static_cast<char*>(arena) + int64_t{c} * in_bytes);
      };
      auto b16 = [&](int c) {
        return reinterpret_cast<const __nv_bfloat16*>(static_cast<char*>(arena) + int64_t{c} * in_bytes);
      };
      const int64_t widest = std::max({D, I, HK});
      float *w = nullptr, *scale = nullptr;
      void* out = nullptr;
      CHECK(cudaMalloc(&w, static_cast<size_t>(widest) * 4));
      CHECK(cudaMalloc(&scale, static_cast<size_t>(M) * 4));
      CHECK(cudaMalloc(&out, static_cast<size_t>(M * widest) * 2));
      std::vector<float> ones(static_cast<size_t>(widest), 1.f);
      CHECK(cudaMemcpy(w, ones.data(), ones.size() * 4, cudaMemcpyHostToDevice));
      auto* yb = static_cast<__nv_bfloat16*>(out);
      auto* q = static_cast<uint8_t*>(out);

      auto made = [&](gla::cuda::OneRowInput::Kind kind, int c) {
        gla::cuda::OneRowInput in;
        in.kind = kind;
        in.eps = 1e-6f;
        if (kind == gla::cuda::OneRowInput::kSwiGlu) {
          in.x = b16(c);
          in.x_stride = 2 * I;
        } else if (kind == gla::cuda::OneRowInput::kRmsNorm) {
          in.x = f32(c);
          in.x_stride = D;
          in.norm_w = w;
        } else {
          in.x = f32(c);  // o, then the gate in the copy's second half
          in.x_stride = HK;
          in.norm_w = w;
          in.heads = m.heads;
          in.head_dim = m.dv;
          in.gate = f32(c) + M * HK;
          in.gate_stride = HK;
        }
        return in;
      };
      const std::vector<Op> ops = {
          {"rmsnorm bf16", M * D * 4.0, M * D * 2.0,
           [&](int c, RowForm f, cudaStream_t s) {
             return gla::cuda::RmsNorm(f32(c), D, nullptr, w, yb, D, M, static_cast<int>(D), 1e-6f, s, f);
           }},
          {"gated head norm bf16", M * HK * 8.0, M * HK * 2.0,
           [&](int c, RowForm f, cudaStream_t s) {
             return gla::cuda::RmsNormSwishGate(f32(c), HK, f32(c) + M * HK, HK, w, yb, HK, M, m.heads, m.dv, 1e-6f, s,
                                                f);
           }},
          {"quantize fp8", M * D * 2.0, M * (D + 4.0),
           [&](int c, RowForm f, cudaStream_t s) {
             return gla::cuda::QuantizeRowsFp8(b16(c), D, M, D, q, D, scale, s, f);
           }},
          {"rmsnorm -> fp8", M * D * 4.0, M * (D + 4.0),
           [&](int c, RowForm f, cudaStream_t s) {
             return gla::cuda::QuantizeMadeRowsFp8(made(gla::cuda::OneRowInput::kRmsNorm, c), M, D, q, D, scale, s, f);
           }},
          {"swiglu -> fp8", M * I * 4.0, M * (I + 4.0),
           [&](int c, RowForm f, cudaStream_t s) {
             return gla::cuda::QuantizeMadeRowsFp8(made(gla::cuda::OneRowInput::kSwiGlu, c), M, I, q, I, scale, s, f);
           }},
          {"gated head norm -> fp8", M * HK * 8.0, M * (HK + 4.0),
           [&](int c, RowForm f, cudaStream_t s) {
             return gla::cuda::QuantizeMadeRowsFp8(made(gla::cuda::OneRowInput::kGatedHeadNorm, c), M, HK, q, HK,
                                                    scale, s, f);
           }},
      };
      for (const Op& op : ops) {
        const double floor_us = 1e6 * ceilings.BytesSeconds(op.bytes_in + op.bytes_out);
        double us[2];
        const RowForm forms[2] = {RowForm::kBlockPerRow, RowForm::kWarpPerRow};
        for (int k = 0; k < 2; ++k)
          us[k] = GraphLaunchUs([&](int c, cudaStream_t s) { CHECK(op.call(c, forms[k], s)); }, copies, stream);
        std::printf("%-9s %-22s %5lld %8.2f %9.2f %10.2f %6.0f%% %10.2f %6.0f%% %8.2f\n", m.name, op.name.c_str(),
                    static_cast<long long>(M), (op.bytes_in + op.bytes_out) / 1e6, floor_us, us[0],
                    100 * floor_us / us[0], us[1], 100 * floor_us / us[1], us[0] / us[1]);
        report.AddRow()
            .Str("model", m.name)
            .Str("kernel", op.name)
            .Num("rows", static_cast<double>(M))
            .Num("bytes", op.bytes_in + op.bytes_out)
            .Num("floor_us", floor_us)
            .Num("block_us", us[0])
            .Num("warp_us", us[1]);
      }
      CHECK(cudaFree(arena));
      CHECK(cudaFree(w));
      CHECK(cudaFree(scale));
      CHECK(cudaFree(out));
    }
  }
  CHECK(cudaStreamDestroy(stream));
  return report.WriteJsonIfAsked() ? 0 : 1;
}
