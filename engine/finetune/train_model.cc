#include "engine/finetune/train_model.h"

#include <limits>

#include <algorithm>
#include <cmath>
#include <random>

#include "kernels/activations.h"
#include "kernels/conv.h"
#include "kernels/cross_entropy.h"
#include "kernels/gla.h"
#include "kernels/linear.h"
#include "kernels/norm.h"

namespace gla {

namespace {

float* Ptr(Weight* w) { return w == nullptr ? nullptr : w->data.data(); }

}  // namespace

// Inverted dropout on the LoRA branch's input (PEFT's lora_dropout), one mask per projection call.
class TrainModel::Dropout {
 public:
  Dropout(double p, uint64_t seed) : p_(static_cast<float>(p)), rng_(seed) {}
  bool active() const { return p_ > 0.0f; }
  // x * mask / (1 - p) into out, and the per-element factor (0 or 1 / (1 - p)) into factor.
  void Apply(const float* x, int64_t n, float* out, float* factor) {
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    const float keep = 1.0f / (1.0f - p_);
    for (int64_t i = 0; i < n; ++i) {
      factor[i] = u(rng_) < p_ ? 0.0f : keep;
      out[i] = x[i] * factor[i];
    }
  }

 private:
  float p_;
  std::mt19937_64 rng_;
};

// What one LoRA-adapted projection keeps for its backward.
struct TrainModel::LoraCache {
  std::vector<float> x_drop, factor;  // dropped input and mask factors (empty without dropout)
  std::vector<float> xa;              // drop(x) A^T  [T, r]
};

// Every activation of one layer the backward reads (rows = tokens).
struct TrainModel::LayerActs {
  std::vector<float> x_in, h;                 // layer input, attn-normed input
  std::vector<float> q, k, v, g, lr;          // projections (q/k/v before the short conv)
  std::vector<float> qc, kc, vc;              // after the short conv (use_short_conv)
  std::vector<float> gk_pre, gk;              // gate before (without bias) and after logsigmoid
  std::vector<float> o, og, x_mid, h2, gu, act;
  std::vector<LoraCache> lora = std::vector<LoraCache>(kNumLoraTargets);
};

TrainModel::TrainModel(const GlaConfig& config, const ModelWeights* weights, const LoraAdapter* lora)
    : c_(config), w_(weights), lora_(lora), lora_scale_(lora != nullptr ? lora->config.scale() : 0.0) {}

const LoraPair* TrainModel::Pair(int layer, LoraTarget t) const {
  if (lora_ == nullptr) return nullptr;
  const auto& p = lora_->layers[layer][static_cast<int>(t)];
  return p.has_value() ? &*p : nullptr;
}

void TrainModel::ProjForward(const float* x, int64_t T, const Weight& w, int layer, LoraTarget t, Dropout* dropout,
                             LoraCache* cache, float* y, int64_t y_stride, float beta) const {
  const int64_t out = w.shape[0], in = w.shape[1];
  cpu::Linear(x, in, w.data.data(), out, in, y, y_stride, T, beta);
  const LoraPair* p = Pair(layer, t);
  if (p == nullptr) return;
  const int64_t r = p->a.shape[0];
  const float* xd = x;
  if (dropout != nullptr && dropout->active()) {
    cache->x_drop.resize(T * in);
    cache->factor.resize(T * in);
    dropout->Apply(x, T * in, cache->x_drop.data(), cache->factor.data());
    xd = cache->x_drop.data();
  }
  cache->xa.resize(T * r);
  cpu::Linear(xd, in, p->a.data.data(), r, in, cache->xa.data(), r, T);
  // y += scale * xa B^T: scale folded into a copy of xa keeps the cache unscaled for the backward.
  std::vector<float> sxa(cache->xa);
  for (float& e : sxa) e *= static_cast<float>(lora_scale_);
  cpu::Linear(sxa.data(), r, p->b.data.data(), out, r, y, y_stride, T, 1.0f);
}

void TrainModel::ProjBackward(const float* x, int64_t T, const Weight& w, Weight* dw, int layer, LoraTarget t,
                              const LoraCache& cache, const float* dy, int64_t dy_stride, float* dx, float dx_beta,
                              const TrainGrads& grads) const {
  const int64_t out = w.shape[0], in = w.shape[1];
  cpu::LinearBackward(x, in, w.data.data(), out, in, dy, dy_stride, dx, in, dx_beta, Ptr(dw), T);
  const LoraPair* p = Pair(layer, t);
  if (p == nullptr) return;
  LoraPair* gp = nullptr;
  if (grads.lora != nullptr) gp = &*grads.lora->layers[layer][static_cast<int>(t)];
  const int64_t r = p->a.shape[0];
  // d(xa) = scale * dy B;  dB += scale * dy^T xa   (dy scaled once, into a dense copy)
  std::vector<float> sdy(T * out);
  for (int64_t i = 0; i < T; ++i)
    for (int64_t j = 0; j < out; ++j) sdy[i * out + j] = static_cast<float>(lora_scale_) * dy[i * dy_stride + j];
  std::vector<float> dxa(T * r);
  cpu::LinearBackward(cache.xa.data(), r, p->b.data.data(), out, r, sdy.data(), out, dxa.data(), r, 0.0f,
                      gp ? gp->b.data.data() : nullptr, T);
  // d(drop(x)) = d(xa) A;  dA += d(xa)^T drop(x);  dx += d(drop(x)) * mask factor
  const bool dropped = !cache.factor.empty();
  const float* xd = dropped ? cache.x_drop.data() : x;
  std::vector<float> dxd(T * in);
  cpu::LinearBackward(xd, in, p->a.data.data(), r, in, dxa.data(), r, dxd.data(), in, 0.0f,
                      gp ? gp->a.data.data() : nullptr, T);
  for (int64_t i = 0; i < T * in; ++i) dx[i] += dropped ? dxd[i] * cache.factor[i] : dxd[i];
}

void TrainModel::LayerForward(int l, int64_t T, const float* x_in, float* x_out, LayerActs& a, Dropout* dropout,
                              const std::function<void()>& pause) const {
  const LayerWeights& w = w_->layers[l];
  const int64_t D = c_.hidden_size, I = c_.intermediate_size, kdpg = c_.key_dim_per_group;
  const float eps = static_cast<float>(c_.norm_eps);
  a.x_in.assign(x_in, x_in + T * D);
  a.h.resize(T * D);
  cpu::RmsNorm(x_in, D, w.attn_norm.data.data(), a.h.data(), D, T, D, eps);

  auto proj = [&](std::vector<float>& y, const Weight& wt, LoraTarget t, const float* x) {
    y.resize(T * wt.shape[0]);
    ProjForward(x, T, wt, l, t, dropout, &a.lora[static_cast<int>(t)], y.data(), wt.shape[0], 0.0f);
  };
  proj(a.q, w.q_proj, LoraTarget::kQ, a.h.data());
  proj(a.k, w.k_proj, LoraTarget::kK, a.h.data());
  proj(a.v, w.v_proj, LoraTarget::kV, a.h.data());
  if (c_.use_output_gate) proj(a.g, w.g_proj, LoraTarget::kG, a.h.data());
  proj(a.lr, w.gk_proj0, LoraTarget::kGk0, a.h.data());
  proj(a.gk_pre, w.gk_proj1, LoraTarget::kGk1, a.lr.data());
  a.gk = a.gk_pre;
  cpu::LogSigmoidGate(a.gk.data(), kdpg, w.gk_proj1_bias.data.data(), T, kdpg,
                      static_cast<float>(c_.gate_logit_normalizer), c_.clamp_min.has_value(),
                      static_cast<float>(c_.clamp_min.value_or(0.0)));

  pause();
  const float *q = a.q.data(), *k = a.k.data(), *v = a.v.data();
  if (c_.use_short_conv) {
    auto conv = [&](const std::vector<float>& x, int64_t C, const Weight& wc, std::vector<float>& y) {
      std::vector<float> tail((c_.conv_size - 1) * C, 0.0f);  // training windows start from an empty past
      y.resize(T * C);
      cpu::ShortConvSilu(x.data(), C, T, C, wc.data.data(), c_.conv_size, tail.data(), y.data(), C);
    };
    conv(a.q, c_.key_dim, w.q_conv, a.qc);
    conv(a.k, kdpg, w.k_conv, a.kc);
    conv(a.v, c_.value_dim_per_group, w.v_conv, a.vc);
    q = a.qc.data(), k = a.kc.data(), v = a.vc.data();
  }

  a.o.resize(T * c_.value_dim);
  std::vector<float> state(static_cast<size_t>(c_.num_heads) * c_.head_k_dim * c_.head_v_dim, 0.0f);
  GlaSeqParams p;
  p.T = static_cast<int>(T);
  p.H = c_.num_heads;
  p.Hkv = c_.num_kv_heads;
  p.dk = c_.head_k_dim;
  p.dv = c_.head_v_dim;
  p.q = q, p.q_stride = c_.key_dim;
  p.k = k, p.k_stride = kdpg;
  p.v = v, p.v_stride = c_.value_dim_per_group;
  p.g = a.gk.data(), p.g_stride = kdpg;
  p.o = a.o.data(), p.o_stride = c_.value_dim;
  p.state = state.data();
  p.scale = 1.0f / std::sqrt(static_cast<float>(c_.head_k_dim));
  cpu::GlaChunkwise(p, 64, 16);
  pause();

  a.og.resize(T * c_.value_dim);
  cpu::RmsNormSwishGate(a.o.data(), c_.value_dim, c_.use_output_gate ? a.g.data() : nullptr, c_.value_dim,
                        w.g_norm.data.data(), a.og.data(), c_.value_dim, T, c_.num_heads, c_.head_v_dim, eps);
  a.x_mid = a.x_in;
  ProjForward(a.og.data(), T, w.o_proj, l, LoraTarget::kO, dropout, &a.lora[static_cast<int>(LoraTarget::kO)],
              a.x_mid.data(), D, 1.0f);

  pause();
  a.h2.resize(T * D);
  cpu::RmsNorm(a.x_mid.data(), D, w.mlp_norm.data.data(), a.h2.data(), D, T, D, eps);
  a.gu.resize(T * 2 * I);
  ProjForward(a.h2.data(), T, w.gate_proj, l, LoraTarget::kGate, dropout, &a.lora[static_cast<int>(LoraTarget::kGate)],
              a.gu.data(), 2 * I, 0.0f);
  ProjForward(a.h2.data(), T, w.up_proj, l, LoraTarget::kUp, dropout, &a.lora[static_cast<int>(LoraTarget::kUp)],
              a.gu.data() + I, 2 * I, 0.0f);
  pause();
  a.act.resize(T * I);
  cpu::SwiGlu(a.gu.data(), 2 * I, a.act.data(), I, T, I);
  std::copy(a.x_mid.begin(), a.x_mid.end(), x_out);
  ProjForward(a.act.data(), T, w.down_proj, l, LoraTarget::kDown, dropout, &a.lora[static_cast<int>(LoraTarget::kDown)],
              x_out, D, 1.0f);
}

// dx holds the gradient of the layer's output on entry and of its input on return.
void TrainModel::LayerBackward(int l, int64_t T, const LayerActs& a, float* dx, const TrainGrads& grads,
                               const std::function<void()>& pause) const {
  const LayerWeights& w = w_->layers[l];
  LayerWeights* gw = grads.weights != nullptr ? &grads.weights->layers[l] : nullptr;
  auto gwt = [&](LoraTarget t) -> Weight* { return gw != nullptr ? &TargetWeight(*gw, t) : nullptr; };
  auto cache = [&](LoraTarget t) -> const LoraCache& { return a.lora[static_cast<int>(t)]; };
  const int64_t D = c_.hidden_size, I = c_.intermediate_size, kdpg = c_.key_dim_per_group;
  const int64_t vdpg = c_.value_dim_per_group;
  const float eps = static_cast<float>(c_.norm_eps);

  // MLP: x_out = x_mid + down(swiglu(gate|up(RmsNorm(x_mid))))
  std::vector<float> d_act(T * I), d_gu(T * 2 * I), d_h(T * D);
  ProjBackward(a.act.data(), T, w.down_proj, gwt(LoraTarget::kDown), l, LoraTarget::kDown, cache(LoraTarget::kDown),
               dx, D, d_act.data(), 0.0f, grads);
  cpu::SwiGluBackward(a.gu.data(), 2 * I, d_act.data(), I, d_gu.data(), 2 * I, T, I);
  pause();
  ProjBackward(a.h2.data(), T, w.gate_proj, gwt(LoraTarget::kGate), l, LoraTarget::kGate, cache(LoraTarget::kGate),
               d_gu.data(), 2 * I, d_h.data(), 0.0f, grads);
  ProjBackward(a.h2.data(), T, w.up_proj, gwt(LoraTarget::kUp), l, LoraTarget::kUp, cache(LoraTarget::kUp),
               d_gu.data() + I, 2 * I, d_h.data(), 1.0f, grads);
  cpu::RmsNormBackward(a.x_mid.data(), D, w.mlp_norm.data.data(), d_h.data(), D, dx, D, /*accumulate_dx=*/true,
                       gw ? gw->mlp_norm.data.data() : nullptr, T, D, eps);

  pause();
  // Attention: x_mid = x_in + o_proj(gnorm_swish(GLA(q, k, v, gk), g))
  std::vector<float> d_og(T * c_.value_dim), d_o(T * c_.value_dim), d_g;
  ProjBackward(a.og.data(), T, w.o_proj, gwt(LoraTarget::kO), l, LoraTarget::kO, cache(LoraTarget::kO), dx, D,
               d_og.data(), 0.0f, grads);
  if (c_.use_output_gate) d_g.resize(T * c_.value_dim);
  cpu::RmsNormSwishGateBackward(a.o.data(), c_.value_dim, c_.use_output_gate ? a.g.data() : nullptr, c_.value_dim,
                                w.g_norm.data.data(), d_og.data(), c_.value_dim, d_o.data(), c_.value_dim,
                                c_.use_output_gate ? d_g.data() : nullptr, c_.value_dim,
                                gw ? gw->g_norm.data.data() : nullptr, T, c_.num_heads, c_.head_v_dim, eps);

  pause();
  std::vector<float> dq(T * c_.key_dim), dk(T * kdpg), dv(T * vdpg), dgk(T * kdpg);
  std::vector<float> h0(static_cast<size_t>(c_.num_heads) * c_.head_k_dim * c_.head_v_dim, 0.0f);
  GlaSeqParams p;
  p.T = static_cast<int>(T);
  p.H = c_.num_heads;
  p.Hkv = c_.num_kv_heads;
  p.dk = c_.head_k_dim;
  p.dv = c_.head_v_dim;
  p.q = c_.use_short_conv ? a.qc.data() : a.q.data(), p.q_stride = c_.key_dim;
  p.k = c_.use_short_conv ? a.kc.data() : a.k.data(), p.k_stride = kdpg;
  p.v = c_.use_short_conv ? a.vc.data() : a.v.data(), p.v_stride = vdpg;
  p.g = a.gk.data(), p.g_stride = kdpg;
  p.state = h0.data();
  p.scale = 1.0f / std::sqrt(static_cast<float>(c_.head_k_dim));
  GlaSeqGrads pg;
  pg.d_o = d_o.data(), pg.d_o_stride = c_.value_dim;
  pg.dq = dq.data(), pg.dq_stride = c_.key_dim;
  pg.dk = dk.data(), pg.dk_stride = kdpg;
  pg.dv = dv.data(), pg.dv_stride = vdpg;
  pg.dg = dgk.data(), pg.dg_stride = kdpg;
  std::vector<float> dh0(h0.size());
  pg.dh0 = dh0.data();
  cpu::GlaBackwardChunkwise(p, pg, 64);  // cpu::GlaBackwardNaive is its reference (gla_backward_test)
  pause();

  // Forget gate: gk = logsigmoid(gk_proj1(gk_proj0(h)) + b) / normalizer
  std::vector<float> d_gk_pre(T * kdpg), d_lr(T * c_.gate_low_rank_dim);
  cpu::LogSigmoidGateBackward(a.gk_pre.data(), kdpg, w.gk_proj1_bias.data.data(), dgk.data(), kdpg, d_gk_pre.data(),
                              kdpg, gw ? gw->gk_proj1_bias.data.data() : nullptr, T, kdpg,
                              static_cast<float>(c_.gate_logit_normalizer), c_.clamp_min.has_value(),
                              static_cast<float>(c_.clamp_min.value_or(0.0)));
  ProjBackward(a.lr.data(), T, w.gk_proj1, gwt(LoraTarget::kGk1), l, LoraTarget::kGk1, cache(LoraTarget::kGk1),
               d_gk_pre.data(), kdpg, d_lr.data(), 0.0f, grads);

  if (c_.use_short_conv) {  // the GLA gradients are those of the conv outputs: take them back to its inputs
    auto conv_back = [&](const std::vector<float>& x, int64_t C, const Weight& wc, Weight* dwc, std::vector<float>& d) {
      std::vector<float> dx_conv(T * C);
      cpu::ShortConvSiluBackward(x.data(), C, T, C, wc.data.data(), c_.conv_size, nullptr, d.data(), C,
                                 dx_conv.data(), C, Ptr(dwc));
      d.swap(dx_conv);
    };
    conv_back(a.q, c_.key_dim, w.q_conv, gw ? &gw->q_conv : nullptr, dq);
    conv_back(a.k, kdpg, w.k_conv, gw ? &gw->k_conv : nullptr, dk);
    conv_back(a.v, vdpg, w.v_conv, gw ? &gw->v_conv : nullptr, dv);
  }

  // Every projection of h sends its gradient back into d_h.
  ProjBackward(a.h.data(), T, w.q_proj, gwt(LoraTarget::kQ), l, LoraTarget::kQ, cache(LoraTarget::kQ), dq.data(),
               c_.key_dim, d_h.data(), 0.0f, grads);
  ProjBackward(a.h.data(), T, w.k_proj, gwt(LoraTarget::kK), l, LoraTarget::kK, cache(LoraTarget::kK), dk.data(), kdpg,
               d_h.data(), 1.0f, grads);
  ProjBackward(a.h.data(), T, w.v_proj, gwt(LoraTarget::kV), l, LoraTarget::kV, cache(LoraTarget::kV), dv.data(), vdpg,
               d_h.data(), 1.0f, grads);
  if (c_.use_output_gate)
    ProjBackward(a.h.data(), T, w.g_proj, gwt(LoraTarget::kG), l, LoraTarget::kG, cache(LoraTarget::kG), d_g.data(),
                 c_.value_dim, d_h.data(), 1.0f, grads);
  ProjBackward(a.h.data(), T, w.gk_proj0, gwt(LoraTarget::kGk0), l, LoraTarget::kGk0, cache(LoraTarget::kGk0),
               d_lr.data(), c_.gate_low_rank_dim, d_h.data(), 1.0f, grads);
  cpu::RmsNormBackward(a.x_in.data(), D, w.attn_norm.data.data(), d_h.data(), D, dx, D, /*accumulate_dx=*/true,
                       gw ? gw->attn_norm.data.data() : nullptr, T, D, eps);
}

double TrainModel::Run(std::span<const int32_t> tokens, const TrainGrads* grads, float grad_scale,
                       uint64_t dropout_seed, const std::function<bool()>& yield) const {
  constexpr double kStopped = std::numeric_limits<double>::quiet_NaN();
  const auto go_on = [&yield] { return !yield || yield(); };
  // Inside a layer: serving may go in; a stop is acted on at the next layer boundary.
  const std::function<void()> pause = [&yield] {
    if (yield) (void)yield();
  };
  const int64_t T = static_cast<int64_t>(tokens.size()) - 1, D = c_.hidden_size, V = c_.vocab_size;
  const float eps = static_cast<float>(c_.norm_eps);
  const bool backward = grads != nullptr;
  Dropout dropout(lora_ != nullptr && backward ? lora_->config.dropout : 0.0, dropout_seed);

  std::vector<float> x(T * D), next(T * D);
  cpu::EmbeddingGather(w_->embeddings.data.data(), D, tokens.data(), T, x.data());
  std::vector<LayerActs> acts(backward ? c_.num_hidden_layers : 1);
  for (int l = 0; l < c_.num_hidden_layers; ++l) {
    if (!go_on()) return kStopped;
    LayerForward(l, T, x.data(), next.data(), acts[backward ? l : 0], &dropout, pause);
    x.swap(next);
  }
  std::vector<float> hf(T * D);
  cpu::RmsNorm(x.data(), D, w_->norm.data.data(), hf.data(), D, T, D, eps);
  std::vector<int32_t> targets(tokens.begin() + 1, tokens.end());
  const Weight& lm = w_->output_embeddings();
  std::vector<float> dhf(backward ? T * D : 0);
  Weight* dlm = nullptr;
  if (backward && grads->weights != nullptr)
    dlm = w_->lm_head.empty() ? &grads->weights->embeddings : &grads->weights->lm_head;
  const cpu::CrossEntropyResult ce = cpu::LinearCrossEntropy(hf.data(), D, lm.data.data(), V, D, targets.data(), T,
                                                              grad_scale, backward ? dhf.data() : nullptr, D, Ptr(dlm));
  if (!backward) return ce.loss_sum;

  // Backward: final norm, layers in reverse, embedding.
  std::vector<float>& dx = next;
  cpu::RmsNormBackward(x.data(), D, w_->norm.data.data(), dhf.data(), D, dx.data(), D, /*accumulate_dx=*/false,
                       grads->weights ? grads->weights->norm.data.data() : nullptr, T, D, eps);
  for (int l = c_.num_hidden_layers - 1; l >= 0; --l) {
    if (!go_on()) return kStopped;
    LayerBackward(l, T, acts[l], dx.data(), *grads, pause);
  }
  if (grads->weights != nullptr)
    cpu::EmbeddingScatterAdd(dx.data(), D, tokens.data(), T, grads->weights->embeddings.data.data());
  return ce.loss_sum;
}

namespace {
void Visit(Weight& p, Weight& g, bool decay, const std::function<void(Weight&, Weight&, bool)>& fn) {
  if (!p.empty()) fn(p, g, decay);
}
}  // namespace

void ForEachParam(ModelWeights& p, ModelWeights& g, const std::function<void(Weight&, Weight&, bool)>& fn) {
  Visit(p.embeddings, g.embeddings, true, fn);
  for (size_t l = 0; l < p.layers.size(); ++l) {
    LayerWeights &a = p.layers[l], &b = g.layers[l];
    Visit(a.attn_norm, b.attn_norm, false, fn);
    for (int t = 0; t < kNumLoraTargets; ++t)
      Visit(TargetWeight(a, static_cast<LoraTarget>(t)), TargetWeight(b, static_cast<LoraTarget>(t)), true, fn);
    Visit(a.gk_proj1_bias, b.gk_proj1_bias, false, fn);
    Visit(a.q_conv, b.q_conv, true, fn);
    Visit(a.k_conv, b.k_conv, true, fn);
    Visit(a.v_conv, b.v_conv, true, fn);
    Visit(a.g_norm, b.g_norm, false, fn);
    Visit(a.mlp_norm, b.mlp_norm, false, fn);
  }
  Visit(p.norm, g.norm, false, fn);
  Visit(p.lm_head, g.lm_head, true, fn);
}

void ForEachParam(LoraAdapter& p, LoraAdapter& g, const std::function<void(Weight&, Weight&, bool)>& fn) {
  for (size_t l = 0; l < p.layers.size(); ++l)
    for (int t = 0; t < kNumLoraTargets; ++t) {
      if (!p.layers[l][t].has_value()) continue;
      Visit(p.layers[l][t]->a, g.layers[l][t]->a, true, fn);
      Visit(p.layers[l][t]->b, g.layers[l][t]->b, true, fn);
    }
}

namespace {
Weight Zeros(const Weight& w) { return Weight{std::vector<float>(w.data.size(), 0.0f), w.shape}; }
}  // namespace

ModelWeights ZerosLike(const ModelWeights& like) {
  ModelWeights z = like;
  ForEachParam(z, z, [](Weight& p, Weight&, bool) { std::fill(p.data.begin(), p.data.end(), 0.0f); });
  return z;
}

LoraAdapter ZerosLike(const LoraAdapter& like) {
  LoraAdapter z = like;
  for (auto& layer : z.layers)
    for (auto& pair : layer)
      if (pair.has_value()) pair = LoraPair{Zeros(pair->a), Zeros(pair->b)};
  return z;
}

}  // namespace gla
