// Backward of the RMS norms on the GPU (fine-tuning), references in kernels/cpu/norm_backward.cc.
// A block takes kRows rows one after another (the row reductions are block-wide), keeps its dw
// partial sums in shared memory and adds them to dw with one atomic per column at the end.
#include <cuda_runtime.h>

#include "kernels/cuda/block_reduce.cuh"
#include "kernels/norm.h"

namespace gla::cuda {

namespace {

constexpr int kThreads = 256, kRows = 16, kMaxWidth = 16384;

// One row: y = x inv w  ->  dx = inv (u - x inv^2 mean(u x)) with u = dy w;  dw += dy x inv.
// `dy` may be computed on the fly (RmsNormSwishGate's dn), hence the functor.
template <typename Dy>
__device__ void RowBackward(const float* x, const float* w, Dy dy, float* dx, bool accumulate, float* dw_acc, int n,
                            float eps, double* scratch) {
  double ss = 0.0, ux = 0.0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const double xi = x[i];
    ss += xi * xi;
    ux += static_cast<double>(dy(i)) * w[i] * xi;
  }
  ss = BlockSumDouble(ss, scratch);
  ux = BlockSumDouble(ux, scratch);
  const double inv = 1.0 / sqrt(ss / n + eps), k = inv * inv * ux / n;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const double d = dy(i);
    const float g = static_cast<float>(inv * (d * w[i] - x[i] * k));
    dx[i] = accumulate ? dx[i] + g : g;
    if (dw_acc != nullptr) dw_acc[i] += static_cast<float>(d * x[i] * inv);
  }
}

__global__ void __launch_bounds__(kThreads) RmsNormBackwardKernel(const float* x, int64_t x_stride, const float* w,
                                                                  const float* dy, int64_t dy_stride, float* dx,
                                                                  int64_t dx_stride, bool accumulate, float* dw,
                                                                  int64_t rows, int n, float eps) {
  extern __shared__ float dw_acc[];  // [n] when dw is wanted
  __shared__ double scratch[32];
  float* acc = dw != nullptr ? dw_acc : nullptr;
  if (acc)
    for (int i = threadIdx.x; i < n; i += blockDim.x) acc[i] = 0.f;
  const int64_t r0 = int64_t{blockIdx.x} * kRows, r1 = r0 + kRows < rows ? r0 + kRows : rows;
  for (int64_t r = r0; r < r1; ++r) {
    const float* dyr = dy + r * dy_stride;
    RowBackward(x + r * x_stride, w, [dyr](int i) { return dyr[i]; }, dx + r * dx_stride, accumulate, acc, n, eps,
                scratch);
  }
  if (acc) {
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x) atomicAdd(dw + i, acc[i]);
  }
}

__global__ void __launch_bounds__(kThreads) RmsNormSwishGateBackwardKernel(
    const float* o, int64_t o_stride, const float* gate, int64_t gate_stride, const float* w, const float* dy,
    int64_t dy_stride, float* d_o, int64_t d_o_stride, float* d_gate, int64_t d_gate_stride, float* dw, int64_t rows,
    int heads, int dv, float eps) {
  extern __shared__ float dw_acc[];
  __shared__ double scratch[32];
  float* acc = dw != nullptr ? dw_acc : nullptr;
  if (acc)
    for (int i = threadIdx.x; i < dv; i += blockDim.x) acc[i] = 0.f;
  const int64_t r0 = int64_t{blockIdx.x} * kRows, r1 = r0 + kRows < rows ? r0 + kRows : rows;
  for (int64_t r = r0; r < r1; ++r)
    for (int h = 0; h < heads; ++h) {
      const float* oh = o + r * o_stride + int64_t{h} * dv;
      const float* dyh = dy + r * dy_stride + int64_t{h} * dv;
      if (gate == nullptr) {
        RowBackward(oh, w, [dyh](int i) { return dyh[i]; }, d_o + r * d_o_stride + int64_t{h} * dv, false, acc, dv,
                    eps, scratch);
        continue;
      }
      // y = n swish(z), n = RmsNorm(o) w:  dn = dy swish(z),  dz = dy n swish'(z).
      const float* zh = gate + r * gate_stride + int64_t{h} * dv;
      float* dzh = d_gate + r * d_gate_stride + int64_t{h} * dv;
      double ss = 0.0;
      for (int i = threadIdx.x; i < dv; i += blockDim.x) ss += static_cast<double>(oh[i]) * oh[i];
      ss = BlockSumDouble(ss, scratch);
      const double inv = 1.0 / sqrt(ss / dv + eps);
      for (int i = threadIdx.x; i < dv; i += blockDim.x) {
        const double z = zh[i], s = 1.0 / (1.0 + exp(-z));
        dzh[i] = static_cast<float>(dyh[i] * (oh[i] * inv * w[i]) * s * (1.0 + z * (1.0 - s)));
      }
      auto dn = [dyh, zh](int i) {
        const double z = zh[i];
        return static_cast<float>(dyh[i] * z / (1.0 + exp(-z)));
      };
      RowBackward(oh, w, dn, d_o + r * d_o_stride + int64_t{h} * dv, false, acc, dv, eps, scratch);
    }
  if (acc) {
    __syncthreads();
    for (int i = threadIdx.x; i < dv; i += blockDim.x) atomicAdd(dw + i, acc[i]);
  }
}

unsigned Blocks(int64_t rows) { return static_cast<unsigned>((rows + kRows - 1) / kRows); }

}  // namespace

cudaError_t RmsNormBackward(const float* x, int64_t x_stride, const float* w, const float* dy, int64_t dy_stride,
                            float* dx, int64_t dx_stride, bool accumulate_dx, float* dw, int64_t rows, int n, float eps,
                            cudaStream_t stream) {
  if (rows < 0 || n < 1 || n > kMaxWidth) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  const size_t smem = dw != nullptr ? size_t(n) * sizeof(float) : 0;
  cudaError_t e = cudaFuncSetAttribute(RmsNormBackwardKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(smem));
  if (e != cudaSuccess) return e;
  RmsNormBackwardKernel<<<Blocks(rows), kThreads, smem, stream>>>(x, x_stride, w, dy, dy_stride, dx, dx_stride,
                                                                  accumulate_dx, dw, rows, n, eps);
  return cudaGetLastError();
}

cudaError_t RmsNormSwishGateBackward(const float* o, int64_t o_stride, const float* gate, int64_t gate_stride,
                                     const float* w, const float* dy, int64_t dy_stride, float* d_o, int64_t d_o_stride,
                                     float* d_gate, int64_t d_gate_stride, float* dw, int64_t rows, int heads, int dv,
                                     float eps, cudaStream_t stream) {
  if (rows < 0 || heads < 1 || dv < 1 || dv > kMaxWidth || (gate != nullptr && d_gate == nullptr))
    return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  const size_t smem = dw != nullptr ? size_t(dv) * sizeof(float) : 0;
  cudaError_t e = cudaFuncSetAttribute(RmsNormSwishGateBackwardKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(smem));
  if (e != cudaSuccess) return e;
  RmsNormSwishGateBackwardKernel<<<Blocks(rows), kThreads, smem, stream>>>(o, o_stride, gate, gate_stride, w, dy,
                                                                           dy_stride, d_o, d_o_stride, d_gate,
                                                                           d_gate_stride, dw, rows, heads, dv, eps);
  return cudaGetLastError();
}

}  // namespace gla::cuda
