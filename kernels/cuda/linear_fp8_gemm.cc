// LinearFp8Gemm (kernels/linear_fp8.h) through cuBLASLt. Column-major views, as LinearBf16 takes
// them: the weights [N, K] row-major are A = K x N with op T, the inputs [M, K] are B = K x M, and
// D = op(A) B is N x M column-major: y [M, N] row-major with row stride y_stride. That is the
// "TN" form FP8 GEMMs require. OUTER_VEC_32F scales: A's vector has one value per row of D (our N:
// the weights' row scales), B's one per column (our M: the inputs' row scales).
#include <algorithm>
#include <limits>

#include "kernels/linear_fp8.h"

namespace gla::cuda {

namespace {

bool FitsInt(int64_t v) { return v >= 0 && v <= std::numeric_limits<int>::max(); }

// The largest power of two up to 256 that divides the address (what the heuristic may assume).
int Alignment(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  int align = 256;
  while (align > 1 && a % align != 0) align /= 2;
  return align;
}

#define GLA_LT_RETURN_IF_ERROR(expr)                                      \
  do {                                                                    \
    const cublasStatus_t gla_lt_status_ = (expr);                         \
    if (gla_lt_status_ != CUBLAS_STATUS_SUCCESS) return gla_lt_status_; \
  } while (0)

}  // namespace

LinearFp8Gemm::~LinearFp8Gemm() {
  for (auto& [key, plan] : plans_) Destroy(plan);
  if (handle_ != nullptr) cublasLtDestroy(handle_);
}

void LinearFp8Gemm::Destroy(Plan& plan) {
  if (plan.op != nullptr) cublasLtMatmulDescDestroy(plan.op);
  if (plan.a != nullptr) cublasLtMatrixLayoutDestroy(plan.a);
  if (plan.b != nullptr) cublasLtMatrixLayoutDestroy(plan.b);
  if (plan.d != nullptr) cublasLtMatrixLayoutDestroy(plan.d);
  plan = Plan();
}

cublasStatus_t LinearFp8Gemm::Init(void* workspace, size_t bytes) {
  if (handle_ != nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  // Outer-vector scales came with cuBLAS 12.9; an older library would take the attribute as unknown.
  if (cublasLtGetVersion() < 120900) return CUBLAS_STATUS_NOT_SUPPORTED;
  workspace_ = workspace;
  workspace_bytes_ = bytes;
  return cublasLtCreate(&handle_);
}

cublasStatus_t LinearFp8Gemm::MakePlan(const Key& key, const void* a_scale, const void* b_scale, Plan* plan) {
  const auto [N, K, M, x_stride, y_stride, y_bf16, align_a, align_b, align_d] = key;
  GLA_LT_RETURN_IF_ERROR(cublasLtMatmulDescCreate(&plan->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  GLA_LT_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  GLA_LT_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
  const int32_t mode = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
  GLA_LT_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &mode, sizeof(mode)));
  GLA_LT_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &mode, sizeof(mode)));
  // The heuristic sees the descriptor as it will run: scale pointers set (Run resets them per call).
  GLA_LT_RETURN_IF_ERROR(
      cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &a_scale, sizeof(a_scale)));
  GLA_LT_RETURN_IF_ERROR(
      cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &b_scale, sizeof(b_scale)));
  const cudaDataType_t out = y_bf16 ? CUDA_R_16BF : CUDA_R_32F;
  GLA_LT_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan->a, CUDA_R_8F_E4M3, static_cast<uint64_t>(K),
                                                    static_cast<uint64_t>(N), K));
  GLA_LT_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan->b, CUDA_R_8F_E4M3, static_cast<uint64_t>(K),
                                                    static_cast<uint64_t>(M), x_stride));
  GLA_LT_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan->d, out, static_cast<uint64_t>(N), static_cast<uint64_t>(M),
                                                    y_stride));
  // The heuristic is told the workspace and the operands' real alignments (C is D).
  cublasLtMatmulPreference_t pref = nullptr;
  GLA_LT_RETURN_IF_ERROR(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = workspace_bytes_;
  const uint32_t aa = static_cast<uint32_t>(align_a), ab = static_cast<uint32_t>(align_b),
                 ad = static_cast<uint32_t>(align_d);
  cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &aa, sizeof(aa));
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ab, sizeof(ab));
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ad, sizeof(ad));
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ad, sizeof(ad));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulAlgoGetHeuristic(handle_, plan->op, plan->a, plan->b, plan->d, plan->d, pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (st != CUBLAS_STATUS_SUCCESS) return st;
  if (found == 0) return CUBLAS_STATUS_NOT_SUPPORTED;
  plan->algo = result.algo;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t LinearFp8Gemm::Prepare(const Fp8Input& x, const Fp8Weight& w, int64_t N, int64_t K, void* y,
                                      bool y_bf16, int64_t y_stride, int64_t M) {
  if (M == 0) return CUBLAS_STATUS_SUCCESS;
  Plan* plan = nullptr;
  return FindPlan(x, w, N, K, y, y_bf16, y_stride, M, &plan);
}

cublasStatus_t LinearFp8Gemm::FindPlan(const Fp8Input& x, const Fp8Weight& w, int64_t N, int64_t K, void* y,
                                       bool y_bf16, int64_t y_stride, int64_t M, Plan** found) {
  if (handle_ == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!FitsInt(M) || !FitsInt(N) || !FitsInt(K) || !FitsInt(x.stride) || !FitsInt(y_stride) || N == 0 || K == 0 ||
      K % 16 != 0 || (N * (y_bf16 ? 2 : 4)) % 16 != 0 || x.stride % 16 != 0 || x.stride < K || y_stride < N || (y_stride * (y_bf16 ? 2 : 4)) % 16 != 0 ||
      x.q == nullptr || x.scale == nullptr ||
      w.q == nullptr || w.scale == nullptr || y == nullptr)
    return CUBLAS_STATUS_INVALID_VALUE;
  const int align_a = Alignment(w.q), align_b = Alignment(x.q), align_d = Alignment(y);
  if (align_a < 16 || align_b < 16) return CUBLAS_STATUS_INVALID_VALUE;
  const Key key{N, K, M, x.stride, y_stride, y_bf16, align_a, align_b, align_d};
  auto it = plans_.find(key);
  if (it == plans_.end()) {
    Plan plan;
    const cublasStatus_t made = MakePlan(key, w.scale, x.scale, &plan);
    if (made != CUBLAS_STATUS_SUCCESS) {
      Destroy(plan);
      return made;
    }
    it = plans_.emplace(key, plan).first;
  }
  *found = &it->second;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t LinearFp8Gemm::Run(const Fp8Input& x, const Fp8Weight& w, int64_t N, int64_t K, void* y, bool y_bf16,
                                  int64_t y_stride, int64_t M, float beta, cudaStream_t stream) {
  if (M == 0) return CUBLAS_STATUS_SUCCESS;
  Plan* found = nullptr;
  GLA_LT_RETURN_IF_ERROR(FindPlan(x, w, N, K, y, y_bf16, y_stride, M, &found));
  Plan& plan = *found;
  const void* a_scale = w.scale;
  const void* b_scale = x.scale;
  // The scale vectors change with every projection and step: attributes of the kept descriptor.
  GLA_LT_RETURN_IF_ERROR(
      cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &a_scale, sizeof(a_scale)));
  GLA_LT_RETURN_IF_ERROR(
      cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &b_scale, sizeof(b_scale)));
  const float alpha = 1.0f;
  return cublasLtMatmul(handle_, plan.op, &alpha, w.q, plan.a, x.q, plan.b, &beta, y, plan.d, y, plan.d, &plan.algo,
                        workspace_, workspace_bytes_, stream);
}

}  // namespace gla::cuda
