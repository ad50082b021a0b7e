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

cublasStatus_t LinearF32(cublasHandle_t handle, const float* x, int64_t x_stride, const float* w, int64_t N, int64_t K,
                         float* y, int64_t y_stride, int64_t M, float alpha, float beta) {
  if (M == 0 || N == 0) return CUBLAS_STATUS_SUCCESS;
  if (!FitsInt(M) || !FitsInt(N) || !FitsInt(K) || !FitsInt(x_stride) || !FitsInt(y_stride))
    return CUBLAS_STATUS_INVALID_VALUE;
  return cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(N), static_cast<int>(M), static_cast<int>(K),
                      &alpha, w, CUDA_R_32F, static_cast<int>(K), x, CUDA_R_32F, static_cast<int>(x_stride), &beta, y,
                      CUDA_R_32F, static_cast<int>(y_stride), CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT);
}

// Column-major views: dx^T[K, M] = W^T[K, N] dy^T[N, M];  dW^T[K, N] += x^T[K, M] dy[M, N].
cublasStatus_t LinearBackwardF32(cublasHandle_t handle, const float* x, int64_t x_stride, const float* w, int64_t N,
                                 int64_t K, const float* dy, int64_t dy_stride, float* dx, int64_t dx_stride,
                                 float dx_beta, float* dw, int64_t M, float alpha) {
  if (M == 0) return CUBLAS_STATUS_SUCCESS;
  if (!FitsInt(M) || !FitsInt(N) || !FitsInt(K) || !FitsInt(x_stride) || !FitsInt(dy_stride) || !FitsInt(dx_stride))
    return CUBLAS_STATUS_INVALID_VALUE;
  const int m = static_cast<int>(M), n = static_cast<int>(N), k = static_cast<int>(K);
  if (dx != nullptr) {
    const cublasStatus_t s = cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, k, m, n, &alpha, w, CUDA_R_32F, k, dy,
                                          CUDA_R_32F, static_cast<int>(dy_stride), &dx_beta, dx, CUDA_R_32F,
                                          static_cast<int>(dx_stride), CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
  }
  if (dw != nullptr) {
    const float one = 1.0f;
    return cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_T, k, n, m, &alpha, x, CUDA_R_32F, static_cast<int>(x_stride), dy,
                        CUDA_R_32F, static_cast<int>(dy_stride), &one, dw, CUDA_R_32F, k, CUBLAS_COMPUTE_32F_FAST_TF32,
                        CUBLAS_GEMM_DEFAULT);
  }
  return CUBLAS_STATUS_SUCCESS;
}

}  // namespace gla::cuda
