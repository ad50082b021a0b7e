// RMSNorm and the GLA output norm × swish gate on the GPU. fp32 in; bf16 out for serving (the
// output feeds a bf16 GEMM, so rounding once here is the only precision the next op can use anyway)
// or fp32 out for training (the backward reads the activations the forward saved).
// One block per row (per row and head for the gate norm); the sum of squares is reduced in a
// fixed order (warp shuffles, then one warp over the warp sums), so results are deterministic.
// Many rows (a prefill) run a warp a row instead (kernels/cuda/warp_rows.cuh: the same sum in the
// same order, so the same bits; RowForm in kernels/row_form.h).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "kernels/cuda/launch.cuh"

#include "kernels/cuda/block_reduce.cuh"
#include "kernels/cuda/warp_rows.cuh"
#include "kernels/norm.h"

namespace gla::cuda {

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ void Store(__nv_bfloat16* p, float v) { *p = __float2bfloat16(v); }
__device__ __forceinline__ void Store(float* p, float v) { *p = v; }

template <typename Out>
__global__ void __launch_bounds__(kThreads) RmsNormKernel(const float* x, int64_t x_stride, const int32_t* row_ids,
                                                          const float* w, Out* y, int64_t y_stride, int n,
                                                          float eps) {
  WaitForPredecessor();  // see kernels/cuda/launch.cuh
  LetDependentsLaunch();
  const int64_t r = blockIdx.x;
  const float* xr = x + (row_ids ? static_cast<int64_t>(row_ids[r]) : r) * x_stride;
  float ss = 0.f;
  for (int i = threadIdx.x; i < n; i += kThreads) ss = SquareAdd(xr[i], ss);
  const float inv = rsqrtf(BlockSum<kThreads>(ss) / n + eps);
  Out* yr = y + r * y_stride;
  for (int i = threadIdx.x; i < n; i += kThreads) Store(&yr[i], xr[i] * inv * w[i]);
}

constexpr int kGateThreads = 128;

template <typename Out>
__global__ void __launch_bounds__(kGateThreads) RmsNormSwishGateKernel(const float* o, int64_t o_stride,
                                                                       const float* gate, int64_t gate_stride,
                                                                       const float* w, Out* y,
                                                                       int64_t y_stride, int dv, float eps) {
  WaitForPredecessor();  // see kernels/cuda/launch.cuh
  LetDependentsLaunch();
  const int64_t r = blockIdx.x;
  const int h = blockIdx.y;
  const float* oh = o + r * o_stride + static_cast<int64_t>(h) * dv;
  float ss = 0.f;
  for (int i = threadIdx.x; i < dv; i += kGateThreads) ss = SquareAdd(oh[i], ss);
  const float inv = rsqrtf(BlockSum<kGateThreads>(ss) / dv + eps);
  Out* yh = y + r * y_stride + static_cast<int64_t>(h) * dv;
  for (int i = threadIdx.x; i < dv; i += kGateThreads) {
    float val = oh[i] * inv * w[i];
    if (gate != nullptr) {
      const float z = gate[r * gate_stride + static_cast<int64_t>(h) * dv + i];
      val *= z / (1.f + __expf(-z));
    }
    Store(&yh[i], val);
  }
}

// The warp forms: kWarpRows rows (or row heads) a block of as many warps, a warp each.
constexpr int kWarpRows = 8;

template <typename Out>
__global__ void __launch_bounds__(kWarpRows * 32) RmsNormWarpKernel(const float* x, int64_t x_stride,
                                                                     const int32_t* row_ids, const float* w, Out* y,
                                                                     int64_t y_stride, int64_t rows, int n, float eps) {
  WaitForPredecessor();  // see kernels/cuda/launch.cuh
  LetDependentsLaunch();
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kWarpRows + threadIdx.x / 32;
  if (r >= rows) return;  // a whole warp: no barrier below
  const float* xr = x + (row_ids ? static_cast<int64_t>(row_ids[r]) : r) * x_stride;
  Out* yr = y + r * y_stride;
  warp_rows::RmsNormRow(xr, w, n, eps, [&](int i, float v) { Store(&yr[i], v); });
}

template <typename Out>
__global__ void __launch_bounds__(kWarpRows * 32) RmsNormSwishGateWarpKernel(const float* o, int64_t o_stride,
                                                                              const float* gate, int64_t gate_stride,
                                                                              const float* w, Out* y, int64_t y_stride,
                                                                              int64_t rows, int heads, int dv,
                                                                              float eps) {
  WaitForPredecessor();  // see kernels/cuda/launch.cuh
  LetDependentsLaunch();
  const int64_t rh = static_cast<int64_t>(blockIdx.x) * kWarpRows + threadIdx.x / 32;  // row x heads + head
  if (rh >= rows * heads) return;  // a whole warp: no barrier below
  const int64_t r = rh / heads;
  const int h = static_cast<int>(rh % heads);
  const int64_t col = static_cast<int64_t>(h) * dv;
  Out* yh = y + r * y_stride + col;
  warp_rows::GatedHeadNormHead(o + r * o_stride + col, gate != nullptr ? gate + r * gate_stride + col : nullptr, w,
                               dv, eps, [&](int i, float v) { Store(&yh[i], v); });
}

unsigned WarpRowBlocks(int64_t items) { return static_cast<unsigned>((items + kWarpRows - 1) / kWarpRows); }

}  // namespace

namespace {

template <typename Out>
cudaError_t LaunchRmsNorm(const float* x, int64_t x_stride, const int32_t* row_ids, const float* w, Out* y,
                          int64_t y_stride, int64_t rows, int n, float eps, cudaStream_t stream, RowForm form) {
  if (rows == 0) return cudaSuccess;
  if (rows < 0 || rows > 0x7fffffff || n <= 0) return cudaErrorInvalidValue;
  if (form == RowForm::kWarpPerRow)
    return LaunchDependent(RmsNormWarpKernel<Out>, WarpRowBlocks(rows), kWarpRows * 32, stream, x, x_stride, row_ids,
                           w, y, y_stride, rows, n, eps);
  return LaunchDependent(RmsNormKernel<Out>, static_cast<unsigned>(rows), kThreads, stream, x, x_stride, row_ids, w, y,
                         y_stride, n, eps);
}

template <typename Out>
cudaError_t LaunchRmsNormSwishGate(const float* o, int64_t o_stride, const float* gate, int64_t gate_stride,
                                   const float* w, Out* y, int64_t y_stride, int64_t rows, int heads, int dv, float eps,
                                   cudaStream_t stream, RowForm form) {
  if (rows == 0) return cudaSuccess;
  if (rows < 0 || rows > 0x7fffffff || heads <= 0 || heads > 65535 || dv <= 0) return cudaErrorInvalidValue;
  if (form == RowForm::kWarpPerRow && rows * heads <= 0x7fffffff)  // the grid's x (a prefill's rows are far fewer)
    return LaunchDependent(RmsNormSwishGateWarpKernel<Out>, WarpRowBlocks(rows * heads), kWarpRows * 32, stream, o,
                           o_stride, gate, gate_stride, w, y, y_stride, rows, heads, dv, eps);
  const dim3 grid(static_cast<unsigned>(rows), heads);
  return LaunchDependent(RmsNormSwishGateKernel<Out>, grid, kGateThreads, stream, o, o_stride, gate, gate_stride, w, y,
                         y_stride, dv, eps);
}

}  // namespace

cudaError_t RmsNorm(const float* x, int64_t x_stride, const int32_t* row_ids, const float* w, __nv_bfloat16* y,
                    int64_t y_stride, int64_t rows, int n, float eps, cudaStream_t stream, RowForm form) {
  return LaunchRmsNorm(x, x_stride, row_ids, w, y, y_stride, rows, n, eps, stream, form);
}

cudaError_t RmsNorm(const float* x, int64_t x_stride, const int32_t* row_ids, const float* w, float* y,
                    int64_t y_stride, int64_t rows, int n, float eps, cudaStream_t stream, RowForm form) {
  return LaunchRmsNorm(x, x_stride, row_ids, w, y, y_stride, rows, n, eps, stream, form);
}

cudaError_t RmsNormSwishGate(const float* o, int64_t o_stride, const float* gate, int64_t gate_stride, const float* w,
                             __nv_bfloat16* y, int64_t y_stride, int64_t rows, int heads, int dv, float eps,
                             cudaStream_t stream, RowForm form) {
  return LaunchRmsNormSwishGate(o, o_stride, gate, gate_stride, w, y, y_stride, rows, heads, dv, eps, stream, form);
}

cudaError_t RmsNormSwishGate(const float* o, int64_t o_stride, const float* gate, int64_t gate_stride, const float* w,
                             float* y, int64_t y_stride, int64_t rows, int heads, int dv, float eps,
                             cudaStream_t stream, RowForm form) {
  return LaunchRmsNormSwishGate(o, o_stride, gate, gate_stride, w, y, y_stride, rows, heads, dv, eps, stream, form);
}

}  // namespace gla::cuda
