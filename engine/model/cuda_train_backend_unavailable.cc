// Builds without CUDA link this instead of cuda_train_backend.cc: every request for GPU training
// is FAILED_PRECONDITION, and the trainer needs no #if.
#include "engine/model/train_backend.h"

namespace gla {

namespace {
absl::Status NoCuda() { return absl::FailedPreconditionError("this build has no CUDA: fine-tuning runs on the CPU"); }
}  // namespace

absl::StatusOr<std::unique_ptr<TrainBackend>> MakeCudaTrainBackend(int, const GlaConfig&, TrainParams, int64_t,
                                                                   const std::string&) {
  return NoCuda();
}

absl::Status CudaTrainingAvailable(const GlaConfig&) { return NoCuda(); }

}  // namespace gla
