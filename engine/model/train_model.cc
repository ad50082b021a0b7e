#include "engine/model/train_model.h"

#include <limits>

#include <algorithm>
#include <cmath>
#include <random>

#include "kernels/activations.h"
#include "kernels/conv.h"
#include "kernels/cross_entropy.h"
#include "kernels/dropout.h"
#include "kernels/gla.h"
#include "kernels/linear.h"
#include "kernels/norm.h"

namespace gla {

namespace {

float* Ptr(Weight* w) { return w == nullptr ? nullptr : w->data.data(); }

// The floating-point work one slice may hold between two pauses, by kind: projections run on BLAS
// (tens of GFLOP/s here), the GLA operator's chunks and the cross-entropy's softmax nearer a few.
// Sized so that one slice takes ~5-10 ms on a 2-core VM (docs/fine-tuning.md: the measured gaps).
constexpr double kSliceFlopsBlas = 1 << 28;
constexpr double kSliceFlopsGla = 1 << 25;
constexpr int64_t kMinBlasRows = 16;  // fewer rows than this and BLAS re-reads the weights per row
constexpr int kGlaChunk = 64;

// Rows per slice for work of `flops_per_row`: a multiple of `multiple`, at least `min_rows`.
int64_t SliceRows(double budget, double flops_per_row, int64_t min_rows, int64_t multiple) {
  const double r = budget / std::max(flops_per_row, 1.0);
  const int64_t rows = r >= 1e15 ? int64_t{1} << 50 : static_cast<int64_t>(r);
  return std::max(rows, min_rows) / multiple * multiple;
}

// fn(r0, n) over [0, T) in slices of `rows`, `pause` between two slices; false (the rest not run)
// once pause says stop.
template <typename F>
bool ForSlices(int64_t T, int64_t rows, const std::function<bool()>& pause, F&& fn) {
  for (int64_t r0 = 0; r0 < T; r0 += rows) {
    if (r0 > 0 && !pause()) return false;
    fn(r0, std::min(rows, T - r0));
  }
  return true;
}

}  // namespace

// Rows per slice of each kind of work, from the model's shapes (the same for every window, so
// results do not depend on timing).
struct TrainModel::Slices {
  int64_t attn_in, gla, attn_out_mlp, head;
  explicit Slices(const GlaConfig& c) {
    const double D = c.hidden_size, I = c.intermediate_size, KD = c.key_dim, VD = c.value_dim;
    const double kdpg = c.key_dim_per_group, vdpg = c.value_dim_per_group, R = c.gate_low_rank_dim;
    const double H = c.num_heads, dk = c.head_k_dim, dv = c.head_v_dim;
    // Per row, forward and backward together (the backward costs about twice the forward).
    const double in_flops = 3 * (2 * D * (KD + kdpg + vdpg + (c.use_output_gate ? VD : 0) + R) + 2 * R * kdpg);
    const double gla_flops = 3 * (4 * H * dk * dv + 2 * H * kGlaChunk * (dk + dv));
    const double out_flops = 3 * (2 * VD * D + 6 * D * I);
    const double lm_flops = 3 * (2 * D * c.vocab_size);
    attn_in = SliceRows(kSliceFlopsBlas, in_flops, kMinBlasRows, 1);
    gla = SliceRows(kSliceFlopsGla, gla_flops, kGlaChunk, kGlaChunk);  // slices start on chunk boundaries
    attn_out_mlp = SliceRows(kSliceFlopsBlas, out_flops, kMinBlasRows, 1);
    head = SliceRows(kSliceFlopsBlas, lm_flops, kMinBlasRows, 1);
  }
};

// A float array that is neither zero-filled when it grows nor freed between windows: filling (and
// first touching) a long window's activations at once would itself be a pause of ~100 ms on a VM;
// this way each slice faults in the pages it first writes, and the next window reuses them.
class TrainModel::Buffer {
 public:
  void Reset(size_t n) {
    if (n > capacity_) {
      data_.reset(new float[n]);  // default-initialized: not written
      capacity_ = n;
    }
    size_ = n;
  }
  float* data() { return data_.get(); }
  const float* data() const { return data_.get(); }
  size_t size() const { return size_; }
  void swap(Buffer& o) noexcept {
    data_.swap(o.data_);
    std::swap(size_, o.size_);
    std::swap(capacity_, o.capacity_);
  }

 private:
  std::unique_ptr<float[]> data_;
  size_t size_ = 0, capacity_ = 0;
};

// What one LoRA-adapted projection keeps for its backward (the dropout mask is recomputed from
// its seed: kernels/dropout.h).
struct TrainModel::LoraCache {
  std::vector<float> xa;  // drop(x) A^T  [T, r]
  uint64_t seed = 0;
};

// Every activation of one layer the backward reads (rows = tokens).
struct TrainModel::LayerActs {
  Buffer x_in, h;             // layer input, attn-normed input
  Buffer q, k, v, g, lr;      // projections (q/k/v before the short conv)
  Buffer qc, kc, vc;          // after the short conv (use_short_conv)
  Buffer gk_pre, gk;          // gate before (without bias) and after logsigmoid
  Buffer o, og, x_mid, h2, gu, act;
  Buffer gla_states;          // the GLA state at the start of each GLA slice
  std::vector<LoraCache> lora = std::vector<LoraCache>(kNumLoraTargets);
};

// A run's buffers outside the layers (the residual stream and the backward's full-window gradients).
struct TrainModel::Scratch {
  Buffer x, next;                                // the residual stream, and the layer output / its gradient
  Buffer d_o, d_g, dq, dk, dv, dgk, conv;        // one layer's backward
  std::vector<LayerActs> acts;                   // every layer's (training) or one reused (evaluation)
};

TrainModel::TrainModel(const GlaConfig& config, const ModelWeights* weights, const LoraAdapter* lora)
    : c_(config), plan_(config), w_(weights), lora_(lora), lora_scale_(lora != nullptr ? lora->config.scale() : 0.0),
      dropout_(lora != nullptr ? static_cast<float>(lora->config.dropout) : 0.0f),
      slices_(std::make_unique<Slices>(config)), scratch_(std::make_unique<Scratch>()) {}

TrainModel::~TrainModel() = default;

void TrainModel::ScaleSlicesForTest(double factor) {
  for (int64_t* r : {&slices_->attn_in, &slices_->attn_out_mlp, &slices_->head})
    *r = std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(*r) * factor));
  slices_->gla = std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(slices_->gla) * factor) / kGlaChunk) *
                 kGlaChunk;
}

const LoraPair* TrainModel::Pair(int layer, LoraTarget t) const {
  if (lora_ == nullptr) return nullptr;
  const auto& p = lora_->layers[layer][static_cast<int>(t)];
  return p.has_value() ? &*p : nullptr;
}

// drop(x) for the n rows of a slice starting at row r0 (x and out: the slice's rows of `in`). The
// mask of element (r0 + i) * in + j is the whole window's: slicing does not change it.
void TrainModel::DropRows(const float* x, int64_t r0, int64_t n, int64_t in, uint64_t seed, float* out) const {
  const float keep = 1.0f / (1.0f - dropout_);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < in; ++j) {
      const uint64_t e = static_cast<uint64_t>((r0 + i) * in + j);
      out[i * in + j] = DropoutKeeps(seed, e, dropout_) ? x[i * in + j] * keep : 0.0f;
    }
}

void TrainModel::ProjForward(const float* x, Rows rows, const Weight& w, int layer, LoraTarget t, uint64_t seed,
                             LoraCache* cache, float* y, int64_t y_stride, float beta) const {
  const int64_t out = w.shape[0], in = w.shape[1], r0 = rows.r0, n = rows.n;
  cpu::Linear(x, in, w.data.data(), out, in, y, y_stride, n, beta);
  const LoraPair* p = Pair(layer, t);
  if (p == nullptr) return;
  const int64_t r = p->a.shape[0];
  const float* xd = x;
  std::vector<float> dropped;
  if (seed != 0 && dropout_ > 0.0f) {  // a mask per (window, layer, target): the backward redraws it
    cache->seed = seed * 0x100000001B3ull + static_cast<uint64_t>(layer) * kNumLoraTargets + static_cast<uint64_t>(t);
    dropped.resize(n * in);
    DropRows(x, r0, n, in, cache->seed, dropped.data());
    xd = dropped.data();
  } else {
    cache->seed = 0;
  }
  cache->xa.resize(rows.T * r);
  float* xa = cache->xa.data() + r0 * r;
  cpu::Linear(xd, in, p->a.data.data(), r, in, xa, r, n);
  // y += scale * xa B^T: scale folded into a copy of xa keeps the cache unscaled for the backward.
  std::vector<float> sxa(xa, xa + n * r);
  for (float& e : sxa) e *= static_cast<float>(lora_scale_);
  cpu::Linear(sxa.data(), r, p->b.data.data(), out, r, y, y_stride, n, 1.0f);
}

void TrainModel::ProjBackward(const float* x, Rows rows, const Weight& w, Weight* dw, int layer, LoraTarget t,
                              const LoraCache& cache, const float* dy, int64_t dy_stride, float* dx, float dx_beta,
                              const TrainGrads& grads) const {
  const int64_t out = w.shape[0], in = w.shape[1], r0 = rows.r0, n = rows.n;
  cpu::LinearBackward(x, in, w.data.data(), out, in, dy, dy_stride, dx, in, dx_beta, Ptr(dw), n);
  const LoraPair* p = Pair(layer, t);
  if (p == nullptr) return;
  LoraPair* gp = nullptr;
  if (grads.lora != nullptr) gp = &*grads.lora->layers[layer][static_cast<int>(t)];
  const int64_t r = p->a.shape[0];
  // d(xa) = scale * dy B;  dB += scale * dy^T xa   (dy scaled once, into a dense copy)
  std::vector<float> sdy(n * out);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < out; ++j) sdy[i * out + j] = static_cast<float>(lora_scale_) * dy[i * dy_stride + j];
  std::vector<float> dxa(n * r);
  cpu::LinearBackward(cache.xa.data() + r0 * r, r, p->b.data.data(), out, r, sdy.data(), out, dxa.data(), r, 0.0f,
                      gp ? gp->b.data.data() : nullptr, n);
  // d(drop(x)) = d(xa) A;  dA += d(xa)^T drop(x);  dx += d(drop(x)) * mask factor
  const bool dropped = cache.seed != 0;
  std::vector<float> xd_rows;
  if (dropped) {
    xd_rows.resize(n * in);
    DropRows(x, r0, n, in, cache.seed, xd_rows.data());
  }
  const float* xd = dropped ? xd_rows.data() : x;
  std::vector<float> dxd(n * in);
  cpu::LinearBackward(xd, in, p->a.data.data(), r, in, dxa.data(), r, dxd.data(), in, 0.0f,
                      gp ? gp->a.data.data() : nullptr, n);
  const float keep = 1.0f / (1.0f - dropout_);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < in; ++j) {
      const float d = dxd[i * in + j];
      dx[i * in + j] += !dropped ? d : DropoutKeeps(cache.seed, static_cast<uint64_t>((r0 + i) * in + j), dropout_) ? d * keep : 0.0f;
    }
}

// Training keeps q, k and v in arrays of their own widths (not a fused buffer).
GlaRows TrainModel::GlaInputs(const LayerActs& a, float* o) const {
  const bool conv = plan_.short_conv;
  GlaRows r = plan_.Rows(conv ? a.qc.data() : a.q.data(), conv ? a.kc.data() : a.k.data(),
                         conv ? a.vc.data() : a.v.data(), 0, a.gk.data(), o);
  r.q_stride = plan_.q_width, r.k_stride = plan_.k_width, r.v_stride = plan_.v_width;
  return r;
}

// Work that is separate per row (norms, projections, activations) runs in slices of rows; the
// GLA operator runs in slices of time carrying its state (slices start on chunk boundaries, so
// the result is the whole sequence's); only the short conv (a few flops per value) is one piece.
// `pause` comes between slices; false from it stops the layer (false returned, outputs partial).
bool TrainModel::LayerForward(int l, int64_t T, const float* x_in, float* x_out, LayerActs& a, uint64_t seed,
                              bool keep_states, const std::function<bool()>& pause) const {
  const LayerWeights& w = w_->layers[l];
  const GlaLayerPlan& p = plan_;
  const int64_t D = p.hidden, I = p.intermediate, kdpg = p.k_width;
  const int64_t KD = p.q_width, VD = p.o_width, vdpg = p.v_width, R = p.gate_rank;
  const float eps = p.eps;
  a.x_in.Reset(T * D);
  a.h.Reset(T * D);
  a.q.Reset(T * KD);
  a.k.Reset(T * kdpg);
  a.v.Reset(T * vdpg);
  if (p.output_gate) a.g.Reset(T * VD);
  a.lr.Reset(T * R);
  a.gk_pre.Reset(T * kdpg);
  a.gk.Reset(T * kdpg);
  // The short conv runs inside the row slices too, its last inputs carried from slice to slice.
  std::vector<float> q_tail, k_tail, v_tail;
  if (p.short_conv) {
    a.qc.Reset(T * KD);
    a.kc.Reset(T * kdpg);
    a.vc.Reset(T * vdpg);
    q_tail.assign((p.conv_size - 1) * KD, 0.0f);  // training windows start from an empty past
    k_tail.assign((p.conv_size - 1) * kdpg, 0.0f);
    v_tail.assign((p.conv_size - 1) * vdpg, 0.0f);
  }
  auto lc = [&](LoraTarget t) { return &a.lora[static_cast<int>(t)]; };

  if (!ForSlices(T, slices_->attn_in, pause, [&](int64_t r0, int64_t n) {
    const Rows rows{r0, n, T};
    const float* h = a.h.data() + r0 * D;
    std::copy(x_in + r0 * D, x_in + (r0 + n) * D, a.x_in.data() + r0 * D);
    cpu::RmsNorm(x_in + r0 * D, D, w.attn_norm.data.data(), a.h.data() + r0 * D, D, n, D, eps);
    ProjForward(h, rows, w.q_proj, l, LoraTarget::kQ, seed, lc(LoraTarget::kQ), a.q.data() + r0 * KD, KD, 0.0f);
    ProjForward(h, rows, w.k_proj, l, LoraTarget::kK, seed, lc(LoraTarget::kK), a.k.data() + r0 * kdpg, kdpg, 0.0f);
    ProjForward(h, rows, w.v_proj, l, LoraTarget::kV, seed, lc(LoraTarget::kV), a.v.data() + r0 * vdpg, vdpg, 0.0f);
    if (p.output_gate)
      ProjForward(h, rows, w.g_proj, l, LoraTarget::kG, seed, lc(LoraTarget::kG), a.g.data() + r0 * VD, VD, 0.0f);
    ProjForward(h, rows, w.gk_proj0, l, LoraTarget::kGk0, seed, lc(LoraTarget::kGk0), a.lr.data() + r0 * R, R, 0.0f);
    ProjForward(a.lr.data() + r0 * R, rows, w.gk_proj1, l, LoraTarget::kGk1, seed, lc(LoraTarget::kGk1),
                a.gk_pre.data() + r0 * kdpg, kdpg, 0.0f);
    std::copy(a.gk_pre.data() + r0 * kdpg, a.gk_pre.data() + (r0 + n) * kdpg, a.gk.data() + r0 * kdpg);
    cpu::LogSigmoidGate(a.gk.data() + r0 * kdpg, kdpg, w.gk_proj1_bias.data.data(), n, kdpg, p.gate);
    if (p.short_conv) {
      auto conv = [&](const Buffer& x, int64_t C, const Weight& wc, std::vector<float>& tail, Buffer& y) {
        cpu::ShortConvSilu(x.data() + r0 * C, C, n, C, wc.data.data(), p.conv_size, tail.data(), y.data() + r0 * C, C);
      };
      conv(a.q, KD, w.q_conv, q_tail, a.qc);
      conv(a.k, kdpg, w.k_conv, k_tail, a.kc);
      conv(a.v, vdpg, w.v_conv, v_tail, a.vc);
    }
  }))
    return false;

  if (!pause()) return false;

  a.o.Reset(T * VD);
  const size_t S = static_cast<size_t>(p.state_floats);
  std::vector<float> state(S, 0.0f);
  const GlaRows gla_rows = GlaInputs(a, a.o.data());
  if (keep_states) a.gla_states.Reset(((T + slices_->gla - 1) / slices_->gla) * S);
  if (!ForSlices(T, slices_->gla, pause, [&](int64_t r0, int64_t n) {
    if (keep_states) std::copy(state.begin(), state.end(), a.gla_states.data() + (r0 / slices_->gla) * S);
    cpu::GlaChunkwise(p.Seq(GlaLayerPlan::From(gla_rows, r0), static_cast<int>(n), state.data()), kGlaChunk, 16);
  }))
    return false;

  if (!pause()) return false;
  a.og.Reset(T * VD);
  a.x_mid.Reset(T * D);
  a.h2.Reset(T * D);
  a.gu.Reset(T * 2 * I);
  a.act.Reset(T * I);
  if (!ForSlices(T, slices_->attn_out_mlp, pause, [&](int64_t r0, int64_t n) {
    const Rows rows{r0, n, T};
    float* x_mid = a.x_mid.data() + r0 * D;
    const float* h2 = a.h2.data() + r0 * D;
    float* gu = a.gu.data() + r0 * 2 * I;
    cpu::RmsNormSwishGate(a.o.data() + r0 * VD, VD, p.output_gate ? a.g.data() + r0 * VD : nullptr, VD,
                          w.g_norm.data.data(), a.og.data() + r0 * VD, VD, n, p.heads, p.head_v, eps);
    std::copy(x_in + r0 * D, x_in + (r0 + n) * D, x_mid);
    ProjForward(a.og.data() + r0 * VD, rows, w.o_proj, l, LoraTarget::kO, seed, lc(LoraTarget::kO), x_mid, D, 1.0f);
    cpu::RmsNorm(x_mid, D, w.mlp_norm.data.data(), a.h2.data() + r0 * D, D, n, D, eps);
    ProjForward(h2, rows, w.gate_proj, l, LoraTarget::kGate, seed, lc(LoraTarget::kGate), gu, 2 * I, 0.0f);
    ProjForward(h2, rows, w.up_proj, l, LoraTarget::kUp, seed, lc(LoraTarget::kUp), gu + I, 2 * I, 0.0f);
    cpu::SwiGlu(gu, 2 * I, a.act.data() + r0 * I, I, n, I);
    std::copy(x_mid, x_mid + n * D, x_out + r0 * D);
    ProjForward(a.act.data() + r0 * I, rows, w.down_proj, l, LoraTarget::kDown, seed, lc(LoraTarget::kDown),
                x_out + r0 * D, D, 1.0f);
  }))
    return false;
  return true;
}

// dx holds the gradient of the layer's output on entry and of its input on return. Sliced as the
// forward is; the GLA backward walks its time slices last to first, each from the state the
// forward kept at its start and the state gradient of the slice after it.
bool TrainModel::LayerBackward(int l, int64_t T, const LayerActs& a, float* dx, const TrainGrads& grads,
                               const std::function<bool()>& pause) const {
  const LayerWeights& w = w_->layers[l];
  LayerWeights* gw = grads.weights != nullptr ? &grads.weights->layers[l] : nullptr;
  auto gwt = [&](LoraTarget t) -> Weight* { return gw != nullptr ? &TargetWeight(*gw, t) : nullptr; };
  auto cache = [&](LoraTarget t) -> const LoraCache& { return a.lora[static_cast<int>(t)]; };
  const GlaLayerPlan& p = plan_;
  const int64_t D = p.hidden, I = p.intermediate, kdpg = p.k_width;
  const int64_t KD = p.q_width, VD = p.o_width, vdpg = p.v_width, R = p.gate_rank;
  const float eps = p.eps;

  // MLP, then the attention's output: x_out = x_mid + down(swiglu(gate|up(RmsNorm(x_mid)))),
  // x_mid = x_in + o_proj(gnorm_swish(GLA(q, k, v, gk), g)). Row-local: one slice loop.
  Scratch& sc = *scratch_;
  Buffer &d_o = sc.d_o, &d_g = sc.d_g, &dq = sc.dq, &dk = sc.dk, &dv = sc.dv, &dgk = sc.dgk;
  d_o.Reset(T * VD);
  d_g.Reset(p.output_gate ? T * VD : 0);
  if (!ForSlices(T, slices_->attn_out_mlp, pause, [&](int64_t r0, int64_t n) {
    const Rows rows{r0, n, T};
    float* dxr = dx + r0 * D;
    const float *h2 = a.h2.data() + r0 * D, *og = a.og.data() + r0 * VD;
    std::vector<float> d_act(n * I), d_gu(n * 2 * I), d_h(n * D), d_og(n * VD);  // this slice's rows
    ProjBackward(a.act.data() + r0 * I, rows, w.down_proj, gwt(LoraTarget::kDown), l, LoraTarget::kDown,
                 cache(LoraTarget::kDown), dxr, D, d_act.data(), 0.0f, grads);
    cpu::SwiGluBackward(a.gu.data() + r0 * 2 * I, 2 * I, d_act.data(), I, d_gu.data(), 2 * I, n, I);
    ProjBackward(h2, rows, w.gate_proj, gwt(LoraTarget::kGate), l, LoraTarget::kGate, cache(LoraTarget::kGate),
                 d_gu.data(), 2 * I, d_h.data(), 0.0f, grads);
    ProjBackward(h2, rows, w.up_proj, gwt(LoraTarget::kUp), l, LoraTarget::kUp, cache(LoraTarget::kUp),
                 d_gu.data() + I, 2 * I, d_h.data(), 1.0f, grads);
    cpu::RmsNormBackward(a.x_mid.data() + r0 * D, D, w.mlp_norm.data.data(), d_h.data(), D, dxr, D,
                         /*accumulate_dx=*/true, gw ? gw->mlp_norm.data.data() : nullptr, n, D, eps);
    ProjBackward(og, rows, w.o_proj, gwt(LoraTarget::kO), l, LoraTarget::kO, cache(LoraTarget::kO), dxr, D,
                 d_og.data(), 0.0f, grads);
    cpu::RmsNormSwishGateBackward(a.o.data() + r0 * VD, VD, p.output_gate ? a.g.data() + r0 * VD : nullptr, VD,
                                  w.g_norm.data.data(), d_og.data(), VD, d_o.data() + r0 * VD, VD,
                                  p.output_gate ? d_g.data() + r0 * VD : nullptr, VD,
                                  gw ? gw->g_norm.data.data() : nullptr, n, p.heads, p.head_v, eps);
  }))
    return false;

  if (!pause()) return false;
  dq.Reset(T * KD);
  dk.Reset(T * kdpg);
  dv.Reset(T * vdpg);
  dgk.Reset(T * kdpg);
  const size_t S = static_cast<size_t>(p.state_floats);
  std::vector<float> dh_after(S), dh0(S);  // state gradient flowing back from the later slices
  const GlaRows gla_rows = GlaInputs(a, nullptr);
  const int64_t gla_slices = (T + slices_->gla - 1) / slices_->gla;
  for (int64_t s = gla_slices - 1; s >= 0; --s) {
    const int64_t r0 = s * slices_->gla, n = std::min(slices_->gla, T - r0);
    // The slice's start state: read, not changed (kernels/gla.h).
    const GlaSeqParams sp = p.Seq(GlaLayerPlan::From(gla_rows, r0), static_cast<int>(n),
                                  const_cast<float*>(a.gla_states.data() + s * S));
    const GlaSeqGrads pg = p.SeqGrads(d_o.data() + r0 * VD, dq.data() + r0 * KD, dk.data() + r0 * kdpg,
                                      dv.data() + r0 * vdpg, dgk.data() + r0 * kdpg,
                                      s + 1 < gla_slices ? dh_after.data() : nullptr, dh0.data());
    cpu::GlaBackwardChunkwise(sp, pg, kGlaChunk);  // cpu::GlaBackwardNaive is its reference (gla_backward_test)
    dh_after.swap(dh0);
    if (!pause()) return false;
  }

  if (p.short_conv) {  // the GLA gradients are those of the conv outputs: take them back to its inputs
    // One piece: the conv's backward has no entry-tail gradient to carry between slices (a few
    // flops per value: ~T x channels x conv_size).
    auto conv_back = [&](const Buffer& x, int64_t C, const Weight& wc, Weight* dwc, Buffer& d) {
      sc.conv.Reset(T * C);
      cpu::ShortConvSiluBackward(x.data(), C, T, C, wc.data.data(), p.conv_size, nullptr, d.data(), C,
                                 sc.conv.data(), C, Ptr(dwc));
      d.swap(sc.conv);
    };
    conv_back(a.q, KD, w.q_conv, gw ? &gw->q_conv : nullptr, dq);
    conv_back(a.k, kdpg, w.k_conv, gw ? &gw->k_conv : nullptr, dk);
    conv_back(a.v, vdpg, w.v_conv, gw ? &gw->v_conv : nullptr, dv);
    if (!pause()) return false;
  }

  // Forget gate (gk = logsigmoid(gk_proj1(gk_proj0(h)) + b) / normalizer), then every projection
  // of h sends its gradient back into d_h, then the attention norm.
  if (!ForSlices(T, slices_->attn_in, pause, [&](int64_t r0, int64_t n) {
    const Rows rows{r0, n, T};
    const float* h = a.h.data() + r0 * D;
    std::vector<float> d_gk_pre(n * kdpg), d_lr(n * R), d_h(n * D);  // this slice's rows
    cpu::LogSigmoidGateBackward(a.gk_pre.data() + r0 * kdpg, kdpg, w.gk_proj1_bias.data.data(),
                                dgk.data() + r0 * kdpg, kdpg, d_gk_pre.data(), kdpg,
                                gw ? gw->gk_proj1_bias.data.data() : nullptr, n, kdpg, p.gate);
    ProjBackward(a.lr.data() + r0 * R, rows, w.gk_proj1, gwt(LoraTarget::kGk1), l, LoraTarget::kGk1,
                 cache(LoraTarget::kGk1), d_gk_pre.data(), kdpg, d_lr.data(), 0.0f, grads);
    ProjBackward(h, rows, w.q_proj, gwt(LoraTarget::kQ), l, LoraTarget::kQ, cache(LoraTarget::kQ),
                 dq.data() + r0 * KD, KD, d_h.data(), 0.0f, grads);
    ProjBackward(h, rows, w.k_proj, gwt(LoraTarget::kK), l, LoraTarget::kK, cache(LoraTarget::kK),
                 dk.data() + r0 * kdpg, kdpg, d_h.data(), 1.0f, grads);
    ProjBackward(h, rows, w.v_proj, gwt(LoraTarget::kV), l, LoraTarget::kV, cache(LoraTarget::kV),
                 dv.data() + r0 * vdpg, vdpg, d_h.data(), 1.0f, grads);
    if (p.output_gate)
      ProjBackward(h, rows, w.g_proj, gwt(LoraTarget::kG), l, LoraTarget::kG, cache(LoraTarget::kG),
                   d_g.data() + r0 * VD, VD, d_h.data(), 1.0f, grads);
    ProjBackward(h, rows, w.gk_proj0, gwt(LoraTarget::kGk0), l, LoraTarget::kGk0, cache(LoraTarget::kGk0),
                 d_lr.data(), R, d_h.data(), 1.0f, grads);
    cpu::RmsNormBackward(a.x_in.data() + r0 * D, D, w.attn_norm.data.data(), d_h.data(), D, dx + r0 * D, D,
                         /*accumulate_dx=*/true, gw ? gw->attn_norm.data.data() : nullptr, n, D, eps);
  }))
    return false;
  return true;
}

double TrainModel::Run(std::span<const int32_t> tokens, const TrainGrads* grads, float grad_scale,
                       uint64_t dropout_seed, const std::function<bool()>& yield) const {
  constexpr double kStopped = std::numeric_limits<double>::quiet_NaN();
  const auto go_on = [&yield] { return !yield || yield(); };
  // Inside a layer, between slices: serving may go in there, and a stop ends the run there.
  const std::function<bool()> pause = go_on;
  const int64_t T = static_cast<int64_t>(tokens.size()) - 1, D = plan_.hidden, V = c_.vocab_size;
  const float eps = plan_.eps;
  const bool backward = grads != nullptr;
  // Dropout only while training; seed 0 means none (ProjForward), so a zero seed is moved off 0.
  const uint64_t seed = backward && dropout_ > 0.0f ? (dropout_seed == 0 ? 0x5EEDull : dropout_seed) : 0;

  Scratch& sc = *scratch_;
  sc.x.Reset(T * D);
  sc.next.Reset(T * D);
  if (!ForSlices(T, slices_->attn_in, pause, [&](int64_t r0, int64_t n) {
        cpu::EmbeddingGather(w_->embeddings.data.data(), D, tokens.data() + r0, n, sc.x.data() + r0 * D);
      }))
    return kStopped;
  const size_t layers_kept = backward ? c_.num_hidden_layers : 1;
  if (sc.acts.size() < layers_kept) sc.acts.resize(layers_kept);
  for (int l = 0; l < c_.num_hidden_layers; ++l) {
    if (!go_on()) return kStopped;
    if (!LayerForward(l, T, sc.x.data(), sc.next.data(), sc.acts[backward ? l : 0], seed, backward, pause))
      return kStopped;
    sc.x.swap(sc.next);
  }
  if (!go_on()) return kStopped;

  // Final norm, lm_head and cross-entropy, and (training) their backward into the residual
  // stream's gradient, slice by slice.
  const Weight& lm = w_->output_embeddings();
  Weight* dlm = nullptr;
  if (backward && grads->weights != nullptr)
    dlm = w_->lm_head.empty() ? &grads->weights->embeddings : &grads->weights->lm_head;
  float* dx = sc.next.data();
  double loss_sum = 0.0;
  const bool head_done = ForSlices(T, slices_->head, pause, [&](int64_t r0, int64_t n) {
    std::vector<float> hf(n * D), dhf(backward ? n * D : 0);
    const float* x = sc.x.data() + r0 * D;
    cpu::RmsNorm(x, D, w_->norm.data.data(), hf.data(), D, n, D, eps);
    loss_sum += cpu::LinearCrossEntropy(hf.data(), D, lm.data.data(), V, D, tokens.data() + r0 + 1, n, grad_scale,
                                        backward ? dhf.data() : nullptr, D, Ptr(dlm))
                    .loss_sum;
    if (backward)
      cpu::RmsNormBackward(x, D, w_->norm.data.data(), dhf.data(), D, dx + r0 * D, D, /*accumulate_dx=*/false,
                           grads->weights ? grads->weights->norm.data.data() : nullptr, n, D, eps);
  });
  if (!head_done) return kStopped;
  if (!backward) return loss_sum;

  // Backward: layers in reverse, then the embedding.
  for (int l = c_.num_hidden_layers - 1; l >= 0; --l) {
    if (!go_on()) return kStopped;
    if (!LayerBackward(l, T, sc.acts[l], dx, *grads, pause)) return kStopped;
  }
  if (grads->weights != nullptr &&
      !ForSlices(T, slices_->attn_in, pause, [&](int64_t r0, int64_t n) {
        cpu::EmbeddingScatterAdd(dx + r0 * D, D, tokens.data() + r0, n, grads->weights->embeddings.data.data());
      }))
    return kStopped;
  return loss_sum;
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
