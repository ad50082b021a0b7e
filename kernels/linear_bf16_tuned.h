// bf16 projections larger than decode-sized through cuBLASLt, with the algorithm chosen by timing
// rather than by the heuristic (issue 19, "keep the GEMMs at bandwidth"). cublasGemmEx's default
// (cuda::LinearBf16) takes the heuristic's first answer, which is picked for a generic problem of
// the shape: at the engine's decode batches (32-256 rows) and short prompts it streamed the weights
// at 52-54% of the copy rate (H100 profile, docs/performance.md). Here the heuristic's first
// kMaxCandidates algorithms and cublasGemmEx's default are each timed on the caller's real
// operands, every layer's matrix of the shape in turn (so the weights come from HBM, as they do in a
// step), each candidate's pass captured in a CUDA graph and timed there (as a decode step runs), and
// the fastest is kept for that shape and row count. Only that row count takes it: a choice carried
// to the other counts of its power-of-two bucket measured up to 1.4x slower than the default there
// (gla-1.3B down at 200 rows with 256's choice; H100, 2026-12-06, docs/performance.md), the tile
// grid's waves falling differently. TensorRT-LLM's GEMM plugin profiles its tactics the same way.
// Framework-free.
//
// Same product as LinearBf16: y[M, N] = x[M, K] w[N, K]^T + beta y, fp32 accumulation, y fp32 or
// bf16. The chosen algorithm may split K (its partial sums added in a fixed order: cuBLASLt's
// reduction schemes are sequential), so the rounding differs from LinearBf16's in the last bits;
// each algorithm is deterministic for a given row count.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#if defined(GLA_HAVE_CUDA)
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

namespace gla::cuda {

// One projection's shape as the engine calls it: N outputs, K inputs, row strides (elements), the
// output's type and whether it accumulates (beta != 0 reads y).
struct Bf16GemmShape {
  int64_t N = 0, K = 0, x_stride = 0, y_stride = 0;
  bool y_bf16 = false;
  bool accumulate = false;
  auto Tie() const { return std::tie(N, K, x_stride, y_stride, y_bf16, accumulate); }
  bool operator<(const Bf16GemmShape& o) const { return Tie() < o.Tie(); }
};

// What Tune measured for one algorithm: a name (cuBLASLt's tile, stages, split-K and reduction, or
// "cublasGemmEx default") and µs per call; `chosen` marks the one kept.
struct GemmCandidateTime {
  std::string name;
  double us = 0;
  bool chosen = false;
};

class TunedBf16Gemm {
 public:
  // How many of the heuristic's algorithms Tune times beside cublasGemmEx's default.
  static constexpr int kMaxCandidates = 16;

  TunedBf16Gemm() = default;
  ~TunedBf16Gemm();
  TunedBf16Gemm(const TunedBf16Gemm&) = delete;
  TunedBf16Gemm& operator=(const TunedBf16Gemm&) = delete;

  // Creates the cuBLASLt handle; `workspace` (device memory, `bytes` of it, 16-byte aligned)
  // outlives this object and is what cublas (the fallback handle given to Tune and Run) uses too:
  // both run on one stream, one after the other.
  cublasStatus_t Init(void* workspace, size_t bytes);

  // Times each candidate for `rows` rows of `shape`: a pass is y = x w_i^T (+ y where
  // shape.accumulate) for each of weights[0..count); one pass runs eagerly, then the pass captured
  // in a CUDA graph is launched once and timed over five launches (the median). Keeps the fastest
  // for (shape, rows), replacing an earlier choice; where no candidate could be timed (none ran or
  // could be captured, the stream healthy) the default is kept. Scribbles on y (rows x y_stride).
  // The operands must be 16-byte aligned with K % 8 == 0 and N % 8 == 0, `stream` not the legacy
  // default stream (it cannot be captured) and `fallback`'s own stream (else
  // CUBLAS_STATUS_INVALID_VALUE, nothing run): Run falls back to cublasGemmEx for anything else
  // anyway. Synchronizes `stream`. `times` (optional) receives every candidate's time, in the order
  // timed. time_default false: cublasGemmEx's default is not a candidate, so a cuBLASLt algorithm is
  // kept where one ran (tests, to run it).
  cublasStatus_t Tune(cublasHandle_t fallback, const Bf16GemmShape& shape, int64_t rows, const __nv_bfloat16* x,
                      const __nv_bfloat16* const* weights, int count, void* y, cudaStream_t stream,
                      std::vector<GemmCandidateTime>* times = nullptr, bool time_default = true);

  // Whether Tune (or Restore) has made a choice for (shape, rows).
  bool TunedAt(const Bf16GemmShape& shape, int64_t rows) const;

  // A choice in a form that outlives the process (engine/model/gemm_tuning_cache.h keeps it in a
  // file): cublasGemmEx's default, or a cuBLASLt algorithm's eight opaque words, which cuBLASLt
  // documents as serializable for reuse with the same library version.
  struct Choice {
    bool use_default = true;
    uint64_t algo[8] = {};
  };
  // The choice made for (shape, rows), if any.
  bool ChoiceAt(const Bf16GemmShape& shape, int64_t rows, Choice* out) const;
  // Takes a choice made earlier (by another process: DeviceKey must match) for (shape, rows)
  // without timing, replacing any: the algorithm checked by cublasLtMatmulAlgoCheck on the shape's
  // descriptors at that row count, within the workspace. CUBLAS_STATUS_NOT_SUPPORTED where it does
  // not fit (nothing kept: Tune then decides), INVALID_VALUE for a shape Tune would refuse.
  cublasStatus_t Restore(const Bf16GemmShape& shape, int64_t rows, const Choice& choice);
  // What a cached choice is filed under: the device's name, compute capability and the cuBLASLt
  // version (its algorithms' words mean nothing to another).
  static std::string DeviceKey(int device);

  // y = x w^T + beta y with the algorithm chosen for (shape, M) where Tune ran for it and the
  // operands fit (alignments, strides); otherwise, and where cublasGemmEx's default was the fastest,
  // cuda::LinearBf16 on `fallback` (whose stream must be `stream`). Graph-capturable: nothing here
  // allocates device memory or synchronizes.
  cublasStatus_t Run(cublasHandle_t fallback, const __nv_bfloat16* x, int64_t x_stride, const __nv_bfloat16* w,
                     int64_t N, int64_t K, void* y, bool y_bf16, int64_t y_stride, int64_t M, float beta,
                     cudaStream_t stream);

  // Calls Run made with a tuned cuBLASLt algorithm (not the fallback): for tests and reports.
  int64_t tuned_runs() const { return tuned_runs_; }
  int plans() const { return static_cast<int>(plans_.size()); }

 private:
  using Key = std::tuple<Bf16GemmShape, int64_t>;  // shape, rows timed at
  struct Plan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr;          // the weights, K x N column-major (op T)
    cublasLtMatrixLayout_t b = nullptr, d = nullptr;  // x and y at the rows timed
    bool use_default = false;  // cublasGemmEx's default was the fastest
    cublasLtMatmulAlgo_t algo{};
  };
  cublasStatus_t MakeDescriptors(const Bf16GemmShape& shape, int64_t rows, Plan* plan) const;
  cublasStatus_t RunPlan(const Plan& plan, const void* x, const void* w, void* y, float beta,
                         cudaStream_t stream) const;
  static void Destroy(Plan& plan);
  void Keep(const Key& key, const Plan& plan);  // replacing (and destroying) an earlier plan
  static std::string Describe(const cublasLtMatmulAlgo_t& algo);

  cublasLtHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  std::map<Key, Plan> plans_;
  int64_t tuned_runs_ = 0;
};

}  // namespace gla::cuda
#endif
