// GLA recurrent decode step on the GPU (the serving hot path once a batch is large).
//
// Memory-bound: each (sequence, head) state S [dk, dv] fp32 is read once and written once.
// A block owns 32 columns of one head of one sequence: 8 lanes x float4 (16-byte accesses, a
// warp covers 4 rows x 128 B, coalesced) by 32 row groups. Each thread updates its rows in place,
//   S[i, j] = exp(g_i) S[i, j] + k_i v_j,   acc_j += (scale q_i) S[i, j]
// and the 32 partial sums per column are reduced through shared memory in a fixed order, so the
// result is deterministic (no atomics). q, k and exp(g) of the head are staged in shared memory.
#include <cuda_runtime.h>

#include "kernels/gla.h"

namespace gla::cuda {

namespace {

constexpr int kLanes = 8;       // float4 lanes across columns
constexpr int kCols = kLanes * 4;  // 32 columns per block
constexpr int kRowGroups = 32;
constexpr int kThreads = kLanes * kRowGroups;  // 256
constexpr int kMaxDk = 1024;
static_assert(kThreads == 256, "launch bounds below assume 256 threads");

__global__ void __launch_bounds__(kThreads) GlaDecodeKernel(const GlaDecodeCudaParams p) {
  const int n = blockIdx.z, h = blockIdx.y;
  const int hk = h / (p.H / p.Hkv);
  const int lane = threadIdx.x % kLanes, group = threadIdx.x / kLanes;
  const int col = blockIdx.x * kCols + lane * 4;

  __shared__ float q_s[kMaxDk], k_s[kMaxDk], decay_s[kMaxDk];
  __shared__ float4 partial[kRowGroups][kLanes];
  const float* q = p.q + n * p.q_stride + h * p.dk;
  const float* k = p.k + n * p.k_stride + hk * p.dk;
  const float* g = p.g + n * p.g_stride + hk * p.dk;
  for (int i = threadIdx.x; i < p.dk; i += kThreads) {
    q_s[i] = p.scale * q[i];
    k_s[i] = k[i];
    decay_s[i] = expf(g[i]);
  }
  __syncthreads();

  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
  if (col < p.dv) {
    const float4 v = *reinterpret_cast<const float4*>(p.v + n * p.v_stride + hk * p.dv + col);
    float* S = p.state_base + static_cast<int64_t>(p.slots[n]) * p.slot_stride + static_cast<int64_t>(h) * p.dk * p.dv;
#pragma unroll 4
    for (int i = group; i < p.dk; i += kRowGroups) {
      float4* cell = reinterpret_cast<float4*>(S + static_cast<int64_t>(i) * p.dv + col);
      float4 s = *cell;
      const float a = decay_s[i], ki = k_s[i], qi = q_s[i];
      s.x = a * s.x + ki * v.x;
      s.y = a * s.y + ki * v.y;
      s.z = a * s.z + ki * v.z;
      s.w = a * s.w + ki * v.w;
      *cell = s;
      acc.x += qi * s.x;
      acc.y += qi * s.y;
      acc.z += qi * s.z;
      acc.w += qi * s.w;
    }
  }
  partial[group][lane] = acc;
  __syncthreads();
  if (group == 0 && col < p.dv) {
    float4 sum = partial[0][lane];
    for (int r = 1; r < kRowGroups; ++r) {
      const float4 x = partial[r][lane];
      sum.x += x.x;
      sum.y += x.y;
      sum.z += x.z;
      sum.w += x.w;
    }
    *reinterpret_cast<float4*>(p.o + n * p.o_stride + h * p.dv + col) = sum;
  }
}

}  // namespace

cudaError_t GlaDecodeStep(const GlaDecodeCudaParams& p, cudaStream_t stream) {
  if (p.N == 0) return cudaSuccess;
  if (p.N < 0 || p.H <= 0 || p.Hkv <= 0 || p.H % p.Hkv != 0 || p.dk <= 0 || p.dk > kMaxDk || p.dv <= 0 ||
      p.dv % 4 != 0 || p.N > 65535 || p.H > 65535)
    return cudaErrorInvalidValue;
  const dim3 grid((p.dv + kCols - 1) / kCols, p.H, p.N);
  GlaDecodeKernel<<<grid, kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace gla::cuda
