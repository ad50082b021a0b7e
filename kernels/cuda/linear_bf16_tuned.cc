// TunedBf16Gemm (kernels/linear_bf16_tuned.h): cuBLASLt algorithms timed on the caller's operands.
// Column-major views as LinearBf16 takes them: the weights [N, K] row-major are A = K x N with op T,
// the inputs [M, K] are B = K x M, and D = op(A) B is N x M column-major, i.e. y [M, N] row-major.
#include "kernels/linear_bf16_tuned.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <string>

#include "kernels/linear.h"

namespace gla::cuda {

namespace {

bool FitsInt(int64_t v) { return v >= 0 && v <= std::numeric_limits<int>::max(); }
bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

#define GLA_TUNED_RETURN_IF_ERROR(expr)                                  \
  do {                                                                   \
    const cublasStatus_t gla_tuned_status_ = (expr);                     \
    if (gla_tuned_status_ != CUBLAS_STATUS_SUCCESS) return gla_tuned_status_; \
  } while (0)

// Whether the operands are what the cuBLASLt path assumes (and told the heuristic): 16-byte
// aligned pointers, rows a multiple of 16 bytes long and apart.
bool LtOperandsFit(const void* x, int64_t x_stride, const void* w, int64_t N, int64_t K, const void* y, bool y_bf16,
                   int64_t y_stride) {
  const int64_t y_bytes = y_bf16 ? 2 : 4;
  return Aligned16(x) && Aligned16(w) && Aligned16(y) && K % 8 == 0 && N % 8 == 0 && x_stride % 8 == 0 &&
         (y_stride * y_bytes) % 16 == 0 && x_stride >= K && y_stride >= N;
}

}  // namespace

TunedBf16Gemm::~TunedBf16Gemm() {
  for (auto& [key, plan] : plans_) Destroy(plan);
  if (handle_ != nullptr) cublasLtDestroy(handle_);
}

void TunedBf16Gemm::Destroy(Plan& plan) {
  if (plan.op != nullptr) cublasLtMatmulDescDestroy(plan.op);
  if (plan.a != nullptr) cublasLtMatrixLayoutDestroy(plan.a);
  if (plan.b != nullptr) cublasLtMatrixLayoutDestroy(plan.b);
  if (plan.d != nullptr) cublasLtMatrixLayoutDestroy(plan.d);
  plan = Plan();
}

cublasStatus_t TunedBf16Gemm::Init(void* workspace, size_t bytes) {
  if (handle_ != nullptr || (workspace == nullptr && bytes > 0) || !Aligned16(workspace))
    return CUBLAS_STATUS_INVALID_VALUE;
  workspace_ = workspace;
  workspace_bytes_ = bytes;
  return cublasLtCreate(&handle_);
}

cublasStatus_t TunedBf16Gemm::MakeDescriptors(const Bf16GemmShape& s, int64_t rows, Plan* plan) const {
  GLA_TUNED_RETURN_IF_ERROR(cublasLtMatmulDescCreate(&plan->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  GLA_TUNED_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  GLA_TUNED_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
  GLA_TUNED_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan->a, CUDA_R_16BF, static_cast<uint64_t>(s.K),
                                                       static_cast<uint64_t>(s.N), s.K));
  GLA_TUNED_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan->b, CUDA_R_16BF, static_cast<uint64_t>(s.K),
                                                       static_cast<uint64_t>(rows), s.x_stride));
  GLA_TUNED_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan->d, s.y_bf16 ? CUDA_R_16BF : CUDA_R_32F,
                                                       static_cast<uint64_t>(s.N), static_cast<uint64_t>(rows),
                                                       s.y_stride));
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t TunedBf16Gemm::RunPlan(const Plan& plan, const void* x, const void* w, void* y, float beta,
                                      cudaStream_t stream) const {
  const float alpha = 1.0f;
  return cublasLtMatmul(handle_, plan.op, &alpha, w, plan.a, x, plan.b, &beta, y, plan.d, y, plan.d, &plan.algo,
                        workspace_, workspace_bytes_, stream);
}

std::string TunedBf16Gemm::Describe(const cublasLtMatmulAlgo_t& algo) {
  // cuBLASLt checks each attribute's size: 32 bits, the cluster shape's 16 (read into the low bytes
  // of a zeroed 32-bit word).
  const struct {
    const char* name;
    cublasLtMatmulAlgoConfigAttributes_t attr;
    size_t bytes;
  } fields[] = {{"algo", CUBLASLT_ALGO_CONFIG_ID, 4},
                {"tile", CUBLASLT_ALGO_CONFIG_TILE_ID, 4},
                {"stages", CUBLASLT_ALGO_CONFIG_STAGES_ID, 4},
                {"splitK", CUBLASLT_ALGO_CONFIG_SPLITK_NUM, 4},
                {"reduction", CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, 4},
                {"swizzle", CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING, 4},
                {"cluster", CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, 2}};
  std::string out;
  for (const auto& f : fields) {
    uint32_t v = 0;
    size_t written = 0;
    if (cublasLtMatmulAlgoConfigGetAttribute(&algo, f.attr, &v, f.bytes, &written) != CUBLAS_STATUS_SUCCESS) continue;
    if (!out.empty()) out += ' ';
    out += std::string(f.name) + ' ' + std::to_string(v);
  }
  return out;
}

cublasStatus_t TunedBf16Gemm::Tune(cublasHandle_t fallback, const Bf16GemmShape& s, int64_t rows,
                                   const __nv_bfloat16* x, const __nv_bfloat16* const* weights, int count, void* y,
                                   cudaStream_t stream, std::vector<GemmCandidateTime>* times, bool time_default) {
  if (handle_ == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (rows < 1 || !FitsInt(rows) || s.N < 1 || s.K < 1 || !FitsInt(s.N) || !FitsInt(s.K) || !FitsInt(s.x_stride) ||
      !FitsInt(s.y_stride) || count < 1 || weights == nullptr || x == nullptr || y == nullptr || fallback == nullptr ||
      stream == nullptr)
    return CUBLAS_STATUS_INVALID_VALUE;
  for (int i = 0; i < count; ++i)
    if (weights[i] == nullptr || !LtOperandsFit(x, s.x_stride, weights[i], s.N, s.K, y, s.y_bf16, s.y_stride))
      return CUBLAS_STATUS_INVALID_VALUE;
  // The default's pass must land on the stream being captured and timed.
  cudaStream_t fallback_stream = nullptr;
  if (cublasGetStream(fallback, &fallback_stream) != CUBLAS_STATUS_SUCCESS || fallback_stream != stream)
    return CUBLAS_STATUS_INVALID_VALUE;

  Plan plan;
  cublasStatus_t st = MakeDescriptors(s, rows, &plan);
  cublasLtMatmulPreference_t pref = nullptr;
  if (st == CUBLAS_STATUS_SUCCESS) st = cublasLtMatmulPreferenceCreate(&pref);
  const uint64_t ws = workspace_bytes_;
  const uint32_t align = 16;
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
  for (const auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                          CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
    if (st == CUBLAS_STATUS_SUCCESS) st = cublasLtMatmulPreferenceSetAttribute(pref, attr, &align, sizeof(align));
  cublasLtMatmulHeuristicResult_t results[kMaxCandidates] = {};
  int found = 0;
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulAlgoGetHeuristic(handle_, plan.op, plan.a, plan.b, plan.d, plan.d, pref, kMaxCandidates,
                                        results, &found);
  if (pref != nullptr) cublasLtMatmulPreferenceDestroy(pref);
  // No algorithm at all is not an error: the default stays (it is timed alone below).
  if (st == CUBLAS_STATUS_NOT_SUPPORTED) {
    st = CUBLAS_STATUS_SUCCESS;
    found = 0;
  }
  if (st != CUBLAS_STATUS_SUCCESS) {
    Destroy(plan);
    return st;
  }

  cudaEvent_t start = nullptr, stop = nullptr;
  if (cudaEventCreate(&start) != cudaSuccess || cudaEventCreate(&stop) != cudaSuccess) {
    if (start != nullptr) cudaEventDestroy(start);
    Destroy(plan);
    return CUBLAS_STATUS_ALLOC_FAILED;
  }
  const float beta = s.accumulate ? 1.0f : 0.0f;
  // Candidate -1 is cublasGemmEx's default; i >= 0 the heuristic's i-th algorithm.
  auto run_pass = [&](int candidate) -> cublasStatus_t {
    for (int i = 0; i < count; ++i) {
      cublasStatus_t r;
      if (candidate < 0) {
        r = LinearBf16(fallback, x, s.x_stride, weights[i], s.N, s.K, y, s.y_bf16, s.y_stride, rows, beta);
      } else {
        plan.algo = results[candidate].algo;
        r = RunPlan(plan, x, weights[i], y, beta, stream);
      }
      if (r != CUBLAS_STATUS_SUCCESS) return r;
    }
    return CUBLAS_STATUS_SUCCESS;
  };
  // A candidate's time: its pass captured in a CUDA graph (as the engine's decode steps run it,
  // and without the host's per-call work, which for a 5 us GEMM was most of an eagerly timed call:
  // H100, 2026-12-06, docs/performance.md), the median of five launches after a first.
  auto time_pass = [&](int c, double* us) -> bool {
    if (run_pass(c) != CUBLAS_STATUS_SUCCESS || cudaStreamSynchronize(stream) != cudaSuccess) return false;
    cudaGraph_t graph = nullptr;
    if (cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal) != cudaSuccess) return false;
    const cublasStatus_t captured = run_pass(c);
    const cudaError_t ended = cudaStreamEndCapture(stream, &graph);
    if (captured != CUBLAS_STATUS_SUCCESS || ended != cudaSuccess) {
      if (graph != nullptr) cudaGraphDestroy(graph);
      return false;
    }
    cudaGraphExec_t exec = nullptr;
    const cudaError_t made = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    if (made != cudaSuccess) return false;
    std::vector<float> ms;
    bool ok = cudaGraphLaunch(exec, stream) == cudaSuccess;
    for (int r = 0; ok && r < 5; ++r) {
      float t = 0;
      ok = cudaEventRecord(start, stream) == cudaSuccess && cudaGraphLaunch(exec, stream) == cudaSuccess &&
           cudaEventRecord(stop, stream) == cudaSuccess && cudaEventSynchronize(stop) == cudaSuccess &&
           cudaEventElapsedTime(&t, start, stop) == cudaSuccess;
      ms.push_back(t);
    }
    cudaGraphExecDestroy(exec);
    if (!ok) return false;
    std::sort(ms.begin(), ms.end());
    *us = 1e3 * ms[ms.size() / 2] / count;
    return true;
  };
  double best_us = std::numeric_limits<double>::infinity();
  int best = -2;  // -2: none timed
  size_t best_entry = 0;
  std::vector<GemmCandidateTime> measured;
  for (int c = time_default ? -1 : 0; c < found; ++c) {
    if (c >= 0 && results[c].state != CUBLAS_STATUS_SUCCESS) continue;
    if (c >= 0 && results[c].workspaceSize > workspace_bytes_) continue;
    // A candidate that fails to run or to be captured is left out (the heuristic may list one this
    // device refuses).
    double us = 0;
    if (!time_pass(c, &us)) continue;
    measured.push_back({c < 0 ? std::string("cublasGemmEx default") : Describe(results[c].algo), us, false});
    if (us < best_us) {
      best_us = us;
      best = c;
      best_entry = measured.size() - 1;
    }
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  // A failed launch leaves the CUDA error for the caller's next check; the plan is not kept. With
  // the stream healthy but nothing timed (no candidate ran or could be captured), the default is
  // kept: the step runs as without tuning, and this row count is not tried again.
  if (cudaStreamSynchronize(stream) != cudaSuccess) {
    Destroy(plan);
    return CUBLAS_STATUS_EXECUTION_FAILED;
  }
  plan.use_default = best < 0;
  if (best >= 0) plan.algo = results[best].algo;
  if (best != -2) measured[best_entry].chosen = true;
  if (times != nullptr) *times = std::move(measured);

  Keep(Key{s, rows}, plan);
  return CUBLAS_STATUS_SUCCESS;
}

void TunedBf16Gemm::Keep(const Key& key, const Plan& plan) {
  auto it = plans_.find(key);
  if (it != plans_.end()) {
    Destroy(it->second);
    it->second = plan;
  } else {
    plans_.emplace(key, plan);
  }
}

bool TunedBf16Gemm::TunedAt(const Bf16GemmShape& shape, int64_t rows) const {
  return plans_.count(Key{shape, rows}) > 0;
}

static_assert(sizeof(cublasLtMatmulAlgo_t) == sizeof(TunedBf16Gemm::Choice::algo), "cuBLASLt's algorithm words");

bool TunedBf16Gemm::ChoiceAt(const Bf16GemmShape& shape, int64_t rows, Choice* out) const {
  const auto it = plans_.find(Key{shape, rows});
  if (it == plans_.end()) return false;
  *out = Choice();
  out->use_default = it->second.use_default;
  if (!out->use_default) std::memcpy(out->algo, &it->second.algo, sizeof(out->algo));
  return true;
}

cublasStatus_t TunedBf16Gemm::Restore(const Bf16GemmShape& s, int64_t rows, const Choice& choice) {
  if (handle_ == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (rows < 1 || !FitsInt(rows) || s.N < 1 || s.K < 1 || !FitsInt(s.N) || !FitsInt(s.K) || !FitsInt(s.x_stride) ||
      !FitsInt(s.y_stride) || s.x_stride < s.K || s.y_stride < s.N)
    return CUBLAS_STATUS_INVALID_VALUE;
  Plan plan;
  cublasStatus_t st = MakeDescriptors(s, rows, &plan);
  plan.use_default = choice.use_default;
  if (st == CUBLAS_STATUS_SUCCESS && !choice.use_default) {
    std::memcpy(&plan.algo, choice.algo, sizeof(plan.algo));
    cublasLtMatmulHeuristicResult_t checked = {};
    st = cublasLtMatmulAlgoCheck(handle_, plan.op, plan.a, plan.b, plan.d, plan.d, &plan.algo, &checked);
    if (st == CUBLAS_STATUS_SUCCESS && (checked.state != CUBLAS_STATUS_SUCCESS || checked.workspaceSize > workspace_bytes_))
      st = CUBLAS_STATUS_NOT_SUPPORTED;
    // An algorithm from another library build can be refused in any of cuBLASLt's ways: all mean "not this one".
    if (st != CUBLAS_STATUS_SUCCESS) st = CUBLAS_STATUS_NOT_SUPPORTED;
  }
  if (st != CUBLAS_STATUS_SUCCESS) {
    Destroy(plan);
    return st;
  }
  Keep(Key{s, rows}, plan);
  return CUBLAS_STATUS_SUCCESS;
}

std::string TunedBf16Gemm::DeviceKey(int device) {
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) return std::string();
  return std::string(prop.name) + " sm_" + std::to_string(prop.major) + std::to_string(prop.minor) + " cublasLt " +
         std::to_string(cublasLtGetVersion());
}

cublasStatus_t TunedBf16Gemm::Run(cublasHandle_t fallback, const __nv_bfloat16* x, int64_t x_stride,
                                  const __nv_bfloat16* w, int64_t N, int64_t K, void* y, bool y_bf16,
                                  int64_t y_stride, int64_t M, float beta, cudaStream_t stream) {
  if (M == 0) return CUBLAS_STATUS_SUCCESS;
  auto fall_back = [&] { return LinearBf16(fallback, x, x_stride, w, N, K, y, y_bf16, y_stride, M, beta); };
  if (handle_ == nullptr || M < 1 || !FitsInt(M)) return fall_back();
  const Bf16GemmShape shape{N, K, x_stride, y_stride, y_bf16, beta != 0.0f};
  const auto it = plans_.find(Key{shape, M});
  if (it == plans_.end() || it->second.use_default || !LtOperandsFit(x, x_stride, w, N, K, y, y_bf16, y_stride))
    return fall_back();
  ++tuned_runs_;
  return RunPlan(it->second, x, w, y, beta, stream);
}

}  // namespace gla::cuda
