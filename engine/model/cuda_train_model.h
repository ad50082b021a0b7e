// The GPU twin of TrainModel (train_model.h): forward over a batch of training windows packed into
// one set of rows (cu_seqlens, as the serving prefill packs prompts), every activation the backward
// reads kept on the device, the lm_head cross-entropy in blocks of rows, the backward through every
// op into device gradients, and AdamW on the device. The host sees two numbers per step (the loss
// and the squared gradient norm, for the clip factor).
//
// Precision: fp32 master weights, activations and gradients; projections on TF32 tensor cores; the
// GLA operator on its bf16 tensor-core chunkwise kernels with fp32 states and gradients. Against the
// fp32 CPU model: losses agree to ~1e-3, gradients to ~1e-2 (tests/cuda/cuda_train_test.cc).
//
// Memory: the weights (4 bytes each) plus, for what trains, a gradient and two AdamW moments; the
// activations of a step (~70 floats x hidden per token per layer) come from a stream-ordered pool
// owned by the model, kept between steps and freed with it. A full GPU is RESOURCE_EXHAUSTED, and
// nothing is updated by a step that fails.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/optimizer.h"
#include "models/config.h"
#include "models/lora_adapter.h"
#include "models/weights.h"

namespace gla {

class CudaTrainPass;

// OK when the GPU kernels take this model's shapes (head_k_dim in {64, 128, 256}, head_v_dim a
// multiple of 64: the chunkwise forward and backward kernels' tiles); otherwise why not.
absl::Status CudaTrainSupported(const GlaConfig& config);

class CudaTrainModel {
 public:
  // Uploads `weights` and (LoRA) `lora` to `device` and allocates gradients and moments for what
  // trains: the adapter when lora is not null (base frozen), every weight otherwise. Both host
  // objects must outlive the model: it looks tensors up by their address (their contents are not
  // read again; DownloadParams writes the trained values back into copies of them).
  static absl::StatusOr<std::unique_ptr<CudaTrainModel>> Create(int device, const GlaConfig& config,
                                                                const ModelWeights& weights, const LoraAdapter* lora);
  ~CudaTrainModel();
  CudaTrainModel(const CudaTrainModel&) = delete;
  CudaTrainModel& operator=(const CudaTrainModel&) = delete;

  struct StepResult {
    double loss_sum = 0.0;    // sum of the token losses of every window
    double grad_sumsq = 0.0;  // sum of squares of every gradient (after this batch)
  };
  // Zeroes the gradients, then runs forward and backward of grad_scale * (sum of token losses) over
  // every window (each predicts tokens[1..n) from tokens[0..n-1), n >= 2, ids in the vocabulary).
  // LoRA dropout masks derive from dropout_seed.
  // `yield` (when set) is called between layers, forward and backward, and between blocks of the
  // lm_head's rows, after the stream has finished the work queued so far: a serving step waiting
  // there waits for one layer of this batch (whose size CheckStepFits bounds), not the step. When
  // it returns false the step stops there: CANCELLED, gradients partial (the next step zeroes
  // them), nothing updated.
  absl::StatusOr<StepResult> ForwardBackward(std::span<const std::span<const int32_t>> windows, float grad_scale,
                                             uint64_t dropout_seed, const std::function<bool()>& yield = {});
  // The sum of token losses over the windows, forward only (no dropout, gradients untouched).
  absl::StatusOr<double> LossSum(std::span<const std::span<const int32_t>> windows);
  // One AdamW step of every trainable tensor; gradients are multiplied by grad_scale (the clip)
  // first; weight_decay applies to matrices only (cpu AdamW's convention, ForEachParam's `decay`).
  absl::Status Update(const cpu::AdamWParams& params, float weight_decay, float grad_scale);

  // Bytes of GPU memory a step over `tokens` packed tokens takes beyond the weights (activations of
  // every layer, gradients of the residual stream, the backward's scratch, the lm_head block), with
  // a 10% margin. And whether such a step fits in what the device has free now (RESOURCE_EXHAUSTED
  // naming the sizes, `what` being how the caller names the step, when not).
  static int64_t StepBytes(const GlaConfig& config, int64_t tokens, const LoraAdapter* lora);
  absl::Status CheckStepFits(int64_t tokens, const std::string& what) const;
  // The most GPU memory the steps so far held at once beyond the weights (tests: StepBytes bounds it).
  int64_t StepBytesHighWater() const;

  // Copies the device values into host trees shaped like the ones given to Create (weights is
  // written for full training, lora for LoRA; the other may be null). Gradients: for tests.
  absl::Status DownloadParams(ModelWeights* weights, LoraAdapter* lora) const;
  absl::Status DownloadGrads(ModelWeights* weights, LoraAdapter* lora) const;

 private:
  friend class CudaTrainPass;  // one forward/backward over a batch (cuda_train_model.cc)
  CudaTrainModel();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace gla
