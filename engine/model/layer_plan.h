// The GLA layer's recipe, written once. Every shape, offset and constant the four runners read
// (model/cpu_model and model/cuda_model serve, model/train_model and model/cuda_train_model train)
// comes from here, and each GLA kernel's params struct is filled here and nowhere else. Built once
// from a GlaConfig. The runners keep their own loops (buffers, precisions and launches differ);
// what the layer computes is defined by this plan and the kernels.
//
// A change to the layer's form (a new gate normalization, say) is then the kernels, this plan, and
// at most one line per runner.
#pragma once

#include <cstdint>

#include "kernels/activations.h"
#include "kernels/gla.h"
#if defined(GLA_HAVE_CUDA)
#include "kernels/persistent_decode.h"
#endif
#include "models/config.h"

namespace gla {

// The fused input projection: one GEMM over the normed hidden state gives, per token, the columns
// [q | k | v | g (output gate, when used) | gk low-rank], in that order (the serving runners fuse
// the weights so; the training runners keep them apart and use the widths only).
struct InProjLayout {
  explicit InProjLayout(const GlaConfig& c)
      : q(0),
        k(q + c.key_dim),
        v(k + c.key_dim_per_group),
        g(v + c.value_dim_per_group),
        r(g + (c.use_output_gate ? c.value_dim : 0)),
        width(r + c.gate_low_rank_dim) {}
  int64_t q, k, v, g, r, width;  // column offsets, and the fused width
};

struct GlaLayerPlan {
  explicit GlaLayerPlan(const GlaConfig& c);

  // Widths, in floats per token.
  int64_t hidden;        // D: the residual stream
  int64_t intermediate;  // I: the MLP's (gate and up are 2 I together)
  int64_t q_width;       // H x dk
  int64_t k_width;       // Hkv x dk (k, and the forget gate gk)
  int64_t v_width;       // Hkv x dv
  int64_t o_width;       // H x dv: the operator's output, the output gate, o_proj's input
  int64_t gate_rank;     // the forget gate's low rank
  bool output_gate;      // use_output_gate: g_proj and the swish gate on o
  bool short_conv;       // use_short_conv: a causal conv + SiLU on q, k, v
  int conv_size;
  InProjLayout in_proj;
  int64_t conv_width;  // q | k | v after the short conv, packed

  // Heads and constants.
  int heads, kv_heads, head_k, head_v;
  float scale;  // head_k^-1/2
  float eps;    // every RMSNorm's
  ForgetGate gate;
  int64_t state_floats;  // one layer's recurrent state: H x dk x dv

  // Where the operator's rows live: q/k/v at qkv_stride (a fused projection's or the conv's
  // width), g at k_width, o at o_width.
  GlaRows Rows(const float* q, const float* k, const float* v, int64_t qkv_stride, const float* g, float* o) const;
  // The same rows from row r0 on.
  static GlaRows From(GlaRows rows, int64_t r0);

  // One filler per kernel params struct: the rows given, the plan's heads and scale.
  GlaSeqParams Seq(const GlaRows& rows, int T, float* state) const;
  GlaDecodeParams Decode(const GlaRows& rows, int N, float* const* states) const;
  // A CPU sequence's gradients (training): upstream d_o, outputs written at the rows' widths.
  GlaSeqGrads SeqGrads(const float* d_o, float* dq, float* dk, float* dv, float* dg, const float* d_ht,
                       float* dh0) const;
#if defined(GLA_HAVE_CUDA)
  GlaDecodeCudaParams DecodeCuda(const GlaRows& rows, int N, const CudaStateSlots& state, const int32_t* slots) const;
  GlaPrefillCudaParams PrefillCuda(const GlaRows& rows, int num_seqs, const int32_t* cu_seqlens,
                                   const CudaStateSlots& state, const int32_t* slots) const;
  // The forget gate's factors for a kernel that makes the gate itself: row r of lowrank (stride
  // floats apart) with this layer's second factor w1 and bias; the plan's rank and activation.
  GlaGateFactors GateFactors(const float* lowrank, int64_t stride, const float* w1, const float* bias) const;
  // The persistent batch-1 decode kernel's shapes and constants (kernels/persistent_decode.h);
  // the runner adds its weights, workspace and states.
  cuda::PersistentDecodeParams PersistentDecodeCuda(int num_layers) const;
  // The backward reads the forward's inputs (rows' q/k/v/g; o is not used); gradients at the
  // rows' widths: d_o and dq at o/q widths, dk and dg at k_width, dv at v_width.
  GlaBackwardCudaParams BackwardCuda(const GlaRows& inputs, int num_seqs, const int32_t* cu_seqlens,
                                     const float* d_o, float* dq, float* dk, float* dv, float* dg) const;
#endif
};

}  // namespace gla
