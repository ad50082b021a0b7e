#include "engine/model/layer_plan.h"

#include <cmath>

namespace gla {

GlaLayerPlan::GlaLayerPlan(const GlaConfig& c)
    : hidden(c.hidden_size),
      intermediate(c.intermediate_size),
      q_width(c.key_dim),
      k_width(c.key_dim_per_group),
      v_width(c.value_dim_per_group),
      o_width(c.value_dim),
      gate_rank(c.gate_low_rank_dim),
      output_gate(c.use_output_gate),
      short_conv(c.use_short_conv),
      conv_size(c.conv_size),
      in_proj(c),
      conv_width(c.key_dim + c.key_dim_per_group + c.value_dim_per_group),
      heads(c.num_heads),
      kv_heads(c.num_kv_heads),
      head_k(c.head_k_dim),
      head_v(c.head_v_dim),
      scale(1.0f / std::sqrt(static_cast<float>(c.head_k_dim))),
      eps(static_cast<float>(c.norm_eps)),
      gate{static_cast<float>(c.gate_logit_normalizer), c.clamp_min.has_value(),
           static_cast<float>(c.clamp_min.value_or(0.0))},
      state_floats(int64_t{c.num_heads} * c.head_k_dim * c.head_v_dim) {}

GlaRows GlaLayerPlan::Rows(const float* q, const float* k, const float* v, int64_t qkv_stride, const float* g,
                           float* o) const {
  GlaRows r;
  r.q = q, r.q_stride = qkv_stride;
  r.k = k, r.k_stride = qkv_stride;
  r.v = v, r.v_stride = qkv_stride;
  r.g = g, r.g_stride = k_width;
  r.o = o, r.o_stride = o_width;
  return r;
}

GlaRows GlaLayerPlan::From(GlaRows r, int64_t r0) {
  r.q += r0 * r.q_stride;
  r.k += r0 * r.k_stride;
  r.v += r0 * r.v_stride;
  r.g += r0 * r.g_stride;
  if (r.o != nullptr) r.o += r0 * r.o_stride;
  return r;
}

namespace {
template <typename P>
void Heads(const GlaLayerPlan& plan, P& p) {
  p.H = plan.heads;
  p.Hkv = plan.kv_heads;
  p.dk = plan.head_k;
  p.dv = plan.head_v;
  p.scale = plan.scale;
}
}  // namespace

GlaSeqParams GlaLayerPlan::Seq(const GlaRows& rows, int T, float* state) const {
  GlaSeqParams p;
  static_cast<GlaRows&>(p) = rows;
  Heads(*this, p);
  p.T = T;
  p.state = state;
  return p;
}

GlaDecodeParams GlaLayerPlan::Decode(const GlaRows& rows, int N, float* const* states) const {
  GlaDecodeParams p;
  static_cast<GlaRows&>(p) = rows;
  Heads(*this, p);
  p.N = N;
  p.states = states;
  return p;
}

GlaSeqGrads GlaLayerPlan::SeqGrads(const float* d_o, float* dq, float* dk, float* dv, float* dg, const float* d_ht,
                                   float* dh0) const {
  GlaSeqGrads g;
  g.d_o = d_o, g.d_o_stride = o_width;
  g.d_ht = d_ht;
  g.dq = dq, g.dq_stride = q_width;
  g.dk = dk, g.dk_stride = k_width;
  g.dv = dv, g.dv_stride = v_width;
  g.dg = dg, g.dg_stride = k_width;
  g.dh0 = dh0;
  return g;
}

#if defined(GLA_HAVE_CUDA)
GlaDecodeCudaParams GlaLayerPlan::DecodeCuda(const GlaRows& rows, int N, const CudaStateSlots& state,
                                             const int32_t* slots) const {
  GlaDecodeCudaParams p;
  static_cast<GlaRows&>(p) = rows;
  Heads(*this, p);
  p.N = N;
  p.state = state;
  p.slots = slots;
  return p;
}

GlaPrefillCudaParams GlaLayerPlan::PrefillCuda(const GlaRows& rows, int num_seqs, const int32_t* cu_seqlens,
                                               const CudaStateSlots& state, const int32_t* slots) const {
  GlaPrefillCudaParams p;
  static_cast<GlaRows&>(p) = rows;
  Heads(*this, p);
  p.num_seqs = num_seqs;
  p.cu_seqlens = cu_seqlens;
  p.state = state;
  p.slots = slots;
  return p;
}

GlaGateFactors GlaLayerPlan::GateFactors(const float* lowrank, int64_t stride, const float* w1,
                                         const float* bias) const {
  GlaGateFactors f;
  f.lowrank = lowrank;
  f.lowrank_stride = stride;
  f.w1 = w1;
  f.bias = bias;
  f.rank = static_cast<int>(gate_rank);
  f.inv_normalizer = 1.0f / gate.normalizer;
  f.has_clamp = gate.has_clamp;
  f.clamp_min = gate.clamp_min;
  return f;
}

cuda::PersistentDecodeParams GlaLayerPlan::PersistentDecodeCuda(int num_layers) const {
  cuda::PersistentDecodeParams p;
  p.num_layers = num_layers;
  p.D = static_cast<int>(hidden);
  p.I = static_cast<int>(intermediate);
  p.P = static_cast<int>(in_proj.width);
  p.q_off = static_cast<int>(in_proj.q);
  p.k_off = static_cast<int>(in_proj.k);
  p.v_off = static_cast<int>(in_proj.v);
  p.g_off = static_cast<int>(in_proj.g);
  p.r_off = static_cast<int>(in_proj.r);
  p.H = heads;
  p.Hkv = kv_heads;
  p.dk = head_k;
  p.dv = head_v;
  p.rank = static_cast<int>(gate_rank);
  p.output_gate = output_gate;
  p.scale = scale;
  p.eps = eps;
  p.gate_inv_normalizer = 1.0f / gate.normalizer;
  p.gate_has_clamp = gate.has_clamp;
  p.gate_clamp_min = gate.clamp_min;
  return p;
}

GlaBackwardCudaParams GlaLayerPlan::BackwardCuda(const GlaRows& inputs, int num_seqs, const int32_t* cu_seqlens,
                                                 const float* d_o, float* dq, float* dk, float* dv, float* dg) const {
  GlaBackwardCudaParams p;
  static_cast<GlaPrefillCudaParams&>(p) = PrefillCuda(inputs, num_seqs, cu_seqlens, CudaStateSlots(), nullptr);
  p.o = nullptr;  // the backward does not read the forward's output
  p.d_o = d_o, p.d_o_stride = o_width;
  p.d_q = dq, p.d_q_stride = q_width;
  p.d_k = dk, p.d_k_stride = k_width;
  p.d_v = dv, p.d_v_stride = v_width;
  p.d_g = dg, p.d_g_stride = k_width;
  return p;
}
#endif

}  // namespace gla
