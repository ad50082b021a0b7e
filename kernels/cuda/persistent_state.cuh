// The recurrent state update inside the persistent decode kernels (persistent_decode.cu and
// persistent_decode_batched.cu): one item is 16 value columns of one head of one sequence, all dk
// rows, done by the block's 256 consumer threads (a thread: 4 columns of R = dk / 64 rows). The
// item's state rows and the gate's factor rows are loaded into registers first (Load: a block's first
// item before the grid barrier that precedes the update, since the state is not this step's), then
// Update makes q, k and the decay of every row from this step's projections, updates the rows,
// stores them and writes the item's 16 values of o.
//
// Numerics are the per-operation decode kernel's (gla_decode.cu): the gate from its low-rank factors
// in LowRankGateOf's order, tile::UpdateRow per row, fp32 or bf16 states (state_values.cuh).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/forget_gate.cuh"
#include "kernels/cuda/gla_recurrent_tile.cuh"
#include "kernels/cuda/persistent_common.cuh"
#include "kernels/cuda/state_values.cuh"
#include "kernels/persistent_decode.h"

namespace gla::cuda::persistent {

constexpr int kMaxRank = 32;     // the forget gate's low rank
constexpr int kStateLanes = 4;   // a state item: 16 columns of one head, as 4 lanes x float4
constexpr int kStateCols = kStateLanes * 4;
constexpr int kStateGroups = kConsumers / kStateLanes;  // 64 row groups; dk = 64 R

// The shared memory one item's update passes between the block's warps.
struct StateScratch {
  float q[kStateGroups * 4], k[kStateGroups * 4], decay[kStateGroups * 4];
  float4 o_partial[2][kConsumerWarps][kStateLanes];  // UpdateRows' buf
};

// An item's place and state rows (a thread's 4 columns of R rows).
template <int R>
struct StateRows {
  int h = 0, hk = 0, c0 = 0;
  int64_t S = 0;  // value index of the head's [dk, dv] in p.state (fp32 or bf16: state_values.cuh)
  float4 rows[R];

  // Item `item` (head item / (dv / 16), columns 16 (item % (dv / 16)) ...) of the sequence in `slot`.
  __device__ __forceinline__ void LoadRows(const PersistentDecodeParams& p, const PersistentDecodeLayer& L, int item,
                                           int64_t slot) {
    constexpr int dk = R * kStateGroups;
    const int per_head = p.dv / kStateCols;
    h = item / per_head;
    hk = h / (p.H / p.Hkv);
    c0 = (item % per_head) * kStateCols;
    S = p.state.Index(slot, L.state_offset + static_cast<int64_t>(h) * dk * p.dv);
    const int lane4 = threadIdx.x % kStateLanes, group = threadIdx.x / kStateLanes;
    const int col = c0 + lane4 * 4;
#pragma unroll
    for (int r = 0; r < R; ++r)
      rows[r] = LoadState4<StateCache::kStreaming>(p.state,
                                                   S + static_cast<int64_t>(group + r * kStateGroups) * p.dv + col);
  }


  // This step's v values of the thread's 4 columns of the item (sequence seq's projections: not
  // before the barrier after in_proj).
  __device__ __forceinline__ float4 LoadV(const PersistentDecodeParams& p, int seq) const {
    const float* proj = p.proj + static_cast<int64_t>(seq) * p.P;
    const int col = c0 + (threadIdx.x % kStateLanes) * 4;
    return __ldcg(reinterpret_cast<const float4*>(proj + p.v_off + static_cast<int64_t>(hk) * p.dv + col));
  }
};

// An item with the gate's factor rows of its key head (a thread < dk: its row's rank values).
template <int R>
struct StateItem : StateRows<R> {
  using StateRows<R>::h;
  using StateRows<R>::hk;
  using StateRows<R>::c0;
  using StateRows<R>::S;
  using StateRows<R>::rows;
  float4 w1[kMaxRank / 4];

  // The item's state rows, then its factor rows.
  __device__ __forceinline__ void Load(const PersistentDecodeParams& p, const PersistentDecodeLayer& L, int item,
                                       int64_t slot) {
    this->LoadRows(p, L, item, slot);
    LoadGate(p, L);
  }

  __device__ __forceinline__ void LoadGate(const PersistentDecodeParams& p, const PersistentDecodeLayer& L) {
    constexpr int dk = R * kStateGroups;
    if (threadIdx.x < dk) {
      const float4* w = reinterpret_cast<const float4*>(L.gk1 + (static_cast<int64_t>(hk) * dk + threadIdx.x) * p.rank);
#pragma unroll
      for (int j = 0; j < kMaxRank / 4; ++j)
        if (4 * j < p.rank) w1[j] = __ldg(w + j);
    }
  }

  // The update with sequence `seq`'s projections (p.proj row seq) into its o row (p.o row seq):
  // PrepareHead, then UpdateRows, each item on its own (the batch-1 kernel's).
  __device__ __forceinline__ void Update(const PersistentDecodeParams& p, const PersistentDecodeLayer& L, int seq,
                                         StateScratch& s) {
    PrepareHead(p, L, seq, s);
    const float4 v = this->LoadV(p, seq);  // in flight across the barrier
    ConsumerSync();
    UpdateRows<false>(p, seq, v, s, 0, nullptr);
    ConsumerSync();  // q, k, decay and o_partial are free for the next item
  }

  // The decay of the head's row t (< dk) from the gate's rank values rank(j) and the row's factors
  // (w1), in LowRankGateOf's order (forget_gate.cuh).
  template <class Rank>
  __device__ __forceinline__ float DecayOf(const PersistentDecodeParams& p, const PersistentDecodeLayer& L, int t,
                                           Rank&& rank) const {
    constexpr int dk = R * kStateGroups;
    float z = L.gk1_bias != nullptr ? __ldg(L.gk1_bias + hk * dk + t) : 0.f;
#pragma unroll
    for (int j = 0; j < kMaxRank / 4; ++j) {
      if (4 * j >= p.rank) break;
      z = fmaf(rank(4 * j), w1[j].x, z);
      z = fmaf(rank(4 * j + 1), w1[j].y, z);
      z = fmaf(rank(4 * j + 2), w1[j].z, z);
      z = fmaf(rank(4 * j + 3), w1[j].w, z);
    }
    return expf(GateOf(z, p.gate_inv_normalizer, p.gate_has_clamp, p.gate_clamp_min));
  }

  // The batch-1 kernel's update from inputs staged in shared memory (its tagged exchange of in_proj's
  // values): s.q and s.k the head's q and k rows as in_proj wrote them, r the gate's rank values,
  // vin the item's 16 values of v; every consumer past a ConsumerSync since they were written.
  // The same arithmetic as Update's.
  __device__ __forceinline__ void UpdateStaged(const PersistentDecodeParams& p, const PersistentDecodeLayer& L,
                                               StateScratch& s, const float* r, const float* vin) {
    constexpr int dk = R * kStateGroups;
    const int t = threadIdx.x;
    if (t < dk) {
      s.decay[t] = DecayOf(p, L, t, [&](int j) { return r[j]; });
      s.q[t] = p.scale * s.q[t];
    }
    const float4 v = *reinterpret_cast<const float4*>(vin + (t % kStateLanes) * 4);
    ConsumerSync();
    UpdateRows<false>(p, 0, v, s, 0, nullptr);
    ConsumerSync();  // q, k, decay and o_partial are free for the next item
  }

  // q (scaled), k and the decay of every row of the item's head for sequence seq, into s (thread
  // t < dk: row t). The same for every item of one (sequence, head): a caller taking several in a
  // row makes them once. Every consumer must have finished the previous UpdateRows (its barrier
  // orders that) and must pass a ConsumerSync before UpdateRows reads them.
  // gate (the batched kernel's UpdateRows<true>; null: not made): gate[i] = g_norm[i] * swish(g_i)
  // (g_norm[i] without an output gate) for the head's dv values, their loads in flight with the
  // decays' (one trip to L2 for both).
  __device__ __forceinline__ void PrepareHead(const PersistentDecodeParams& p, const PersistentDecodeLayer& L,
                                              int seq, StateScratch& s, float* gate = nullptr) {
    constexpr int dk = R * kStateGroups;
    constexpr int kGatePer = kMaxHeadV / kConsumers;  // a thread's gate values
    const int t = threadIdx.x;
    const float* proj = p.proj + static_cast<int64_t>(seq) * p.P;
    float gw[kGatePer], gz[kGatePer];
    if (gate != nullptr) {
      const float* g = proj + p.g_off + static_cast<int64_t>(h) * p.dv;
#pragma unroll
      for (int j = 0; j < kGatePer; ++j) {
        const int i = t + j * kConsumers;
        gw[j] = i < p.dv ? __ldg(L.g_norm + i) : 0.f;
        gz[j] = i < p.dv && p.output_gate ? __ldcg(g + i) : 0.f;
      }
    }
    if (t < dk) {
      const float* lr = proj + p.r_off;
      s.decay[t] = DecayOf(p, L, t, [&](int j) { return __ldcg(lr + j); });
      s.q[t] = p.scale * __ldcg(proj + p.q_off + static_cast<int64_t>(h) * dk + t);
      s.k[t] = __ldcg(proj + p.k_off + static_cast<int64_t>(hk) * dk + t);
    }
    if (gate != nullptr) {
#pragma unroll
      for (int j = 0; j < kGatePer; ++j) {
        const int i = t + j * kConsumers;
        if (i < p.dv) gate[i] = p.output_gate ? gw[j] * (gz[j] / (1.f + __expf(-gz[j]))) : gw[j];
      }
    }
  }

  // The item's rows updated with s's q, k and decay and v (LoadV), stored, and its 16 values of o
  // written; o_partial[buf] carries the warps' sums (alternate buf between consecutive calls: the
  // next call's writes then never meet this one's readers, without a second barrier).
  // kGated (the batched kernel): o's values times gate (shared memory, the head's dv factors
  // g_norm * swish(g): PrepareHead) are written instead, and the sum of the 16 o values' squares to
  // p.o_sumsq, so the gate norm needs one pass over half the values.
  template <bool kGated>
  __device__ __forceinline__ void UpdateRows(const PersistentDecodeParams& p, int seq, const float4& v,
                                             StateScratch& s, int buf, const float* gate) {
    const int t = threadIdx.x, warp = t / 32, lane = t % 32;
    const int lane4 = t % kStateLanes, group = t / kStateLanes;
    const int col = c0 + lane4 * 4;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int i = group + r * kStateGroups;
      tile::UpdateRow(rows[r], s.decay[i], s.k[i], s.q[i], v, acc);
    }
#pragma unroll
    for (int r = 0; r < R; ++r)
      StoreState4<StateCache::kStreaming>(p.state, S + static_cast<int64_t>(group + r * kStateGroups) * p.dv + col,
                                          rows[r]);
    for (int off = kStateLanes; off < 32; off <<= 1) {  // the warp's 8 row groups, same columns
      acc.x += __shfl_xor_sync(0xffffffffu, acc.x, off);
      acc.y += __shfl_xor_sync(0xffffffffu, acc.y, off);
      acc.z += __shfl_xor_sync(0xffffffffu, acc.z, off);
      acc.w += __shfl_xor_sync(0xffffffffu, acc.w, off);
    }
    if (lane < kStateLanes) s.o_partial[buf][warp][lane] = acc;
    // kGated: the factors read before the barrier, since after it the other consumers may go on to
    // the next (sequence, head) and PrepareHead rewrites gate.
    float4 f = make_float4(1.f, 1.f, 1.f, 1.f);
    if constexpr (kGated)
      if (t < kStateLanes) f = *reinterpret_cast<const float4*>(gate + c0 + t * 4);
    ConsumerSync();
    if (t < kStateLanes) {
      float4 sum = s.o_partial[buf][0][t];
      for (int w = 1; w < kConsumerWarps; ++w) {
        const float4 x = s.o_partial[buf][w][t];
        sum.x += x.x, sum.y += x.y, sum.z += x.z, sum.w += x.w;
      }
      float* o = p.o + static_cast<int64_t>(seq) * p.H * p.dv;
      if constexpr (kGated) {
        float ss = sum.x * sum.x + sum.y * sum.y + sum.z * sum.z + sum.w * sum.w;
        ss += __shfl_xor_sync(0xfu, ss, 1);
        ss += __shfl_xor_sync(0xfu, ss, 2);
        sum.x *= f.x, sum.y *= f.y, sum.z *= f.z, sum.w *= f.w;
        if (t == 0) p.o_sumsq[(static_cast<int64_t>(seq) * p.H + h) * (p.dv / kStateCols) + c0 / kStateCols] = ss;
      }
      __stcg(reinterpret_cast<float4*>(o + static_cast<int64_t>(h) * p.dv + c0 + t * 4), sum);
    }
  }
};

}  // namespace gla::cuda::persistent
