// Token sampling on the GPU (rules: kernels/sampling.h). One launch, one 1024-thread block per row:
//   1. the row (ids < vocab_limit) into shared memory (or the workspace for large vocabularies),
//      penalties applied in the CPU's float arithmetic, -0 made +0 (the CPU compares -0 == +0);
//   2. max / argmax (lowest id on ties) as the largest 64-bit key (ordered logit bits << 32 |
//      ~id): keys order candidates exactly as the CPU sorts them; log-sum-exp;
//   3. greedy rows stop here. Sampled rows: top-k = the k-th largest key; then a histogram of the
//      candidates' masses exp(l/T - top) over 1024 value buckets, in 128-bit fixed point (2^-104
//      resolution, exact and order-free sums); top-p and the pick are "first candidate whose
//      running mass reaches a target": the bucket is found by a block scan of the histogram, then
//      refined over the 64-bit keys (10 bits a level) down to one candidate;
//   4. top-n logprobs: the n-th largest key by the same refinement over counts, then the n
//      candidates ranked.
// A token mask sets the ids it leaves out to -inf in step 1; its candidates are the first
// `allowed` keys, which is one more lower bound on the keys (with top-k's): the smallest allowed
// key when every allowed key is above every masked one (the usual case: one block reduction),
// the allowed-th key by refinement otherwise (allowed ids at -inf, tied with masked ones by id).
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>

#include "kernels/sampling.h"

namespace gla::cuda {

namespace {

using u32 = unsigned int;
using u64 = unsigned long long;
using u128 = unsigned __int128;

constexpr int kThreads = 1024;
constexpr int kBuckets = 1024;  // one per thread in the scans
constexpr int kBucketBits = 10;
constexpr int kFrac = 104;  // fixed point: mass * 2^104; kSampleMaxVocab masses <= 1 sum below 2^128
constexpr unsigned kFull = 0xffffffffu;
constexpr u128 kU128Max = ~static_cast<u128>(0);

// Shared memory of a block, ahead of the row when the row lives there too.
struct Shared {
  u64 cum_lo[kBuckets], cum_hi[kBuckets];  // level-1 histogram, then its inclusive prefix
  u64 sub_lo[kBuckets], sub_hi[kBuckets];  // refinement histogram
  u64 sub_kmin[kBuckets], sub_kmax[kBuckets];
  u64 scratch[64];
  u64 bcast[6];
  int first, last, count, allowed;  // allowed: ids a row's mask leaves
};
static_assert(sizeof(Shared) % 16 == 0, "the row after it stays 16-byte aligned");
static_assert(kSampleMaxTop <= kBuckets, "the top-n keys are gathered in sub_kmin");
static_assert((1ull << (127 - kFrac)) >= kSampleMaxVocab, "a row's mass sum (each mass <= 1) fits in 128 bits");

__device__ __forceinline__ u32 OrderedBits(float l) {
  const u32 b = __float_as_uint(l);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
__device__ __forceinline__ float FromOrderedBits(u32 o) {
  return __uint_as_float((o & 0x80000000u) ? (o & 0x7fffffffu) : ~o);
}
// Larger key = earlier in the CPU's candidate order (logit descending, then id ascending).
__device__ __forceinline__ u64 Key(float l, int i) {
  return (static_cast<u64>(OrderedBits(l)) << 32) | static_cast<u32>(0xffffffffu - static_cast<u32>(i));
}
__device__ __forceinline__ int KeyId(u64 k) { return static_cast<int>(0xffffffffu - static_cast<u32>(k)); }
__device__ __forceinline__ float KeyLogit(u64 k) { return FromOrderedBits(static_cast<u32>(k >> 32)); }

__device__ __forceinline__ u64 SplitMix64(u64 x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
// gla::UniformFromCounter, bit for bit.
__device__ __forceinline__ double UniformFromCounter(u64 seed, u64 step) {
  const u64 bits = SplitMix64(SplitMix64(seed) ^ (step * 0xD1B54A32D192ED03ull));
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

// x * 2^kFrac as an integer, x >= 0 (negative, NaN: 0; huge: saturated), rounded down or up.
__device__ __forceinline__ u128 ToFixed(double x, bool round_up) {
  if (!(x > 0.0)) return 0;
  const u64 bits = static_cast<u64>(__double_as_longlong(x));
  const int e = static_cast<int>((bits >> 52) & 0x7ff);
  if (e == 0) return round_up ? 1 : 0;
  if (e == 0x7ff) return kU128Max;
  const u64 m = (bits & ((1ull << 52) - 1)) | (1ull << 52);
  const int sh = e - 1075 + kFrac;  // x = m * 2^(e - 1075)
  if (sh >= 0) return sh > 74 ? kU128Max : static_cast<u128>(m) << sh;
  if (sh <= -64) return round_up ? 1 : 0;
  const u64 q = m >> -sh;
  return q + (round_up && (q << -sh) != m ? 1 : 0);
}
__device__ __forceinline__ double FromFixed(u128 x) {
  return static_cast<double>(static_cast<u64>(x >> 64)) * 0x1.0p-40 +
         static_cast<double>(static_cast<u64>(x)) * 0x1.0p-104;
}
__device__ __forceinline__ u128 U128(u64 lo, u64 hi) { return (static_cast<u128>(hi) << 64) | lo; }
__device__ __forceinline__ u128 Min128(u128 a, u128 b) { return a < b ? a : b; }

// Exact, order-free: the low word's carry goes into the high word.
__device__ __forceinline__ void HistAdd(u64* lo, u64* hi, int b, u128 w) {
  const u64 wl = static_cast<u64>(w);
  u64 wh = static_cast<u64>(w >> 64);
  if (wl != 0) {
    const u64 old = atomicAdd(&lo[b], wl);
    wh += (old + wl < old) ? 1 : 0;
  }
  if (wh != 0) atomicAdd(&hi[b], wh);
}

__device__ __forceinline__ u128 ShflXor128(u128 v, int m) {
  const u64 lo = __shfl_xor_sync(kFull, static_cast<u64>(v), m);
  const u64 hi = __shfl_xor_sync(kFull, static_cast<u64>(v >> 64), m);
  return U128(lo, hi);
}

// Adds weight w of key k to bucket b (b < 0: nothing), and k to the bucket's key range when kmin
// is given. The whole warp calls it; a warp whose lanes all hit one bucket (a run of equal
// logits, a tie group split by id) adds once instead of 32 times on one address.
__device__ __forceinline__ void WarpHistAdd(u64* lo, u64* hi, u64* kmin, u64* kmax, int b, u128 w, u64 k) {
  const int b0 = __shfl_sync(kFull, b, 0);
  if (__all_sync(kFull, b == b0)) {
    if (b0 < 0) return;
    u64 mn = k, mx = k;
    for (int off = 16; off > 0; off >>= 1) {
      w += ShflXor128(w, off);
      if (kmin != nullptr) {
        mn = min(mn, __shfl_xor_sync(kFull, mn, off));
        mx = max(mx, __shfl_xor_sync(kFull, mx, off));
      }
    }
    if ((threadIdx.x & 31) == 0) {
      HistAdd(lo, hi, b0, w);
      if (kmin != nullptr) {
        atomicMin(&kmin[b0], mn);
        atomicMax(&kmax[b0], mx);
      }
    }
  } else if (b >= 0) {
    HistAdd(lo, hi, b, w);
    if (kmin != nullptr) {
      atomicMin(&kmin[b], k);
      atomicMax(&kmax[b], k);
    }
  }
}

// The CPU's candidate probability: exp(l / T - top) with l / T in float, the rest in double.
__device__ __forceinline__ double Prob(float l, float t, double top) {
  return exp(__dsub_rn(static_cast<double>(__fdiv_rn(l, t)), top));
}

// Level-1 buckets: linear in the logit from `hi` (bucket 0) down to `lo`, clamped; monotone
// (non-decreasing as the logit falls), which is all the refinement needs.
struct ValueBuckets {
  float hi, inv;
  __device__ ValueBuckets(float hi_, float lo) : hi(hi_), inv(0.f) {
    const float d = __fsub_rn(hi_, lo);
    if (d > 0.f) {
      const float v = __fdiv_rn(static_cast<float>(kBuckets), d);
      if (v <= 3.0e38f) inv = v;
    }
  }
  __device__ __forceinline__ int operator()(float l) const {
    float q = __fmul_rn(__fsub_rn(hi, l), inv);
    q = fminf(q, static_cast<float>(kBuckets - 1));  // NaN -> the last bucket
    return q > 0.f ? static_cast<int>(q) : 0;
  }
};

// ---- Block-wide helpers (every thread calls them; they synchronise).
__device__ __forceinline__ void BlockMinMax(u64& mn, u64& mx, Shared& sm) {
  for (int off = 16; off > 0; off >>= 1) {
    mn = min(mn, __shfl_xor_sync(kFull, mn, off));
    mx = max(mx, __shfl_xor_sync(kFull, mx, off));
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    sm.scratch[warp] = mn;
    sm.scratch[32 + warp] = mx;
  }
  __syncthreads();
  mn = sm.scratch[0];
  mx = sm.scratch[32];
  for (int w = 1; w < kThreads / 32; ++w) {
    mn = min(mn, sm.scratch[w]);
    mx = max(mx, sm.scratch[32 + w]);
  }
  __syncthreads();
}

// A fixed summation order: the same bits on every run.
__device__ __forceinline__ double BlockSum(double v, Shared& sm) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(kFull, v, off);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) sm.scratch[warp] = static_cast<u64>(__double_as_longlong(v));
  __syncthreads();
  double s = 0.0;
  for (int w = 0; w < kThreads / 32; ++w) s += __longlong_as_double(static_cast<long long>(sm.scratch[w]));
  __syncthreads();
  return s;
}

__device__ __forceinline__ u128 ShflUp128(u128 v, int d) {
  const u64 lo = __shfl_up_sync(kFull, static_cast<u64>(v), d);
  const u64 hi = __shfl_up_sync(kFull, static_cast<u64>(v >> 64), d);
  return U128(lo, hi);
}

__device__ __forceinline__ u128 BlockInclusiveScan(u128 v, Shared& sm) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int d = 1; d < 32; d <<= 1) {
    const u128 t = ShflUp128(v, d);
    if (lane >= d) v += t;
  }
  if (lane == 31) {
    sm.scratch[warp] = static_cast<u64>(v);
    sm.scratch[32 + warp] = static_cast<u64>(v >> 64);
  }
  __syncthreads();
  if (warp == 0) {
    u128 w = U128(sm.scratch[lane], sm.scratch[32 + lane]);
    for (int d = 1; d < 32; d <<= 1) {
      const u128 t = ShflUp128(w, d);
      if (lane >= d) w += t;
    }
    sm.scratch[lane] = static_cast<u64>(w);
    sm.scratch[32 + lane] = static_cast<u64>(w >> 64);
  }
  __syncthreads();
  if (warp > 0) v += U128(sm.scratch[warp - 1], sm.scratch[32 + warp - 1]);
  __syncthreads();
  return v;
}

// The level-1 histogram in cum_lo/cum_hi becomes its inclusive prefix.
__device__ __forceinline__ void ScanLevel1(Shared& sm) {
  const int t = threadIdx.x;
  const u128 incl = BlockInclusiveScan(U128(sm.cum_lo[t], sm.cum_hi[t]), sm);
  sm.cum_lo[t] = static_cast<u64>(incl);
  sm.cum_hi[t] = static_cast<u64>(incl >> 64);
  __syncthreads();
}

struct Found {
  bool ok;
  u64 key;       // the candidate
  u128 through;  // running weight up to and including it
};

// The first candidate, in key order (largest first), whose running weight reaches `target`
// (strict: exceeds it). The level-1 prefix is in cum_*; `cap` caps it (the running weight of the
// last allowed candidate: later buckets are then never reached). in_bucket(l, key, b): the
// candidate belongs to level-1 bucket b, and is allowed. weight(l): its weight; the same function
// that filled the level-1 histogram. Candidates allowed form a prefix of the key order, so every
// key between two allowed keys is allowed: below level 1 a range of keys is all a level needs.
template <class InBucket, class Weight>
__device__ Found Crossing(Shared& sm, const float* row, int V, u128 target, bool strict, u128 cap,
                          InBucket in_bucket, Weight weight) {
  const int tid = threadIdx.x;
  if (tid == 0) sm.first = kBuckets;
  __syncthreads();
  {
    const u128 c = Min128(U128(sm.cum_lo[tid], sm.cum_hi[tid]), cap);
    if (strict ? c > target : c >= target) atomicMin(&sm.first, tid);
  }
  __syncthreads();
  const int b = sm.first;
  if (b == kBuckets) return Found{false, 0, 0};
  u128 base = b == 0 ? 0 : Min128(U128(sm.cum_lo[b - 1], sm.cum_hi[b - 1]), cap);
  u128 mass = Min128(U128(sm.cum_lo[b], sm.cum_hi[b]), cap) - base;
  u64 kmin = ~0ull, kmax = 0;
  for (int i = tid; i < V; i += kThreads) {
    const float l = row[i];
    const u64 k = Key(l, i);
    if (in_bucket(l, k, b)) {
      kmin = min(kmin, k);
      kmax = max(kmax, k);
    }
  }
  BlockMinMax(kmin, kmax, sm);
  if (kmin > kmax) return Found{false, 0, 0};  // cannot happen: the bucket had weight
  while (kmin != kmax) {
    const u64 span = kmax - kmin;
    const int shift = max(0, 64 - __clzll(static_cast<long long>(span)) - kBucketBits);
    sm.sub_lo[tid] = 0;
    sm.sub_hi[tid] = 0;
    sm.sub_kmin[tid] = ~0ull;
    sm.sub_kmax[tid] = 0;
    if (tid == 0) {
      sm.first = kBuckets;
      sm.last = -1;
    }
    __syncthreads();
    for (int i0 = 0; i0 < V; i0 += kThreads) {  // uniform trip count: warp-wide adds
      const int i = i0 + tid;
      int j = -1;
      u128 w = 0;
      u64 k = 0;
      if (i < V) {
        const float l = row[i];
        k = Key(l, i);
        if (k >= kmin && k <= kmax) {
          j = static_cast<int>((kmax - k) >> shift);
          w = weight(l);
        }
      }
      WarpHistAdd(sm.sub_lo, sm.sub_hi, sm.sub_kmin, sm.sub_kmax, j, w, k);
    }
    __syncthreads();
    const u128 own = U128(sm.sub_lo[tid], sm.sub_hi[tid]);
    const u128 incl = base + BlockInclusiveScan(own, sm);
    const bool nonempty = sm.sub_kmax[tid] != 0;  // keys are never 0 (the id half is >= 2^31)
    if (nonempty && (strict ? incl > target : incl >= target)) atomicMin(&sm.first, tid);
    if (nonempty) atomicMax(&sm.last, tid);
    __syncthreads();
    const int j = sm.first < kBuckets ? sm.first : sm.last;  // the last: cannot happen either
    if (tid == j) {
      const u128 before = incl - own;
      sm.bcast[0] = static_cast<u64>(before);
      sm.bcast[1] = static_cast<u64>(before >> 64);
      sm.bcast[2] = static_cast<u64>(own);
      sm.bcast[3] = static_cast<u64>(own >> 64);
      sm.bcast[4] = sm.sub_kmin[j];
      sm.bcast[5] = sm.sub_kmax[j];
    }
    __syncthreads();
    base = U128(sm.bcast[0], sm.bcast[1]);
    mass = U128(sm.bcast[2], sm.bcast[3]);
    kmin = sm.bcast[4];
    kmax = sm.bcast[5];
    __syncthreads();
  }
  return Found{true, kmin, base + mass};
}

// The key of the k-th candidate (1-based) in key order over the whole row.
__device__ u64 KthKey(Shared& sm, const float* row, int V, int k, ValueBuckets vb) {
  const int tid = threadIdx.x;
  sm.cum_lo[tid] = 0;
  sm.cum_hi[tid] = 0;
  __syncthreads();
  for (int i0 = 0; i0 < V; i0 += kThreads) {
    const int i = i0 + tid;
    const int b = i < V ? vb(row[i]) : -1;
    // Warp-aggregated: rows with many equal logits (masked ids at -inf) would serialise otherwise.
    const unsigned group = __match_any_sync(kFull, b);
    if (b >= 0 && (threadIdx.x & 31) == __ffs(group) - 1) atomicAdd(&sm.cum_lo[b], static_cast<u64>(__popc(group)));
  }
  __syncthreads();
  ScanLevel1(sm);
  const Found f = Crossing(
      sm, row, V, static_cast<u128>(k), false, kU128Max, [&](float l, u64, int b) { return vb(l) == b; },
      [](float) { return static_cast<u128>(1); });
  return f.key;
}

__global__ void __launch_bounds__(kThreads, 1)
    SampleKernel(SampleArgs a, float* global_rows, int row_in_shared) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  Shared& sm = *reinterpret_cast<Shared*>(smem_raw);
  const int r = blockIdx.x, tid = threadIdx.x, V = a.vocab_limit;
  const SampleRowSpec spec = a.specs[r];
  const bool masked = spec.mask_row >= 0;
  if (masked && (spec.mask_row >= a.mask_rows || a.masks == nullptr)) {
    // Not an unmasked pick instead: that would break the constraint without a word. The host
    // checks its mask rows; -1 tells it the kernel found one out of range.
    if (tid == 0) {
      a.out_token[r] = -1;
      a.out_logprob[r] = __int_as_float(0x7fffffff);
    }
    return;  // the whole block: spec is the block's
  }
  const uint64_t* mask = masked ? a.masks + static_cast<size_t>(spec.mask_row) * a.mask_words : nullptr;
  float* row = row_in_shared ? reinterpret_cast<float*>(smem_raw + sizeof(Shared))
                             : global_rows + static_cast<size_t>(r) * V;
  const float* in = a.logits + static_cast<int64_t>(spec.logits_row) * a.logits_stride;

  // 1. The row, masked, penalised.
  if (tid == 0) sm.allowed = 0;  // counted after the barrier below
  if (((reinterpret_cast<uintptr_t>(in) | reinterpret_cast<uintptr_t>(row)) & 15) == 0) {
    const int n4 = V / 4;
#pragma unroll 4
    for (int i = tid; i < n4; i += kThreads) reinterpret_cast<float4*>(row)[i] = reinterpret_cast<const float4*>(in)[i];
    for (int i = n4 * 4 + tid; i < V; i += kThreads) row[i] = in[i];
  } else {
    for (int i = tid; i < V; i += kThreads) row[i] = in[i];
  }
  __syncthreads();
  int allowed = V;  // the CPU's `candidates`
  if (masked) {
    // The 64 threads of a word read it together: one broadcast load per warp.
    for (int i = tid; i < V; i += kThreads)
      if (!((mask[i >> 6] >> (i & 63)) & 1)) row[i] = -INFINITY;
    const int words = (V + 63) / 64;
    int c = 0;
    for (int w = tid; w < words; w += kThreads) {
      u64 bits = mask[w];
      if (w == words - 1 && (V & 63) != 0) bits &= (1ull << (V & 63)) - 1;  // ids >= vocab_limit: not candidates
      c += __popcll(bits);
    }
    for (int off = 16; off > 0; off >>= 1) c += __shfl_xor_sync(kFull, c, off);
    if ((tid & 31) == 0 && c != 0) atomicAdd(&sm.allowed, c);
    __syncthreads();
    if (sm.allowed > 0) allowed = sm.allowed;  // none left: every id, as the CPU (callers never send one)
  }
  const bool rep = spec.repetition_penalty != 1.f;
  const bool pres = spec.presence_penalty != 0.f || spec.frequency_penalty != 0.f;
  const bool bias = spec.biased && a.penalty_bias != nullptr;
  if ((rep || pres || bias) && spec.penalty_end > spec.penalty_begin) {
    // Each id appears once in a row's entries: no two threads touch the same logit.
    for (int j = spec.penalty_begin + tid; j < spec.penalty_end; j += kThreads) {
      const int id = a.penalty_ids[j];
      if (id < 0 || id >= V) continue;
      float l = row[id];
      if (bias) l = __fadd_rn(l, a.penalty_bias[j]);
      if (rep && a.penalty_all_counts[j] > 0)
        l = l > 0.f ? __fdiv_rn(l, spec.repetition_penalty) : __fmul_rn(l, spec.repetition_penalty);
      const int n = a.penalty_output_counts[j];
      if (pres && n > 0)
        l = __fsub_rn(l, __fadd_rn(spec.presence_penalty, __fmul_rn(spec.frequency_penalty, static_cast<float>(n))));
      row[id] = l;
    }
    __syncthreads();
  }

  // 2. Max / argmax, the smallest finite logit, log-sum-exp.
  u64 kbest = 0, fmin = ~0ull;
  for (int i = tid; i < V; i += kThreads) {
    float l = row[i];
    if (__float_as_uint(l) == 0x80000000u) row[i] = l = 0.f;
    kbest = max(kbest, Key(l, i));
    if (isfinite(l)) fmin = min(fmin, static_cast<u64>(OrderedBits(l)));
  }
  BlockMinMax(fmin, kbest, sm);  // min of the one, max of the other
  const float mx = KeyLogit(kbest);
  const int argmax = KeyId(kbest);
  const float lo_all = fmin == ~0ull ? mx : FromOrderedBits(static_cast<u32>(fmin));
  double z = 0.0;
  for (int i = tid; i < V; i += kThreads) z += static_cast<double>(expf(__fsub_rn(row[i], mx)));
  z = BlockSum(z, sm);
  const float log_z = __fadd_rn(mx, static_cast<float>(log(z)));
  const bool sampled = spec.forced_token < 0 && !(spec.temperature <= 0.f);
  const int n = min(min(min(spec.logprobs, V), a.max_top), allowed);  // top-n

  // The mask's candidates: keys >= kmask (0: every key). Greedy rows need it only for a top-n of
  // all the allowed ids: their argmax is the CPU's already.
  u64 kmask = 0;
  if (allowed < V && (sampled || n == allowed)) {
    u64 amin = ~0ull, dmax = 0;  // smallest allowed key, largest masked one
    for (int i = tid; i < V; i += kThreads) {
      const u64 k = Key(row[i], i);
      if ((mask[i >> 6] >> (i & 63)) & 1) amin = min(amin, k);
      else dmax = max(dmax, k);
    }
    BlockMinMax(amin, dmax, sm);
    kmask = amin > dmax ? amin : KthKey(sm, row, V, allowed, ValueBuckets(mx, lo_all));
  }

  // 3. The token.
  int token = spec.forced_token >= 0 ? spec.forced_token : argmax;
  if (sampled) {
    const float t = spec.temperature;
    const double top = static_cast<double>(__fdiv_rn(mx, t));
    const ValueBuckets all_buckets(mx, lo_all);
    u64 kappa = 0;  // top-k: candidates are keys >= kappa
    float lo = lo_all;
    if (spec.top_k > 0 && spec.top_k < allowed) {
      kappa = KthKey(sm, row, V, spec.top_k, all_buckets);
      const float lk = KeyLogit(kappa);
      if (lk > lo && lk <= mx) lo = lk;
    }
    if (kmask > kappa) {  // top-k off or at least `allowed`: the mask's is the k-th key
      kappa = kmask;
      const float lk = KeyLogit(kappa);
      if (lk > lo && lk <= mx) lo = lk;
    }
    const bool use_min_p = spec.min_p > 0.f;
    const double thr = static_cast<double>(spec.min_p);  // * prob of the top candidate, 1
    if (use_min_p) {  // a lower bound for the bucket range only: its accuracy does not matter
      const float lm = static_cast<float>(static_cast<double>(t) * (top + log(thr)));
      if (lm > lo && lm <= mx) lo = lm;
    }
    const ValueBuckets vb(mx, lo);
    auto member = [&](float l, u64 k) {
      return k >= kappa && (!use_min_p || k == kbest || Prob(l, t, top) >= thr);
    };
    auto mass = [&](float l) { return ToFixed(Prob(l, t, top), false); };

    sm.cum_lo[tid] = 0;
    sm.cum_hi[tid] = 0;
    __syncthreads();
    for (int i0 = 0; i0 < V; i0 += kThreads) {
      const int i = i0 + tid;
      int b = -1;
      u128 w = 0;
      if (i < V) {
        const float l = row[i];
        const u64 k = Key(l, i);
        if (k >= kappa) {
          const double p = Prob(l, t, top);
          if (!use_min_p || k == kbest || p >= thr) {
            b = vb(l);
            w = ToFixed(p, false);
          }
        }
      }
      WarpHistAdd(sm.cum_lo, sm.cum_hi, nullptr, nullptr, b, w, 0);
    }
    __syncthreads();
    ScanLevel1(sm);
    const u128 sum = U128(sm.cum_lo[kBuckets - 1], sm.cum_hi[kBuckets - 1]);

    u64 limit = kappa;  // after top-p: keys >= the last kept candidate's
    u128 kept = sum;    // their mass
    bool cut = false;
    if (spec.top_p < 1.f) {  // kept: the candidates whose mass before them is < top_p * sum
      const double target = static_cast<double>(spec.top_p) * FromFixed(sum);
      const Found f = Crossing(
          sm, row, V, ToFixed(target, true), false, kU128Max,
          [&](float l, u64 k, int b) { return vb(l) == b && member(l, k); }, mass);
      if (f.ok) {
        limit = f.key;
        kept = f.through;
        cut = true;
      }
    }
    const double u = UniformFromCounter(spec.seed, spec.step) * FromFixed(kept);
    const Found f = Crossing(
        sm, row, V, ToFixed(u, false), true, kept,
        [&](float l, u64 k, int b) { return vb(l) == b && k >= limit && member(l, k); }, mass);
    u64 pick = f.key;
    if (!f.ok) {  // rounding left u at or beyond the total: the last kept candidate, as the CPU
      if (cut) {
        pick = limit;
      } else {
        u64 kmin = ~0ull, unused = 0;
        for (int i = tid; i < V; i += kThreads) {
          const float l = row[i];
          const u64 k = Key(l, i);
          if (member(l, k)) kmin = min(kmin, k);
        }
        BlockMinMax(kmin, unused, sm);
        pick = kmin;
      }
    }
    token = KeyId(pick);
  }
  if (tid == 0) {
    a.out_token[r] = token;
    a.out_logprob[r] = token < V ? __fsub_rn(row[token], log_z) : -INFINITY;
  }

  // 4. Top-n logprobs (n: above).
  if (n > 0) {
    const u64 kn = n >= V ? 0 : n == allowed ? kmask : KthKey(sm, row, V, n, ValueBuckets(mx, lo_all));
    if (tid == 0) sm.count = 0;
    __syncthreads();
    for (int i = tid; i < V; i += kThreads) {
      const u64 k = Key(row[i], i);
      if (k >= kn) sm.sub_kmin[atomicAdd(&sm.count, 1)] = k;  // exactly n of them
    }
    __syncthreads();
    if (tid < n) {
      const u64 k = sm.sub_kmin[tid];
      int rank = 0;
      for (int j = 0; j < n; ++j) rank += sm.sub_kmin[j] > k ? 1 : 0;
      const size_t at = static_cast<size_t>(r) * a.max_top + rank;
      a.out_top_ids[at] = KeyId(k);
      a.out_top_logprobs[at] = __fsub_rn(KeyLogit(k), log_z);
    }
  }
}

int OptinSharedBytes() {
  static std::atomic<int> cache[64];
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return 48 << 10;
  if (dev >= 0 && dev < 64) {
    if (const int v = cache[dev].load(std::memory_order_relaxed); v > 0) return v;
  }
  int v = 0;
  if (cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess || v <= 0) v = 48 << 10;
  if (dev >= 0 && dev < 64) cache[dev].store(v, std::memory_order_relaxed);
  return v;
}

bool RowInShared(int vocab) {
  return sizeof(Shared) + static_cast<size_t>(vocab) * sizeof(float) <= static_cast<size_t>(OptinSharedBytes());
}

}  // namespace

size_t SampleWorkspaceBytes(int rows, int vocab) {
  if (rows <= 0 || vocab <= 0 || RowInShared(vocab)) return 0;
  return (static_cast<size_t>(rows) * vocab * sizeof(float) + 255) / 256 * 256;
}

cudaError_t SampleRows(const SampleArgs& a, cudaStream_t stream) {
  if (a.rows == 0) return cudaSuccess;
  const int V = a.vocab_limit;
  if (a.rows < 0 || V <= 0 || V > kSampleMaxVocab || a.logits_stride < V || a.logits == nullptr || a.specs == nullptr ||
      a.out_token == nullptr || a.out_logprob == nullptr || a.max_top < 0 || a.max_top > kSampleMaxTop ||
      (a.max_top > 0 && (a.out_top_ids == nullptr || a.out_top_logprobs == nullptr)) || a.mask_rows < 0 ||
      (a.mask_rows > 0 && (a.masks == nullptr || a.mask_words < (V + 63) / 64)))
    return cudaErrorInvalidValue;
  const bool in_shared = RowInShared(V);
  float* global_rows = nullptr;
  if (!in_shared) {
    if (a.workspace == nullptr || a.workspace_bytes < static_cast<size_t>(a.rows) * V * sizeof(float))
      return cudaErrorInvalidValue;
    global_rows = static_cast<float*>(a.workspace);
  }
  const size_t smem = sizeof(Shared) + (in_shared ? static_cast<size_t>(V) * sizeof(float) : 0);
  // Once per device, the device's whole opt-in size: the same value from every caller, so
  // concurrent callers never lower it under each other.
  static std::atomic<bool> attribute_set[64];
  int dev = 0;
  if (const cudaError_t e = cudaGetDevice(&dev); e != cudaSuccess) return e;
  if (dev < 0 || dev >= 64 || !attribute_set[dev].load(std::memory_order_acquire)) {
    if (const cudaError_t e = cudaFuncSetAttribute(SampleKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                   OptinSharedBytes());
        e != cudaSuccess)
      return e;
    if (dev >= 0 && dev < 64) attribute_set[dev].store(true, std::memory_order_release);
  }
  SampleKernel<<<a.rows, kThreads, smem, stream>>>(a, global_rows, in_shared ? 1 : 0);
  return cudaGetLastError();
}

}  // namespace gla::cuda
