#include "engine/finetune/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <optional>
#include <random>

#include "absl/strings/str_cat.h"
#include "kernels/optimizer.h"
#include "models/status_macros.h"

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
  TrainDevice device;
  std::unique_ptr<TrainBackend> backend;  // the model, its gradients and optimizer state, on its device

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

  std::unique_ptr<Trainer> t(new Trainer());
  Impl& s = *t->impl_;
  s.options = options;
  s.config = base.config;
  s.device = device;
  s.windows = CutWindows(documents, options.sequence_length);
  if (s.windows.empty())
    return absl::InvalidArgumentError("the training data holds no document of two or more tokens");
  s.order.resize(s.windows.size());
  std::iota(s.order.begin(), s.order.end(), size_t{0});
  s.cursor = s.order.size();  // the first NextBatch shuffles
  s.rng.seed(options.seed);
  TrainParams params{base.weights, std::nullopt};
  if (options.method == TrainOptions::Method::kLora) {
    ASSIGN_OR_RETURN(LoraAdapter adapter, NewLoraAdapter(base.config, options.lora, options.seed));
    params.lora = std::move(adapter);
  }
  if (device.cuda()) {
    ASSIGN_OR_RETURN(s.backend, MakeCudaTrainBackend(device.cuda_device, s.config, std::move(params),
                                                     int64_t{options.batch_sequences} * options.sequence_length,
                                                     absl::StrCat("a step of batch_sequences ", options.batch_sequences,
                                                                  " x sequence_length ", options.sequence_length)));
  } else {
    ASSIGN_OR_RETURN(s.backend, MakeCpuTrainBackend(s.config, std::move(params), options.sequence_length));
  }
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
  if (yield && !yield()) return absl::CancelledError("the training step was stopped");
  const std::vector<size_t> batch = s.NextBatch();
  int64_t targets = 0;
  for (size_t w : batch) targets += Targets(s.windows[w]);

  std::vector<std::span<const int32_t>> windows;
  for (size_t w : batch) windows.emplace_back(s.windows[w]);
  const uint64_t dropout_seed = s.options.seed ^ (static_cast<uint64_t>(s.progress.step) << 20);
  ASSIGN_OR_RETURN(const TrainBackend::StepResult r,
                   s.backend->ForwardBackward(windows, 1.0f / static_cast<float>(targets), dropout_seed, yield));
  const double loss = r.loss_sum / static_cast<double>(targets), norm = std::sqrt(r.grad_sumsq);
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
  RETURN_IF_ERROR(s.backend->Update(ap, static_cast<float>(s.options.weight_decay), clip));

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
  int64_t count = 0;
  for (const auto& w : windows) count += Targets(w);
  ASSIGN_OR_RETURN(const double sum, s.backend->LossSum(windows));
  return sum / static_cast<double>(count);
}

absl::StatusOr<LoraAdapter> Trainer::adapter() const {
  if (impl_->options.method != TrainOptions::Method::kLora)
    return absl::FailedPreconditionError("a full-parameter run has no adapter");
  return impl_->backend->TrainedAdapter();
}

absl::StatusOr<ModelWeights> Trainer::weights() const {
  if (impl_->options.method == TrainOptions::Method::kLora)
    return absl::FailedPreconditionError("a LoRA run trains an adapter; its base weights did not change");
  return impl_->backend->TrainedWeights();
}

}  // namespace gla
