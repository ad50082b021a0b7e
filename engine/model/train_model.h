// A GLA model that trains on the CPU: forward over one window of tokens from an empty state,
// keeping every activation the backward needs, then backward through every op of the model
// (kernels/*.h backward references) into gradient buffers shaped like the parameters.
//
// Trainable parameters are either all base weights (full training) or the LoRA pairs of an
// adapter (base frozen). Projections are kept unfused here (unlike the serving runners) so each
// one can carry its own LoRA pair and gradient.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "engine/model/layer_plan.h"
#include "kernels/gla.h"
#include "models/config.h"
#include "models/lora_adapter.h"
#include "models/weights.h"

namespace gla {

// The base projection a LoRA target adapts (LayerWeights, const or not).
template <typename LW>
auto& TargetWeight(LW& w, LoraTarget t) {
  switch (t) {
    case LoraTarget::kQ: return w.q_proj;
    case LoraTarget::kK: return w.k_proj;
    case LoraTarget::kV: return w.v_proj;
    case LoraTarget::kG: return w.g_proj;
    case LoraTarget::kO: return w.o_proj;
    case LoraTarget::kGk0: return w.gk_proj0;
    case LoraTarget::kGk1: return w.gk_proj1;
    case LoraTarget::kGate: return w.gate_proj;
    case LoraTarget::kUp: return w.up_proj;
    case LoraTarget::kDown: return w.down_proj;
  }
  return w.q_proj;  // unreachable: every enumerator is handled above
}

// Where gradients go. Null members are not computed (frozen).
struct TrainGrads {
  ModelWeights* weights = nullptr;  // same shapes as the model's weights (full training)
  LoraAdapter* lora = nullptr;      // same shapes as the adapter (LoRA)
};

class TrainModel {
 public:
  // `weights` and `lora` (null: no adapter) must outlive the model; it reads them on every call,
  // so an optimizer updating them in place is seen by the next call.
  TrainModel(const GlaConfig& config, const ModelWeights* weights, const LoraAdapter* lora);
  ~TrainModel();
  TrainModel(const TrainModel&) = delete;
  TrainModel& operator=(const TrainModel&) = delete;

  // Forward over tokens[0..n-1) predicting tokens[1..n) (n >= 2, ids checked by the caller),
  // returns the sum of the token losses. When grads is non-null, also runs the backward of
  // grad_scale * (that sum) and ADDS the gradients into *grads (so windows accumulate).
  // dropout_seed seeds the LoRA dropout masks (dropout is applied only when grads is non-null;
  // masks are counter-based, kernels/dropout.h).
  //
  // `yield` (when set) is called between layers and inside each layer between slices of work:
  // row-wise work (norms, projections, activations, the lm_head cross-entropy) runs in slices of
  // rows and the GLA operator in slices of time (its state carried forward, kept at each slice's
  // start for the backward, which walks the slices last to first), each slice about the same
  // number of flops whatever the window's length (~2^28 on BLAS, ~2^25 in the GLA operator). So
  // a serving step waiting in `yield` waits for one slice, not one layer of a window. Slices
  // depend on the model's shapes only: results do not depend on timing. yield may block while
  // the device serves requests (engine/finetune/jobs.cc); when it returns false the run stops
  // there and returns NaN (the gradients added so far are partial: the caller drops them).
  // The activations' memory is kept for the next call (one Run at a time per model).
  double Run(std::span<const int32_t> tokens, const TrainGrads* grads, float grad_scale, uint64_t dropout_seed,
             const std::function<bool()>& yield = {}) const;

  // Tests: multiplies every slice's rows by `factor` (the GLA's stays a multiple of its chunk), to
  // check that results do not depend on how the work is cut.
  void ScaleSlicesForTest(double factor);

 private:
  struct Slices;
  class Buffer;
  struct LoraCache;
  struct LayerActs;
  struct Scratch;
  struct Rows {
    int64_t r0, n, T;  // a slice: rows [r0, r0 + n) of a window of T
  };
  // y (+)= x W^T + scale * (drop(x) A^T) B^T over one slice of rows, and its backward. x, y, dy and
  // dx point at the slice's first row; the LoRA cache and the dropout mask are indexed by window row.
  void ProjForward(const float* x, Rows rows, const Weight& w, int layer, LoraTarget t, uint64_t seed,
                   LoraCache* cache, float* y, int64_t y_stride, float beta) const;
  void ProjBackward(const float* x, Rows rows, const Weight& w, Weight* dw, int layer, LoraTarget t,
                    const LoraCache& cache, const float* dy, int64_t dy_stride, float* dx, float dx_beta,
                    const TrainGrads& grads) const;
  void DropRows(const float* x, int64_t r0, int64_t n, int64_t in, uint64_t seed, float* out) const;
  // The GLA operator's inputs (after the short conv when there is one), output rows o.
  GlaRows GlaInputs(const LayerActs& a, float* o) const;
  // `pause` is called between slices (serving may run there); when it returns false the layer
  // stops there and returns false. keep_states: for the backward.
  bool LayerForward(int layer, int64_t T, const float* x_in, float* x_out, LayerActs& a, uint64_t seed,
                    bool keep_states, const std::function<bool()>& pause) const;
  bool LayerBackward(int layer, int64_t T, const LayerActs& a, float* dx, const TrainGrads& grads,
                     const std::function<bool()>& pause) const;
  const LoraPair* Pair(int layer, LoraTarget t) const;

  const GlaConfig& c_;
  const GlaLayerPlan plan_;
  const ModelWeights* w_;
  const LoraAdapter* lora_;
  double lora_scale_ = 0.0;
  float dropout_ = 0.0f;
  std::unique_ptr<Slices> slices_;
  // Activations and gradients kept from one Run to the next (see Buffer): Run is not reentrant.
  std::unique_ptr<Scratch> scratch_;
};

// Calls fn(param, grad, decay) for every trainable tensor pair: decay is true for matrices (2-D
// weights, LoRA factors) and false for norm weights and biases, which AdamW leaves undecayed.
void ForEachParam(ModelWeights& params, ModelWeights& grads, const std::function<void(Weight&, Weight&, bool)>& fn);
void ForEachParam(LoraAdapter& params, LoraAdapter& grads, const std::function<void(Weight&, Weight&, bool)>& fn);

// A zero tensor of every shape in `like` (gradient and optimizer-moment buffers).
ModelWeights ZerosLike(const ModelWeights& like);
LoraAdapter ZerosLike(const LoraAdapter& like);

}  // namespace gla
