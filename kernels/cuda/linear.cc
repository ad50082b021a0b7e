// Dense projections on the GPU through cuBLAS. PyTorch's row-major [out, in] weights are, read
// column-major, W^T: so y^T[N, M] = op_T(W)[N, K] x^T[K, M] is one GemmEx call with no copies.
#include "kernels/linear.h"

#include <limits>

namespace gla::cuda {

namespace {
bool FitsInt(int64_t v) { return v >= 0 && v <= std::numeric_limits<int>::max(); }
}  // namespace

cublasStatus_t LinearBf16(cublasHandle_t handle, const __nv_bfloat16* x, int64_t x_stride, const __nv_bfloat16* w,
                          int64_t N, int64_t K, void* y, bool y_bf16, int64_t y_stride, int64_t M, float beta) {
  if (M == 0) return CUBLAS_STATUS_SUCCESS;
  if (!FitsInt(M) || !FitsInt(N) || !FitsInt(K) || !FitsInt(x_stride) || !FitsInt(y_stride))
    return CUBLAS_STATUS_INVALID_VALUE;
  const float alpha = 1.0f;
  return cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(N), static_cast<int>(M), static_cast<int>(K),
                      &alpha, w, CUDA_R_16BF, static_cast<int>(K), x, CUDA_R_16BF, static_cast<int>(x_stride), &beta, y,
                      y_bf16 ? CUDA_R_16BF : CUDA_R_32F, static_cast<int>(y_stride), CUBLAS_COMPUTE_32F,
                      CUBLAS_GEMM_DEFAULT);
}

}  // namespace gla::cuda
