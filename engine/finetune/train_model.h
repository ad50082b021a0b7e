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
#include <span>
#include <vector>

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

  // Forward over tokens[0..n-1) predicting tokens[1..n) (n >= 2, ids checked by the caller),
  // returns the sum of the token losses. When grads is non-null, also runs the backward of
  // grad_scale * (that sum) and ADDS the gradients into *grads (so windows accumulate).
  // dropout_seed seeds the LoRA dropout masks (dropout is applied only when grads is non-null).
  // `yield` (when set) is called between layers and between the parts of each layer, forward and
  // backward: it may block while the
  // device serves requests (engine/finetune/jobs.cc), and when it returns false the run stops
  // there and returns NaN (the gradients added so far are partial: the caller drops them).
  double Run(std::span<const int32_t> tokens, const TrainGrads* grads, float grad_scale, uint64_t dropout_seed,
             const std::function<bool()>& yield = {}) const;

 private:
  struct LoraCache;
  struct LayerActs;
  class Dropout;
  // y (+)= x W^T + scale * (drop(x) A^T) B^T over T rows, and its backward.
  void ProjForward(const float* x, int64_t T, const Weight& w, int layer, LoraTarget t, Dropout* dropout,
                   LoraCache* cache, float* y, int64_t y_stride, float beta) const;
  void ProjBackward(const float* x, int64_t T, const Weight& w, Weight* dw, int layer, LoraTarget t,
                    const LoraCache& cache, const float* dy, int64_t dy_stride, float* dx, float dx_beta,
                    const TrainGrads& grads) const;
  // `pause` is called between the layer's parts (serving may run there).
  void LayerForward(int layer, int64_t T, const float* x_in, float* x_out, LayerActs& a, Dropout* dropout,
                    const std::function<void()>& pause) const;
  void LayerBackward(int layer, int64_t T, const LayerActs& a, float* dx, const TrainGrads& grads,
                     const std::function<void()>& pause) const;
  const LoraPair* Pair(int layer, LoraTarget t) const;

  const GlaConfig& c_;
  const ModelWeights* w_;
  const LoraAdapter* lora_;
  double lora_scale_ = 0.0;
};

// Calls fn(param, grad, decay) for every trainable tensor pair: decay is true for matrices (2-D
// weights, LoRA factors) and false for norm weights and biases, which AdamW leaves undecayed.
void ForEachParam(ModelWeights& params, ModelWeights& grads, const std::function<void(Weight&, Weight&, bool)>& fn);
void ForEachParam(LoraAdapter& params, LoraAdapter& grads, const std::function<void(Weight&, Weight&, bool)>& fn);

// A zero tensor of every shape in `like` (gradient and optimizer-moment buffers).
ModelWeights ZerosLike(const ModelWeights& like);
LoraAdapter ZerosLike(const LoraAdapter& like);

}  // namespace gla
