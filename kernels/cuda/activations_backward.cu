// Backward of SwiGLU, the log-sigmoid forget gate and the embedding gather on the GPU
// (fine-tuning); references in kernels/cpu/activations_backward.cc. Elementwise, in double where
// the references are (exp of a gate value).
#include <cuda_runtime.h>

#include "kernels/activations.h"

namespace gla::cuda {

namespace {

constexpr int kThreads = 256;

unsigned GridFor(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < 65535 * 8 ? b : 65535 * 8);  // grid-stride beyond that
}

__global__ void SwiGluBackwardKernel(const float* gate_up, int64_t gate_up_stride, const float* d_out,
                                     int64_t d_out_stride, float* d_gate_up, int64_t d_gate_up_stride, int64_t M,
                                     int64_t I) {
  for (int64_t k = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; k < M * I; k += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = k / I, i = k % I;
    const float g = gate_up[r * gate_up_stride + i], u = gate_up[r * gate_up_stride + I + i];
    const float d = d_out[r * d_out_stride + i];
    const double s = 1.0 / (1.0 + exp(-static_cast<double>(g)));
    d_gate_up[r * d_gate_up_stride + I + i] = static_cast<float>(d * g * s);
    d_gate_up[r * d_gate_up_stride + i] = static_cast<float>(d * u * s * (1.0 + g * (1.0 - s)));
  }
}

// Thread = one column over a run of rows (d_bias summed in a register, one atomic per run).
constexpr int kGateRows = 64;
__global__ void LogSigmoidGateBackwardKernel(const float* pre, int64_t pre_stride, const float* bias,
                                             const float* d_out, int64_t d_out_stride, float* d_pre,
                                             int64_t d_pre_stride, float* d_bias, int64_t rows, int64_t n,
                                             float normalizer, bool has_clamp, float clamp_min) {
  const int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const int64_t r0 = int64_t{blockIdx.y} * kGateRows, r1 = r0 + kGateRows < rows ? r0 + kGateRows : rows;
  const double b = bias != nullptr ? bias[i] : 0.0;
  double db = 0.0;
  for (int64_t r = r0; r < r1; ++r) {
    const double z = static_cast<double>(pre[r * pre_stride + i]) + b;
    const double y = (fmin(z, 0.0) - log1p(exp(-fabs(z)))) / normalizer;
    double g = d_out[r * d_out_stride + i] / (1.0 + exp(z)) / normalizer;
    if (has_clamp && y < clamp_min) g = 0.0;
    d_pre[r * d_pre_stride + i] = static_cast<float>(g);
    db += static_cast<float>(g);  // the reference adds the float values
  }
  if (d_bias != nullptr) atomicAdd(d_bias + i, static_cast<float>(db));
}

__global__ void EmbeddingScatterAddKernel(const float* d_out, int64_t D, const int32_t* ids, float* d_table) {
  const int64_t r = blockIdx.x;
  float* row = d_table + int64_t{ids[r]} * D;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) atomicAdd(row + i, d_out[r * D + i]);
}

}  // namespace

cudaError_t SwiGluBackward(const float* gate_up, int64_t gate_up_stride, const float* d_out, int64_t d_out_stride,
                           float* d_gate_up, int64_t d_gate_up_stride, int64_t M, int64_t I, cudaStream_t stream) {
  if (M < 0 || I < 0) return cudaErrorInvalidValue;
  if (M * I == 0) return cudaSuccess;
  SwiGluBackwardKernel<<<GridFor(M * I), kThreads, 0, stream>>>(gate_up, gate_up_stride, d_out, d_out_stride, d_gate_up,
                                                                d_gate_up_stride, M, I);
  return cudaGetLastError();
}

cudaError_t LogSigmoidGateBackward(const float* pre, int64_t pre_stride, const float* bias, const float* d_out,
                                   int64_t d_out_stride, float* d_pre, int64_t d_pre_stride, float* d_bias,
                                   int64_t rows, int64_t n, const ForgetGate& gate, cudaStream_t stream) {
  const float normalizer = gate.normalizer, clamp_min = gate.clamp_min;
  const bool has_clamp = gate.has_clamp;
  if (rows < 0 || n < 0 || normalizer == 0.0f || (rows + kGateRows - 1) / kGateRows > 65535)
    return cudaErrorInvalidValue;
  if (rows == 0 || n == 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>((n + kThreads - 1) / kThreads), static_cast<unsigned>((rows + kGateRows - 1) / kGateRows));
  LogSigmoidGateBackwardKernel<<<grid, kThreads, 0, stream>>>(pre, pre_stride, bias, d_out, d_out_stride, d_pre,
                                                               d_pre_stride, d_bias, rows, n, normalizer, has_clamp,
                                                               clamp_min);
  return cudaGetLastError();
}

cudaError_t EmbeddingScatterAdd(const float* d_out, int64_t D, const int32_t* ids, int64_t n, float* d_table,
                                cudaStream_t stream) {
  if (n < 0 || D < 1 || n > 0x7fffffff) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  EmbeddingScatterAddKernel<<<static_cast<unsigned>(n), kThreads, 0, stream>>>(d_out, D, ids, d_table);
  return cudaGetLastError();
}

}  // namespace gla::cuda
