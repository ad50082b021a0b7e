// Token sampling on the GPU (rules: kernels/token_sampling.h). Three launches:
//   1. one block per row: penalised copy of the row, max, argmax (lowest id on ties), log-sum-exp;
//      greedy rows are done here.
//   2. (only when some row samples or wants logprobs) a stable segmented sort of every row by
//      logit, descending: equal logits keep ascending ids, the CPU sampler's tie order.
//   3. one block per row: top-n logprobs from the sorted order; for sampled rows top-k, min-p and
//      top-p cut-offs and the pick, through block-wide prefix sums in double.
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <cub/device/device_segmented_sort.cuh>
#include <cuda_runtime.h>

#include <cfloat>

#include "kernels/token_sampling.h"

namespace gla::cuda {

namespace {

constexpr int kThreads = 1024;

size_t Align(size_t n) { return (n + 255) / 256 * 256; }

struct Layout {
  size_t pen, ids, keys_out, ids_out, offsets, stats, temp, total;
};

size_t SortTempBytes(int rows, int vocab) {
  size_t bytes = 0;
  cub::DeviceSegmentedSort::StableSortPairsDescending(nullptr, bytes, static_cast<const float*>(nullptr),
                                                      static_cast<float*>(nullptr),
                                                      static_cast<const int32_t*>(nullptr),
                                                      static_cast<int32_t*>(nullptr), rows * vocab, rows,
                                                      static_cast<const int32_t*>(nullptr),
                                                      static_cast<const int32_t*>(nullptr));
  return bytes;
}

Layout MakeLayout(int rows, int vocab, size_t temp) {
  const size_t n = static_cast<size_t>(rows) * vocab;
  Layout l{};
  size_t at = 0;
  l.pen = at; at += Align(n * sizeof(float));
  l.ids = at; at += Align(n * sizeof(int32_t));
  l.keys_out = at; at += Align(n * sizeof(float));
  l.ids_out = at; at += Align(n * sizeof(int32_t));
  l.offsets = at; at += Align((rows + 1) * sizeof(int32_t));
  l.stats = at; at += Align(rows * sizeof(float2));
  l.temp = at; at += Align(temp);
  l.total = at;
  return l;
}

__device__ inline unsigned long long SplitMix64(unsigned long long x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// The CPU's UniformFromCounter, bit for bit.
__device__ inline double UniformFromCounter(unsigned long long seed, unsigned long long step) {
  const unsigned long long bits = SplitMix64(SplitMix64(seed) ^ (step * 0xD1B54A32D192ED03ull));
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

struct MaxArg {
  float v;
  int i;
};
struct MaxArgOp {
  __device__ MaxArg operator()(const MaxArg& a, const MaxArg& b) const {
    return (a.v > b.v || (a.v == b.v && a.i < b.i)) ? a : b;
  }
};

__global__ void __launch_bounds__(kThreads) PenaltiesAndStats(SampleArgs a, float* pen, int32_t* ids,
                                                                 int32_t* offsets, float2* stats) {
  const int r = blockIdx.x, V = a.vocab;
  const SampleRowSpec s = a.specs[r];
  const float* in = a.logits + static_cast<int64_t>(s.logits_row) * a.logits_stride;
  float* p = pen + static_cast<int64_t>(r) * V;
  for (int i = threadIdx.x; i < V; i += kThreads) {
    p[i] = in[i];
    ids[static_cast<int64_t>(r) * V + i] = i;
  }
  if (threadIdx.x == 0) {
    offsets[r] = r * V;
    if (r == a.rows - 1) offsets[a.rows] = a.rows * V;
  }
  __syncthreads();
  // Each id appears once in a row's list, so threads never touch the same logit.
  for (int j = s.penalty_begin + threadIdx.x; j < s.penalty_end; j += kThreads) {
    const int id = a.penalty_ids[j];
    if (id < 0 || id >= V) continue;
    float l = p[id];
    if (s.repetition_penalty != 1.f && a.penalty_all[j] > 0) l = l > 0 ? l / s.repetition_penalty : l * s.repetition_penalty;
    if ((s.presence_penalty != 0.f || s.frequency_penalty != 0.f) && a.penalty_out[j] > 0)
      l -= s.presence_penalty + s.frequency_penalty * static_cast<float>(a.penalty_out[j]);
    p[id] = l;
  }
  __syncthreads();

  using MaxReduce = cub::BlockReduce<MaxArg, kThreads>;
  using SumReduce = cub::BlockReduce<double, kThreads>;
  __shared__ union {
    typename MaxReduce::TempStorage max;
    typename SumReduce::TempStorage sum;
  } tmp;
  __shared__ MaxArg best;
  MaxArg local{-FLT_MAX, 0x7fffffff};
  for (int i = threadIdx.x; i < V; i += kThreads) local = MaxArgOp()(local, MaxArg{p[i], i});
  const MaxArg m = MaxReduce(tmp.max).Reduce(local, MaxArgOp());
  if (threadIdx.x == 0) best = m;
  __syncthreads();
  const float mx = best.v;
  double z = 0.0;
  for (int i = threadIdx.x; i < V; i += kThreads) z += exp(static_cast<double>(p[i] - mx));
  z = SumReduce(tmp.sum).Sum(z);
  if (threadIdx.x == 0) {
    const float log_z = mx + static_cast<float>(log(z));
    stats[r] = make_float2(mx, log_z);
    a.out_token[r] = best.i;  // greedy; a sampled row overwrites it in the pick kernel
    a.out_logprob[r] = p[best.i] - log_z;
  }
}

// Block-wide: the exclusive prefix of `local` over threads, and the total.
__device__ inline double ExclusivePrefix(double local, double* total) {
  using Scan = cub::BlockScan<double, kThreads>;
  __shared__ typename Scan::TempStorage tmp;
  double excl = 0.0, sum = 0.0;
  Scan(tmp).ExclusiveSum(local, excl, sum);
  __syncthreads();  // tmp is reused by the next call
  *total = sum;
  return excl;
}

struct MinOp {
  __device__ int operator()(int a, int b) const { return a < b ? a : b; }
};

__device__ inline int BlockMin(int v) {
  using Reduce = cub::BlockReduce<int, kThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  __shared__ int result;
  const int m = Reduce(tmp).Reduce(v, MinOp());
  if (threadIdx.x == 0) result = m;
  __syncthreads();
  const int out = result;
  __syncthreads();
  return out;
}

__global__ void __launch_bounds__(kThreads) TopAndPick(SampleArgs a, const float* keys_all, const int32_t* ids_all,
                                                          const float2* stats) {
  const int r = blockIdx.x, V = a.vocab;
  const SampleRowSpec s = a.specs[r];
  const float* keys = keys_all + static_cast<int64_t>(r) * V;
  const int32_t* ids = ids_all + static_cast<int64_t>(r) * V;
  const float log_z = stats[r].y;
  if (s.logprobs > 0) {
    const int n = min(min(s.logprobs, V), a.max_top);
    for (int i = threadIdx.x; i < n; i += kThreads) {
      a.out_top_ids[static_cast<int64_t>(r) * a.max_top + i] = ids[i];
      a.out_top_logprobs[static_cast<int64_t>(r) * a.max_top + i] = keys[i] - log_z;
    }
  }
  if (s.temperature <= 0.f) return;  // uniform per block: no barrier below is skipped by part of it

  const float T = s.temperature;
  const double top = static_cast<double>(keys[0] / T);
  auto prob = [&](int i) { return exp(static_cast<double>(keys[i] / T) - top); };
  int n = s.top_k > 0 ? min(s.top_k, V) : V;
  // Contiguous chunks per thread, so per-thread prefix sums follow the sorted order.
  auto chunk = [&](int limit, int* b, int* e) {
    const int per = (limit + kThreads - 1) / kThreads;
    *b = min(limit, threadIdx.x * per);
    *e = min(limit, *b + per);
  };
  int b, e;
  if (s.min_p > 0.f) {  // probabilities fall along the sorted order: keep those >= min_p * prob[0]
    const double thr = static_cast<double>(s.min_p) * 1.0;  // prob[0] = exp(0) = 1
    chunk(n, &b, &e);
    int first_below = n;
    for (int i = b; i < e; ++i)
      if (prob(i) < thr) {
        first_below = i;
        break;
      }
    n = max(BlockMin(first_below), 1);
  }
  chunk(n, &b, &e);
  double local = 0.0;
  for (int i = b; i < e; ++i) local += prob(i);
  double sum = 0.0;
  double excl = ExclusivePrefix(local, &sum);
  if (s.top_p < 1.f) {  // the smallest prefix whose mass reaches top_p * sum
    const double target = static_cast<double>(s.top_p) * sum;
    int keep = n;
    double acc = excl;
    for (int i = b; i < e; ++i) {
      if (acc >= target) {
        keep = i;
        break;
      }
      acc += prob(i);
    }
    n = max(BlockMin(keep), 1);
    chunk(n, &b, &e);
    local = 0.0;
    for (int i = b; i < e; ++i) local += prob(i);
    excl = ExclusivePrefix(local, &sum);
  }
  // The first candidate whose running mass passes u (the last one if rounding leaves u beyond).
  const double u = UniformFromCounter(s.seed, s.step) * sum;
  int found = 0x7fffffff;
  double acc = excl;
  for (int i = b; i < e; ++i) {
    acc += prob(i);
    if (u < acc) {
      found = i;
      break;
    }
  }
  const int pick = min(BlockMin(found), n - 1);
  if (threadIdx.x == 0) {
    a.out_token[r] = ids[pick];
    a.out_logprob[r] = keys[pick] - log_z;
  }
}

}  // namespace

size_t SampleWorkspaceBytes(int rows, int vocab) {
  if (rows <= 0 || vocab <= 0) return 0;
  return MakeLayout(rows, vocab, SortTempBytes(rows, vocab)).total;
}

cudaError_t SampleRows(const SampleArgs& a, cudaStream_t stream) {
  if (a.rows == 0) return cudaSuccess;
  if (a.rows < 0 || a.vocab <= 0 || a.vocab > a.logits_stride || a.specs == nullptr || a.out_token == nullptr ||
      a.out_logprob == nullptr || static_cast<int64_t>(a.rows) * a.vocab > 0x7fffffff)
    return cudaErrorInvalidValue;
  const size_t temp = SortTempBytes(a.rows, a.vocab);
  const Layout l = MakeLayout(a.rows, a.vocab, temp);
  if (a.workspace == nullptr || a.workspace_bytes < l.total) return cudaErrorInvalidValue;
  char* w = static_cast<char*>(a.workspace);
  float* pen = reinterpret_cast<float*>(w + l.pen);
  int32_t* ids = reinterpret_cast<int32_t*>(w + l.ids);
  float* keys_out = reinterpret_cast<float*>(w + l.keys_out);
  int32_t* ids_out = reinterpret_cast<int32_t*>(w + l.ids_out);
  int32_t* offsets = reinterpret_cast<int32_t*>(w + l.offsets);
  float2* stats = reinterpret_cast<float2*>(w + l.stats);
  PenaltiesAndStats<<<a.rows, kThreads, 0, stream>>>(a, pen, ids, offsets, stats);
  if (const cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  if (!a.needs_sort) return cudaSuccess;
  size_t temp_bytes = temp;
  if (const cudaError_t e = cub::DeviceSegmentedSort::StableSortPairsDescending(
          w + l.temp, temp_bytes, pen, keys_out, ids, ids_out, a.rows * a.vocab, a.rows, offsets, offsets + 1, stream);
      e != cudaSuccess)
    return e;
  TopAndPick<<<a.rows, kThreads, 0, stream>>>(a, keys_out, ids_out, stats);
  return cudaGetLastError();
}

}  // namespace gla::cuda
