#include "engine/finetune/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <numeric>
#include <optional>
#include <random>

#include "absl/strings/str_cat.h"
#include "engine/finetune/train_model.h"
#include "kernels/optimizer.h"
#include "models/status_macros.h"

#if defined(GLA_HAVE_CUDA)
#include "engine/finetune/cuda_train_model.h"
#endif

namespace gla {

namespace {

absl::Status OutOfRange(const char* field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("fine-tune option '", field, "' ", what));
}

bool InRange(double v, double lo, double hi) { return std::isfinite(v) && v >= lo && v <= hi; }

// Training windows: each document cut into pieces of sequence_length + 1 tokens that overlap by
// one, so every token after a document's first is a target exactly once.
std::vector<std::vector<int32_t>> CutWindows(const std::vector<std::vector<int32_t>>& docs, int length) {
  std::vector<std::vector<int32_t>> windows;
  for (const auto& doc : docs)
    for (size_t start = 0; start + 1 < doc.size(); start += length) {
      const size_t end = std::min(doc.size(), start + length + 1);
      windows.emplace_back(doc.begin() + start, doc.begin() + end);
    }
  return windows;
}

int64_t Targets(const std::vector<int32_t>& window) { return static_cast<int64_t>(window.size()) - 1; }

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

}  // namespace

absl::Status ValidateTrainOptions(const TrainOptions& o, const GlaConfig& config) {
  if (o.max_steps < 1 || o.max_steps > 10'000'000) return OutOfRange("max_steps", "must be in [1, 10000000]");
  if (o.batch_sequences < 1 || o.batch_sequences > 4096) return OutOfRange("batch_sequences", "must be in [1, 4096]");
  if (o.sequence_length < 1 || o.sequence_length > 65536) return OutOfRange("sequence_length", "must be in [1, 65536]");
  if (int64_t{o.batch_sequences} * o.sequence_length > kMaxStepTokens)
    return OutOfRange("batch_sequences", absl::StrCat("x sequence_length must be at most ", kMaxStepTokens,
                                                      " tokens per step"));
  if (!InRange(o.learning_rate, 0.0, 1.0) || o.learning_rate == 0.0)
    return OutOfRange("learning_rate", "must be in (0, 1]");
  if (!InRange(o.min_lr_ratio, 0.0, 1.0)) return OutOfRange("min_lr_ratio", "must be in [0, 1]");
  if (o.warmup_steps < 0 || o.warmup_steps > o.max_steps) return OutOfRange("warmup_steps", "must be in [0, max_steps]");
  if (!InRange(o.weight_decay, 0.0, 10.0)) return OutOfRange("weight_decay", "must be in [0, 10]");
  if (!InRange(o.beta1, 0.0, 1.0) || o.beta1 == 1.0) return OutOfRange("beta1", "must be in [0, 1)");
  if (!InRange(o.beta2, 0.0, 1.0) || o.beta2 == 1.0) return OutOfRange("beta2", "must be in [0, 1)");
  if (!InRange(o.adam_eps, 0.0, 1.0) || o.adam_eps == 0.0) return OutOfRange("adam_eps", "must be in (0, 1]");
  if (!InRange(o.max_grad_norm, 0.0, 1e6)) return OutOfRange("max_grad_norm", "must be in [0, 1e6] (0 = no clipping)");
  if (o.method == TrainOptions::Method::kLora) {
    const LoraConfig& l = o.lora;
    if (l.r < 1 || l.r > 1024) return OutOfRange("rank", "must be in [1, 1024]");
    if (!InRange(l.alpha, 0.0, 1e6) || l.alpha == 0.0) return OutOfRange("alpha", "must be in (0, 1e6]");
    if (!InRange(l.dropout, 0.0, 1.0) || l.dropout == 1.0) return OutOfRange("dropout", "must be in [0, 1)");
    if (l.targets.empty()) return OutOfRange("target_modules", "must name at least one projection");
    for (LoraTarget t : l.targets)
      if (t == LoraTarget::kG && !config.use_output_gate)
        return OutOfRange("target_modules", "names g_proj, but this model has no output gate");
  }
  return absl::OkStatus();
}

absl::Status CudaTrainingAvailable(const GlaConfig& config) {
#if defined(GLA_HAVE_CUDA)
  return CudaTrainSupported(config);
#else
  (void)config;
  return absl::FailedPreconditionError("this build has no CUDA: fine-tuning runs on the CPU");
#endif
}

double LearningRateAt(const TrainOptions& o, int64_t step) {
  // Linear warmup (step s < W takes peak * (s + 1) / W), then a half cosine from the peak down to
  // min_lr_ratio * peak at the last step.
  const double peak = o.learning_rate;
  if (step < o.warmup_steps) return peak * static_cast<double>(step + 1) / static_cast<double>(o.warmup_steps);
  const int64_t span = std::max<int64_t>(1, o.max_steps - o.warmup_steps - 1);
  const double progress = std::min(1.0, static_cast<double>(step - o.warmup_steps) / static_cast<double>(span));
  const double cosine = 0.5 * (1.0 + std::cos(M_PI * progress));
  return peak * (o.min_lr_ratio + (1.0 - o.min_lr_ratio) * cosine);
}

struct Trainer::Impl {
  TrainOptions options;
  GlaConfig config;
  ModelWeights weights;             // the model (trained in place for kFull, frozen for kLora)
  std::optional<LoraAdapter> lora;  // kLora
  // Gradients and AdamW moments, shaped like whichever parameters train.
  ModelWeights weight_grads, weight_m, weight_v;
  LoraAdapter lora_grads, lora_m, lora_v;
  std::optional<TrainModel> model;  // the CPU path
  TrainDevice device;
#if defined(GLA_HAVE_CUDA)
  // The GPU path: the device copies are what trains; `weights` / `lora` above keep the initial
  // values (and the tree shapes the results are downloaded into).
  std::unique_ptr<CudaTrainModel> gpu;
#endif
  bool on_gpu() const {
#if defined(GLA_HAVE_CUDA)
    return gpu != nullptr;
#else
    return false;
#endif
  }

  std::vector<std::vector<int32_t>> windows;
  std::vector<size_t> order;  // window order of the current epoch
  size_t cursor = 0;
  std::mt19937_64 rng;
  TrainProgress progress;
  double seconds_in_steps = 0.0;  // time spent inside Step(): the rate excludes waits between steps

  std::vector<size_t> NextBatch() {
    std::vector<size_t> batch;
    for (int i = 0; i < options.batch_sequences; ++i) {
      if (cursor == order.size()) {  // a new epoch, in a new order
        std::shuffle(order.begin(), order.end(), rng);
        cursor = 0;
      }
      batch.push_back(order[cursor++]);
    }
    return batch;
  }

  void ForEachTrainable(const std::function<void(Weight& p, Weight& g, Weight& m, Weight& v, bool decay)>& fn) {
    // The three moment/gradient trees have the parameters' shapes; walk them in lock step.
    std::vector<Weight*> g, m, v;
    auto collect = [](std::vector<Weight*>& out) { return [&out](Weight&, Weight& w, bool) { out.push_back(&w); }; };
    std::vector<std::pair<Weight*, bool>> params;
    if (lora.has_value()) {
      ForEachParam(*lora, lora_grads, collect(g));
      ForEachParam(*lora, lora_m, collect(m));
      ForEachParam(*lora, lora_v, collect(v));
      ForEachParam(*lora, *lora, [&](Weight& p, Weight&, bool d) { params.emplace_back(&p, d); });
    } else {
      ForEachParam(weights, weight_grads, collect(g));
      ForEachParam(weights, weight_m, collect(m));
      ForEachParam(weights, weight_v, collect(v));
      ForEachParam(weights, weights, [&](Weight& p, Weight&, bool d) { params.emplace_back(&p, d); });
    }
    for (size_t i = 0; i < params.size(); ++i) fn(*params[i].first, *g[i], *m[i], *v[i], params[i].second);
  }
};

Trainer::Trainer() : impl_(std::make_unique<Impl>()) {}
Trainer::~Trainer() = default;

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(const Checkpoint& base, const TrainOptions& options,
                                                         std::vector<std::vector<int32_t>> documents,
                                                         TrainDevice device) {
  RETURN_IF_ERROR(ValidateTrainOptions(options, base.config));
  for (size_t d = 0; d < documents.size(); ++d)
    for (int32_t id : documents[d])
      if (id < 0 || id >= base.config.vocab_size)
        return absl::InvalidArgumentError(absl::StrCat("document ", d, " holds token id ", id,
                                                       ", outside the vocabulary [0, ", base.config.vocab_size, ")"));
  if (base.weights.layers.empty() || base.weights.layers[0].q_proj.empty())
    return absl::FailedPreconditionError("the base checkpoint has no projection weights to train from");

  if (!device.cuda()) {  // one window's activations at a time; refused when they cannot fit
    const int64_t need = WindowActivationBytes(base.config, options.sequence_length);
    const int64_t available = AvailableHostBytes();
    if (available > 0 && need > available / 2)
      return absl::ResourceExhaustedError(absl::StrCat(
          "fine-tune option 'sequence_length' ", options.sequence_length, " needs about ", need >> 20,
          " MiB of activations per window; this machine has ", available >> 20, " MiB available (at most half is used)"));
  }
  std::unique_ptr<Trainer> t(new Trainer());
  Impl& s = *t->impl_;
  s.options = options;
  s.config = base.config;
  s.windows = CutWindows(documents, options.sequence_length);
  if (s.windows.empty())
    return absl::InvalidArgumentError("the training data holds no document of two or more tokens");
  s.order.resize(s.windows.size());
  std::iota(s.order.begin(), s.order.end(), size_t{0});
  s.cursor = s.order.size();  // the first NextBatch shuffles
  s.rng.seed(options.seed);
  s.weights = base.weights;
  s.device = device;
  if (options.method == TrainOptions::Method::kLora) {
    ASSIGN_OR_RETURN(LoraAdapter adapter, NewLoraAdapter(base.config, options.lora, options.seed));
    s.lora = std::move(adapter);
  }
  if (device.cuda()) {
#if defined(GLA_HAVE_CUDA)
    ASSIGN_OR_RETURN(s.gpu, CudaTrainModel::Create(device.cuda_device, s.config, s.weights,
                                                   s.lora.has_value() ? &*s.lora : nullptr));
    // Refused now rather than failing at its first step: the largest step the options allow.
    RETURN_IF_ERROR(s.gpu->CheckStepFits(
        int64_t{options.batch_sequences} * options.sequence_length,
        absl::StrCat("a step of batch_sequences ", options.batch_sequences, " x sequence_length ",
                     options.sequence_length)));
    s.progress.total_steps = options.max_steps;
    return t;
#else
    RETURN_IF_ERROR(CudaTrainingAvailable(base.config));
#endif
  }
  if (s.lora.has_value()) {
    s.lora_grads = ZerosLike(*s.lora);
    s.lora_m = ZerosLike(*s.lora);
    s.lora_v = ZerosLike(*s.lora);
  } else {
    s.weight_grads = ZerosLike(s.weights);
    s.weight_m = ZerosLike(s.weights);
    s.weight_v = ZerosLike(s.weights);
  }
  s.model.emplace(s.config, &s.weights, s.lora.has_value() ? &*s.lora : nullptr);
  s.progress.total_steps = options.max_steps;
  return t;
}

bool Trainer::done() const { return impl_->progress.step >= impl_->options.max_steps; }
const TrainProgress& Trainer::progress() const { return impl_->progress; }
const TrainDevice& Trainer::device() const { return impl_->device; }

absl::StatusOr<TrainProgress> Trainer::Step(const std::function<bool()>& yield) {
  Impl& s = *impl_;
  if (done()) return absl::FailedPreconditionError("the training run has already taken all its steps");
  const auto start = std::chrono::steady_clock::now();
  bool stopped = false;
  std::function<bool()> hook;
  if (yield) hook = [&] { return !(stopped = stopped || !yield()); };
  if (hook && !hook()) return absl::CancelledError("the training step was stopped");
  const std::vector<size_t> batch = s.NextBatch();
  int64_t targets = 0;
  for (size_t w : batch) targets += Targets(s.windows[w]);

  double loss_sum = 0.0, sumsq = 0.0;
  if (s.on_gpu()) {
#if defined(GLA_HAVE_CUDA)
    std::vector<std::span<const int32_t>> windows;
    for (size_t w : batch) windows.emplace_back(s.windows[w]);
    const uint64_t dropout_seed = s.options.seed ^ (static_cast<uint64_t>(s.progress.step) << 20);
    auto r = s.gpu->ForwardBackward(windows, 1.0f / static_cast<float>(targets), dropout_seed, hook);
    if (stopped) return absl::CancelledError("the training step was stopped");
    if (!r.ok()) return r.status();
    loss_sum = r->loss_sum;
    sumsq = r->grad_sumsq;
#endif
  } else {
    s.ForEachTrainable(
        [](Weight&, Weight& g, Weight&, Weight&, bool) { std::fill(g.data.begin(), g.data.end(), 0.0f); });
    TrainGrads grads;
    if (s.lora.has_value()) grads.lora = &s.lora_grads;
    else grads.weights = &s.weight_grads;
    for (size_t i = 0; i < batch.size(); ++i) {
      const uint64_t dropout_seed = s.options.seed ^ (static_cast<uint64_t>(s.progress.step) << 20) ^ i;
      const double window_loss =
          s.model->Run(s.windows[batch[i]], &grads, 1.0f / static_cast<float>(targets), dropout_seed, hook);
      // Stopped inside the window: the partial gradients are dropped (zeroed at the next step).
      if (stopped) return absl::CancelledError("the training step was stopped");
      loss_sum += window_loss;
    }
    s.ForEachTrainable([&](Weight&, Weight& g, Weight&, Weight&, bool) {
      sumsq += cpu::SumOfSquares(g.data.data(), static_cast<int64_t>(g.data.size()));
    });
  }
  const double loss = loss_sum / static_cast<double>(targets), norm = std::sqrt(sumsq);
  if (!std::isfinite(loss) || !std::isfinite(norm))
    return absl::InternalError(absl::StrCat("training diverged at step ", s.progress.step + 1, ": loss ", loss,
                                            ", gradient norm ", norm, " (try a lower learning rate)"));

  // Clip by the global norm, then one AdamW update of every trainable tensor.
  const float clip = s.options.max_grad_norm > 0 && norm > s.options.max_grad_norm
                         ? static_cast<float>(s.options.max_grad_norm / (norm + 1e-6))
                         : 1.0f;
  const double lr = LearningRateAt(s.options, s.progress.step);
  cpu::AdamWParams ap;
  ap.lr = static_cast<float>(lr);
  ap.beta1 = static_cast<float>(s.options.beta1);
  ap.beta2 = static_cast<float>(s.options.beta2);
  ap.eps = static_cast<float>(s.options.adam_eps);
  ap.step = s.progress.step + 1;
  if (s.on_gpu()) {
#if defined(GLA_HAVE_CUDA)
    RETURN_IF_ERROR(s.gpu->Update(ap, static_cast<float>(s.options.weight_decay), clip));
#endif
  } else {
    s.ForEachTrainable([&](Weight& p, Weight& g, Weight& m, Weight& v, bool decay) {
      cpu::AdamWParams pp = ap;
      pp.weight_decay = decay ? static_cast<float>(s.options.weight_decay) : 0.0f;
      cpu::AdamWStep(p.data.data(), g.data.data(), m.data.data(), v.data.data(), static_cast<int64_t>(p.data.size()),
                     pp, clip);
    });
  }

  s.seconds_in_steps += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  TrainProgress& pr = s.progress;
  pr.step += 1;
  pr.loss = loss;
  pr.learning_rate = lr;
  pr.grad_norm = norm;
  pr.tokens += targets;
  pr.tokens_per_second = s.seconds_in_steps > 0 ? static_cast<double>(pr.tokens) / s.seconds_in_steps : 0.0;
  pr.eta_seconds = s.seconds_in_steps / static_cast<double>(pr.step) * static_cast<double>(pr.total_steps - pr.step);
  return pr;
}

absl::StatusOr<double> Trainer::MeanLoss(std::span<const std::vector<int32_t>> documents) const {
  const Impl& s = *impl_;
  for (size_t d = 0; d < documents.size(); ++d)
    for (int32_t id : documents[d])
      if (id < 0 || id >= s.config.vocab_size)
        return absl::InvalidArgumentError(absl::StrCat("document ", d, " holds token id ", id, ", outside the vocabulary"));
  const auto windows =
      CutWindows(std::vector<std::vector<int32_t>>(documents.begin(), documents.end()), s.options.sequence_length);
  if (windows.empty()) return absl::InvalidArgumentError("no document of two or more tokens to evaluate");
  double sum = 0.0;
  int64_t count = 0;
  for (const auto& w : windows) count += Targets(w);
  if (s.on_gpu()) {
#if defined(GLA_HAVE_CUDA)
    // Batches of about 16K tokens: one pass each, activations for one layer at a time.
    std::vector<std::span<const int32_t>> batch;
    int64_t tokens = 0;
    for (size_t i = 0; i < windows.size(); ++i) {
      batch.emplace_back(windows[i]);
      tokens += Targets(windows[i]);
      if (tokens >= 16384 || i + 1 == windows.size()) {
        ASSIGN_OR_RETURN(const double part, s.gpu->LossSum(batch));
        sum += part;
        batch.clear();
        tokens = 0;
      }
    }
#endif
  } else {
    for (const auto& w : windows) sum += s.model->Run(w, nullptr, 1.0f, 0);
  }
  return sum / static_cast<double>(count);
}

absl::StatusOr<LoraAdapter> Trainer::adapter() const {
  if (!impl_->lora.has_value()) return absl::FailedPreconditionError("a full-parameter run has no adapter");
  LoraAdapter out = *impl_->lora;
#if defined(GLA_HAVE_CUDA)
  if (impl_->on_gpu()) RETURN_IF_ERROR(impl_->gpu->DownloadParams(nullptr, &out));
#endif
  return out;
}

absl::StatusOr<ModelWeights> Trainer::weights() const {
  if (impl_->lora.has_value())
    return absl::FailedPreconditionError("a LoRA run trains an adapter; its base weights did not change");
  ModelWeights out = impl_->weights;
#if defined(GLA_HAVE_CUDA)
  if (impl_->on_gpu()) RETURN_IF_ERROR(impl_->gpu->DownloadParams(&out, nullptr));
#endif
  return out;
}

}  // namespace gla
