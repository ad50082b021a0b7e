// The training twin of engine/backend.h: one job's trainable model on one device, the CPU
// (model/train_model.h) or a GPU (model/cuda_train_model.h). The trainer (engine/finetune/
// trainer.h) holds one and never asks which device it is: the schedule, clipping, the learning
// rate and the data are the trainer's; forward, backward, the optimizer's update and the trained
// values are the backend's. Builds without CUDA link cuda_train_backend_unavailable.cc instead of
// the CUDA one, as serving links cuda_backend_unavailable.cc.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/optimizer.h"
#include "models/config.h"
#include "models/lora_adapter.h"
#include "models/weights.h"

namespace gla {

// What a run trains from: the base weights (frozen when there is an adapter) and the adapter
// (LoRA runs only).
struct TrainParams {
  ModelWeights weights;
  std::optional<LoraAdapter> lora;
};

class TrainBackend {
 public:
  struct StepResult {
    double loss_sum = 0.0;    // sum of the token losses of every window
    double grad_sumsq = 0.0;  // sum of squares of every gradient (after this batch)
  };
  virtual ~TrainBackend() = default;

  virtual bool cuda() const = 0;
  // Zeroes the gradients, then runs forward and backward of grad_scale * (sum of token losses)
  // over every window (each predicts tokens[1..n) from tokens[0..n-1); n >= 2, ids checked by the
  // caller). LoRA dropout masks derive from dropout_seed. `yield` (may be empty) is called at the
  // backend's yield points (CPU: between slices of each layer's work; GPU: between layers), where
  // it may block while serving runs; when it returns false the pass stops there: CANCELLED, the
  // gradients partial (the next call zeroes them), nothing updated.
  virtual absl::StatusOr<StepResult> ForwardBackward(std::span<const std::span<const int32_t>> windows,
                                                     float grad_scale, uint64_t dropout_seed,
                                                     const std::function<bool()>& yield) = 0;
  // The sum of token losses over the windows, forward only (no dropout, gradients untouched).
  virtual absl::StatusOr<double> LossSum(std::span<const std::vector<int32_t>> windows) = 0;
  // One AdamW step of every trainable tensor; gradients are multiplied by `clip` first;
  // weight_decay applies to matrices only (ForEachParam's `decay`).
  virtual absl::Status Update(const cpu::AdamWParams& params, float weight_decay, float clip) = 0;
  // The trained values: the adapter (LoRA runs) or every weight (full runs).
  virtual absl::StatusOr<LoraAdapter> TrainedAdapter() const = 0;
  virtual absl::StatusOr<ModelWeights> TrainedWeights() const = 0;
};

// A run on the CPU. RESOURCE_EXHAUSTED when one window of `window_tokens` would need more than
// half of the host's available memory for its activations.
absl::StatusOr<std::unique_ptr<TrainBackend>> MakeCpuTrainBackend(const GlaConfig& config, TrainParams params,
                                                                  int64_t window_tokens);

// A run on CUDA device `device`: the weights and optimizer state move there. FAILED_PRECONDITION
// when it cannot train this model here (CudaTrainingAvailable), RESOURCE_EXHAUSTED when the
// weights or a step of `step_tokens` (named `step_name` in the error) do not fit.
absl::StatusOr<std::unique_ptr<TrainBackend>> MakeCudaTrainBackend(int device, const GlaConfig& config,
                                                                   TrainParams params, int64_t step_tokens,
                                                                   const std::string& step_name);

// OK when this build can train `config` on a GPU; otherwise why not (a build without CUDA, or head
// sizes the GPU kernels do not take).
absl::Status CudaTrainingAvailable(const GlaConfig& config);

}  // namespace gla
