// Fine-tuning: LoRA (base weights frozen) or full-parameter training of a GLA model, on the CPU or a
// GPU (a TrainBackend, engine/model/train_backend.h),
// AdamW with decoupled weight decay, global-norm gradient clipping, warmup + cosine schedule.
// One Trainer is one job's model, optimizer state and data; the job runner (engine/finetune/
// jobs.h) calls Step() until done() and saves the result.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/train_backend.h"
#include "models/checkpoint.h"
#include "models/lora_adapter.h"

namespace gla {

struct TrainOptions {
  enum class Method { kLora, kFull } method = Method::kLora;
  LoraConfig lora;             // kLora only
  int64_t max_steps = 100;     // optimizer steps
  int batch_sequences = 4;     // training windows per step
  int sequence_length = 256;   // tokens per window (the data is cut into windows of this length + 1)
  double learning_rate = 1e-4; // peak
  double min_lr_ratio = 0.1;   // cosine decays to learning_rate * min_lr_ratio
  int64_t warmup_steps = 10;   // linear warmup from 0
  double weight_decay = 0.0;
  double beta1 = 0.9, beta2 = 0.999, adam_eps = 1e-8;
  double max_grad_norm = 1.0;  // 0 = no clipping
  uint64_t seed = 0;           // adapter init, window order, dropout
};

// Where a job trains: the CPU, or a CUDA device (the training backends: engine/model/train_backend.h;
// CudaTrainingAvailable there says whether this build can train a model on a GPU).
struct TrainDevice {
  int cuda_device = -1;  // < 0: the CPU
  bool cuda() const { return cuda_device >= 0; }
};

// Tokens one optimizer step may take (batch_sequences x sequence_length): 4096 x 65536 was
// accepted before and could never finish.
inline constexpr int64_t kMaxStepTokens = int64_t{1} << 20;

// INVALID_ARGUMENT naming the field when an option is out of range for this model.
absl::Status ValidateTrainOptions(const TrainOptions& options, const GlaConfig& config);

// The learning rate at 0-based step `step` (warmup, then cosine to min_lr_ratio * peak).
double LearningRateAt(const TrainOptions& options, int64_t step);

struct TrainProgress {
  int64_t step = 0;          // optimizer steps done
  int64_t total_steps = 0;
  double loss = 0.0;         // mean token cross-entropy of the last step's batch
  double learning_rate = 0.0;
  double grad_norm = 0.0;    // before clipping
  int64_t tokens = 0;        // training tokens seen so far
  double tokens_per_second = 0.0;
  double eta_seconds = 0.0;
};

class Trainer {
 public:
  // `base` is the model to start from, with all its weights (a fresh LoadCheckpoint: a CpuModel's
  // checkpoint has handed its projections to fused copies). The weights are copied; for kLora
  // they stay frozen.
  // `documents` are token sequences (each at least 2 tokens long; shorter ones are dropped);
  // INVALID_ARGUMENT when the options are bad or no training window can be cut from the data.
  // On a CUDA device the weights (and the optimizer state) move to the GPU: FAILED_PRECONDITION
  // when it cannot train this model (CudaTrainingAvailable), RESOURCE_EXHAUSTED when they do not fit.
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const Checkpoint& base, const TrainOptions& options,
                                                         std::vector<std::vector<int32_t>> documents,
                                                         TrainDevice device = {});
  ~Trainer();

  // One optimizer step over batch_sequences windows. Errors leave the model as it was.
  // `yield` (optional) is called often inside the step: on the CPU between slices of each layer's
  // work (TrainModel::Run: ~2^28 flops each, whatever the window's length), on a GPU between the
  // layers of the packed batch (CudaTrainModel::ForwardBackward; its size is bounded by device
  // memory at Create). It may block while serving runs; false stops the step (CANCELLED, nothing
  // applied).
  absl::StatusOr<TrainProgress> Step(const std::function<bool()>& yield = {});
  bool done() const;
  const TrainProgress& progress() const;
  const TrainDevice& device() const;

  // Mean next-token cross-entropy of the current model (adapter applied) over the documents;
  // perplexity = exp of it.
  absl::StatusOr<double> MeanLoss(std::span<const std::vector<int32_t>> documents) const;

  // The trained adapter (kLora) / the trained weights (kFull; FAILED_PRECONDITION otherwise).
  absl::StatusOr<LoraAdapter> adapter() const;
  absl::StatusOr<ModelWeights> weights() const;

 private:
  Trainer();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace gla
