// TrainBackend on the CPU: TrainModel (model/train_model.h) over one window at a time, gradients
// accumulated over the batch, AdamW (kernels/optimizer.h) on the host.
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/model/train_backend.h"
#include "engine/model/train_model.h"

namespace gla {

namespace {

// What the CPU path holds for one window of T tokens, roughly: every layer keeps its activations
// for the backward (about 24 floats per hidden unit and 6 per MLP unit and token), plus the
// logits of a chunk of the loss. An estimate for refusing sizes that cannot fit, not a budget.
int64_t WindowActivationBytes(const GlaConfig& c, int64_t T) {
  const int64_t per_token_layer = 24 * int64_t{c.hidden_size} + 6 * int64_t{c.intermediate_size} +
                                  4 * int64_t{c.value_dim} + 4 * int64_t{c.key_dim};
  return 4 * T * (per_token_layer * c.num_hidden_layers + 8 * int64_t{c.hidden_size});
}

// MemAvailable from /proc/meminfo, in bytes (0 when unknown).
int64_t AvailableHostBytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  int64_t kb = 0;
  while (in >> key) {
    if (key == "MemAvailable:") {
      in >> kb;
      return kb * 1024;
    }
    in.ignore(256, '\n');
  }
  return 0;
}

class CpuTrainBackend final : public TrainBackend {
 public:
  CpuTrainBackend(const GlaConfig& config, TrainParams params)
      : config_(config), params_(std::move(params)) {
    if (params_.lora.has_value()) {
      lora_grads_ = ZerosLike(*params_.lora);
      lora_m_ = ZerosLike(*params_.lora);
      lora_v_ = ZerosLike(*params_.lora);
    } else {
      weight_grads_ = ZerosLike(params_.weights);
      weight_m_ = ZerosLike(params_.weights);
      weight_v_ = ZerosLike(params_.weights);
    }
    model_ = std::make_unique<TrainModel>(config_, &params_.weights,
                                          params_.lora.has_value() ? &*params_.lora : nullptr);
  }

  bool cuda() const override { return false; }

  absl::StatusOr<StepResult> ForwardBackward(std::span<const std::span<const int32_t>> windows, float grad_scale,
                                             uint64_t dropout_seed, const std::function<bool()>& yield) override {
    ForEachTrainable([](Weight&, Weight& g, Weight&, Weight&, bool) { std::fill(g.data.begin(), g.data.end(), 0.0f); });
    TrainGrads grads;
    if (params_.lora.has_value()) grads.lora = &lora_grads_;
    else grads.weights = &weight_grads_;
    bool stopped = false;
    std::function<bool()> hook;
    if (yield) hook = [&] { return !(stopped = stopped || !yield()); };
    StepResult r;
    for (size_t i = 0; i < windows.size(); ++i) {
      const double loss = model_->Run(windows[i], &grads, grad_scale, dropout_seed ^ i, hook);
      // Stopped inside the window: the partial gradients are dropped (zeroed at the next call).
      if (stopped) return absl::CancelledError("the training step was stopped");
      r.loss_sum += loss;
    }
    ForEachTrainable([&](Weight&, Weight& g, Weight&, Weight&, bool) {
      r.grad_sumsq += cpu::SumOfSquares(g.data.data(), static_cast<int64_t>(g.data.size()));
    });
    return r;
  }

  absl::StatusOr<double> LossSum(std::span<const std::vector<int32_t>> windows) override {
    double sum = 0.0;
    for (const auto& w : windows) sum += model_->Run(w, nullptr, 1.0f, 0);
    return sum;
  }

  absl::Status Update(const cpu::AdamWParams& params, float weight_decay, float clip) override {
    ForEachTrainable([&](Weight& p, Weight& g, Weight& m, Weight& v, bool decay) {
      cpu::AdamWParams pp = params;
      pp.weight_decay = decay ? weight_decay : 0.0f;
      cpu::AdamWStep(p.data.data(), g.data.data(), m.data.data(), v.data.data(), static_cast<int64_t>(p.data.size()),
                     pp, clip);
    });
    return absl::OkStatus();
  }

  absl::StatusOr<LoraAdapter> TrainedAdapter() const override {
    if (!params_.lora.has_value()) return absl::FailedPreconditionError("a full-parameter run has no adapter");
    return *params_.lora;
  }
  absl::StatusOr<ModelWeights> TrainedWeights() const override { return params_.weights; }

 private:
  // fn(param, grad, m, v, decay) for every trainable tensor: the gradient and moment trees have
  // the parameters' shapes; they are walked in lock step.
  void ForEachTrainable(const std::function<void(Weight& p, Weight& g, Weight& m, Weight& v, bool decay)>& fn) {
    std::vector<Weight*> g, m, v;
    auto collect = [](std::vector<Weight*>& out) { return [&out](Weight&, Weight& w, bool) { out.push_back(&w); }; };
    std::vector<std::pair<Weight*, bool>> params;
    if (params_.lora.has_value()) {
      LoraAdapter& lora = *params_.lora;
      ForEachParam(lora, lora_grads_, collect(g));
      ForEachParam(lora, lora_m_, collect(m));
      ForEachParam(lora, lora_v_, collect(v));
      ForEachParam(lora, lora, [&](Weight& p, Weight&, bool d) { params.emplace_back(&p, d); });
    } else {
      ModelWeights& weights = params_.weights;
      ForEachParam(weights, weight_grads_, collect(g));
      ForEachParam(weights, weight_m_, collect(m));
      ForEachParam(weights, weight_v_, collect(v));
      ForEachParam(weights, weights, [&](Weight& p, Weight&, bool d) { params.emplace_back(&p, d); });
    }
    for (size_t i = 0; i < params.size(); ++i) fn(*params[i].first, *g[i], *m[i], *v[i], params[i].second);
  }

  GlaConfig config_;
  TrainParams params_;  // trained in place (the adapter for LoRA, every weight for full runs)
  // Gradients and AdamW moments, shaped like whichever parameters train.
  ModelWeights weight_grads_, weight_m_, weight_v_;
  LoraAdapter lora_grads_, lora_m_, lora_v_;
  std::unique_ptr<TrainModel> model_;  // reads params_ (by address: params_ never moves)
};

}  // namespace

absl::StatusOr<std::unique_ptr<TrainBackend>> MakeCpuTrainBackend(const GlaConfig& config, TrainParams params,
                                                                  int64_t window_tokens) {
  // One window's activations at a time; refused when they cannot fit.
  const int64_t need = WindowActivationBytes(config, window_tokens);
  const int64_t available = AvailableHostBytes();
  if (available > 0 && need > available / 2)
    return absl::ResourceExhaustedError(absl::StrCat(
        "fine-tune option 'sequence_length' ", window_tokens, " needs about ", need >> 20,
        " MiB of activations per window; this machine has ", available >> 20, " MiB available (at most half is used)"));
  return std::make_unique<CpuTrainBackend>(config, std::move(params));
}

}  // namespace gla
