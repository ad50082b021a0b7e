// TrainBackend on a GPU: CudaTrainModel (model/cuda_train_model.h), the whole batch packed into
// one pass, AdamW on the device.
#include "absl/strings/str_cat.h"
#include "engine/model/cuda_train_model.h"
#include "engine/model/train_backend.h"
#include "models/status_macros.h"

namespace gla {

namespace {

class CudaTrainBackend final : public TrainBackend {
 public:
  explicit CudaTrainBackend(TrainParams params) : params_(std::move(params)) {}

  // The device copies are what trains; params_ keeps the initial values and the tree shapes the
  // results are downloaded into (CudaTrainModel looks tensors up by their address: params_ never moves).
  absl::Status Init(int device, const GlaConfig& config, int64_t step_tokens, const std::string& step_name) {
    ASSIGN_OR_RETURN(gpu_, CudaTrainModel::Create(device, config, params_.weights,
                                                  params_.lora.has_value() ? &*params_.lora : nullptr));
    // Refused now rather than failing at its first step: the largest step the options allow.
    return gpu_->CheckStepFits(step_tokens, step_name);
  }

  bool cuda() const override { return true; }

  absl::StatusOr<StepResult> ForwardBackward(std::span<const std::span<const int32_t>> windows, float grad_scale,
                                             uint64_t dropout_seed, const std::function<bool()>& yield) override {
    bool stopped = false;
    std::function<bool()> hook;
    if (yield) hook = [&] { return !(stopped = stopped || !yield()); };
    auto r = gpu_->ForwardBackward(windows, grad_scale, dropout_seed, hook);
    if (stopped) return absl::CancelledError("the training step was stopped");
    if (!r.ok()) return r.status();
    return StepResult{r->loss_sum, r->grad_sumsq};
  }

  absl::StatusOr<double> LossSum(std::span<const std::vector<int32_t>> windows) override {
    // Batches of about 16K tokens: one pass each, activations for one layer at a time.
    double sum = 0.0;
    std::vector<std::span<const int32_t>> batch;
    int64_t tokens = 0;
    for (size_t i = 0; i < windows.size(); ++i) {
      batch.emplace_back(windows[i]);
      tokens += static_cast<int64_t>(windows[i].size()) - 1;
      if (tokens >= 16384 || i + 1 == windows.size()) {
        ASSIGN_OR_RETURN(const double part, gpu_->LossSum(batch));
        sum += part;
        batch.clear();
        tokens = 0;
      }
    }
    return sum;
  }

  absl::Status Update(const cpu::AdamWParams& params, float weight_decay, float clip) override {
    return gpu_->Update(params, weight_decay, clip);
  }

  absl::StatusOr<LoraAdapter> TrainedAdapter() const override {
    if (!params_.lora.has_value()) return absl::FailedPreconditionError("a full-parameter run has no adapter");
    LoraAdapter out = *params_.lora;
    RETURN_IF_ERROR(gpu_->DownloadParams(nullptr, &out));
    return out;
  }
  absl::StatusOr<ModelWeights> TrainedWeights() const override {
    ModelWeights out = params_.weights;
    if (!params_.lora.has_value()) RETURN_IF_ERROR(gpu_->DownloadParams(&out, nullptr));
    return out;
  }

 private:
  TrainParams params_;
  std::unique_ptr<CudaTrainModel> gpu_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<TrainBackend>> MakeCudaTrainBackend(int device, const GlaConfig& config,
                                                                   TrainParams params, int64_t step_tokens,
                                                                   const std::string& step_name) {
  auto backend = std::make_unique<CudaTrainBackend>(std::move(params));
  RETURN_IF_ERROR(backend->Init(device, config, step_tokens, step_name));
  return backend;
}

absl::Status CudaTrainingAvailable(const GlaConfig& config) { return CudaTrainSupported(config); }

}  // namespace gla
