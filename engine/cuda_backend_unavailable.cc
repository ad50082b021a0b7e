// A build without CUDA (no nvcc at configure time, or -DGLA_ENABLE_CUDA=OFF): the CUDA backend
// is named in errors, never silently replaced.
#include "absl/strings/str_cat.h"
#include "engine/backend.h"

namespace gla {

bool CudaBackendAvailable(std::string* why) {
  *why = "this build has no CUDA (nvcc was not found at configure time, or -DGLA_ENABLE_CUDA=OFF)";
  return false;
}

absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(const std::string&, const CudaBackendOptions&) {
  std::string why;
  CudaBackendAvailable(&why);
  return absl::UnimplementedError(absl::StrCat("--backend cuda: ", why));
}

}  // namespace gla
