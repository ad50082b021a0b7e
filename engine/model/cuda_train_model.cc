#include "engine/model/cuda_train_model.h"

#include "engine/model/layer_plan.h"

#include <functional>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <unordered_map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/cuda_util.h"
#include "engine/model/train_model.h"
#include "kernels/activations.h"
#include "kernels/conv.h"
#include "kernels/cross_entropy.h"
#include "kernels/dropout.h"
#include "kernels/gla.h"
#include "kernels/linear.h"
#include "kernels/norm.h"
#include "models/status_macros.h"

namespace gla {

absl::Status CudaTrainSupported(const GlaConfig& c) {
  if (!cuda::GlaChunkHeadDimSupported(c.head_k_dim))
    return absl::FailedPreconditionError(absl::StrCat("GPU training needs head_k_dim 64, 128 or 256 (the chunkwise ",
                                                      "kernels' tiles); this model has ", c.head_k_dim));
  if (c.head_v_dim % 64 != 0)
    return absl::FailedPreconditionError(
        absl::StrCat("GPU training needs head_v_dim a multiple of 64; this model has ", c.head_v_dim));
  if (c.use_short_conv && c.conv_size > 9)
    return absl::FailedPreconditionError(absl::StrCat("GPU training takes conv_size <= 9; this model has ", c.conv_size));
  return absl::OkStatus();
}

namespace {

// One tensor on the device: its value, and for what trains its gradient and AdamW moments.
struct DeviceTensor {
  DeviceMemory value, grad, m, v;
  int64_t n = 0;
  bool decay = false;
  float* w() const { return value.get<float>(); }
  float* g() const { return grad.get<float>(); }
};

constexpr int64_t kCrossEntropyRows = 1024;  // logits held at once: kCrossEntropyRows x vocab floats

}  // namespace

struct CudaTrainModel::Impl {
  int device = 0;
  GlaConfig c;
  GlaLayerPlan plan{GlaConfig{}};  // c's layer plan (layer_plan.h)
  const ModelWeights* w = nullptr;
  const LoraAdapter* lora = nullptr;
  float lora_scale = 0.f;
  float dropout = 0.f;
  std::vector<DeviceTensor> tensors;                  // ForEachParam order: weights, then the adapter
  std::unordered_map<const Weight*, size_t> index;    // host tensor -> tensors[i]
  size_t first_lora = 0;                              // tensors[first_lora..] are the adapter's
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  cudaMemPool_t pool = nullptr;
  DeviceMemory sums;  // two doubles: loss sum, gradient sum of squares

  ~Impl() {
    if (stream != nullptr) cudaStreamSynchronize(stream);
    if (blas != nullptr) cublasDestroy(blas);
    if (pool != nullptr) cudaMemPoolDestroy(pool);
    if (stream != nullptr) cudaStreamDestroy(stream);
  }

  const DeviceTensor& T(const Weight& host) const { return tensors[index.at(&host)]; }
  float* W(const Weight& host) const { return T(host).w(); }
  float* G(const Weight& host) const { return T(host).g(); }  // null when frozen
  const LoraPair* Pair(int layer, LoraTarget t) const {
    if (lora == nullptr) return nullptr;
    const auto& p = lora->layers[layer][static_cast<int>(t)];
    return p.has_value() ? &*p : nullptr;
  }
};

namespace {

// Per-step device buffers from the model's stream-ordered pool, returned to it when the step ends.
class StepBuffers {
 public:
  StepBuffers(cudaMemPool_t pool, cudaStream_t stream) : pool_(pool), stream_(stream) {}
  ~StepBuffers() {
    for (void* p : ptrs_) cudaFreeAsync(p, stream_);
  }
  template <typename T = float>
  absl::StatusOr<T*> Get(int64_t n) {
    if (n <= 0) return static_cast<T*>(nullptr);
    void* p = nullptr;
    const size_t bytes = static_cast<size_t>(n) * sizeof(T);
    const cudaError_t e = cudaMallocFromPoolAsync(&p, bytes, pool_, stream_);
    if (e != cudaSuccess) {
      cudaGetLastError();
      return CudaStatus(e, absl::StrCat("allocating ", bytes >> 20, " MiB of GPU memory for a training step").c_str());
    }
    ptrs_.push_back(p);
    return static_cast<T*>(p);
  }
  template <typename T = float>
  absl::StatusOr<T*> Zeros(int64_t n) {
    ASSIGN_OR_RETURN(T * p, Get<T>(n));
    if (p != nullptr) GLA_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(p, 0, static_cast<size_t>(n) * sizeof(T), stream_));
    return p;
  }

 private:
  cudaMemPool_t pool_;
  cudaStream_t stream_;
  std::vector<void*> ptrs_;
};

#define GLA_BLAS(expr) GLA_CUBLAS_RETURN_IF_ERROR(expr)
#define GLA_CUDA(expr) GLA_CUDA_RETURN_IF_ERROR(expr)

}  // namespace

// What one forward keeps for the backward, and how it runs. One instance per call (Run).
class CudaTrainPass {
 public:
  CudaTrainPass(CudaTrainModel::Impl& m, std::span<const std::span<const int32_t>> windows, bool backward,
                uint64_t dropout_seed, const std::function<bool()>* yield = nullptr)
      : m_(m), c_(m.c), windows_(windows), backward_(backward), seed_(dropout_seed), yield_(yield),
        buf_(m.pool, m.stream), s_(m.stream) {}

  // Forward (and backward when asked): the loss sum lands in m.sums[0].
  absl::Status Run(float grad_scale);

 private:
  struct LoraCache {
    float* x_drop = nullptr;  // dropped input (dropout only)
    float* xa = nullptr;      // drop(x) A^T   [T, r]
    uint64_t seed = 0;
  };
  struct Acts {
    float *x_in, *h, *q, *k, *v, *g, *lr, *gk_pre, *gk, *qc, *kc, *vc, *o, *og, *x_mid, *h2, *gu, *act;
    LoraCache lora[kNumLoraTargets];
  };

  absl::Status Setup();
  absl::Status AllocActs(Acts& a);
  // Between layers (and lm_head blocks): finishes the queued work, then lets serving in through the
  // yield hook; CANCELLED when the hook says stop. Without a hook, nothing (no synchronization).
  absl::Status Pause();
  absl::Status ProjForward(const float* x, const Weight& w, int layer, LoraTarget t, LoraCache& cache, float* y,
                           int64_t y_stride, float beta);
  absl::Status ProjBackward(const float* x, const Weight& w, int layer, LoraTarget t, const LoraCache& cache,
                            const float* dy, int64_t dy_stride, float* dx, float dx_beta);
  absl::Status LayerForward(int l, Acts& a, float* x_out);
  absl::Status LayerBackward(int l, const Acts& a, float* dx);
  absl::Status Conv(const float* x, int64_t C, const Weight& wc, float* y);
  // The GLA operator's input rows (after the short conv when there is one; q, k, v each in an
  // array of its own width) and output rows o.
  GlaRows GlaInputs(const Acts& a, float* o) const;
  absl::Status CrossEntropy(const float* hf, float grad_scale, float* dhf);

  CudaTrainModel::Impl& m_;
  const GlaConfig& c_;
  std::span<const std::span<const int32_t>> windows_;
  bool backward_;
  uint64_t seed_;
  const std::function<bool()>* yield_;
  StepBuffers buf_;
  cudaStream_t s_;

  int64_t T_ = 0;  // packed rows
  int num_seqs_ = 0;
  int32_t *ids_ = nullptr, *targets_ = nullptr, *cu_seqlens_ = nullptr, *slots_ = nullptr;
  float* conv_tail_ = nullptr;  // zero history for the short convs (rolled in place, never read back)
  void* gla_ws_ = nullptr;
  size_t gla_ws_bytes_ = 0;
  float* lora_tmp_ = nullptr;  // LoRA backward scratch: d(xa) [T, max r], d(drop x) [T, max in]
  float* lora_dxd_ = nullptr;
};

absl::Status CudaTrainPass::Setup() {
  std::vector<int32_t> ids, targets, cu{0};
  for (const auto& win : windows_) {
    if (win.size() < 2) return absl::InvalidArgumentError("a training window needs at least two tokens");
    for (int32_t id : win)
      if (id < 0 || id >= c_.vocab_size) return absl::InvalidArgumentError(absl::StrCat("token id ", id, " outside the vocabulary"));
    ids.insert(ids.end(), win.begin(), win.end() - 1);
    targets.insert(targets.end(), win.begin() + 1, win.end());
    cu.push_back(static_cast<int32_t>(ids.size()));
  }
  T_ = static_cast<int64_t>(ids.size());
  num_seqs_ = static_cast<int>(windows_.size());
  if (T_ == 0) return absl::InvalidArgumentError("no training window");
  if (T_ > (int64_t{1} << 30)) return absl::InvalidArgumentError("too many tokens in one training step");
  std::vector<int32_t> slots(num_seqs_);
  for (int i = 0; i < num_seqs_; ++i) slots[i] = i;
  ASSIGN_OR_RETURN(ids_, buf_.Get<int32_t>(T_));
  ASSIGN_OR_RETURN(targets_, buf_.Get<int32_t>(T_));
  ASSIGN_OR_RETURN(cu_seqlens_, buf_.Get<int32_t>(num_seqs_ + 1));
  ASSIGN_OR_RETURN(slots_, buf_.Get<int32_t>(num_seqs_));
  GLA_CUDA(cudaMemcpyAsync(ids_, ids.data(), ids.size() * 4, cudaMemcpyHostToDevice, s_));
  GLA_CUDA(cudaMemcpyAsync(targets_, targets.data(), targets.size() * 4, cudaMemcpyHostToDevice, s_));
  GLA_CUDA(cudaMemcpyAsync(cu_seqlens_, cu.data(), cu.size() * 4, cudaMemcpyHostToDevice, s_));
  GLA_CUDA(cudaMemcpyAsync(slots_, slots.data(), slots.size() * 4, cudaMemcpyHostToDevice, s_));
  // The host vectors die with this function: the copies must have read them.
  GLA_CUDA(cudaStreamSynchronize(s_));
  const GlaLayerPlan& plan = m_.plan;
  if (plan.short_conv) {
    const int64_t widest = std::max<int64_t>(plan.q_width, plan.v_width);
    ASSIGN_OR_RETURN(conv_tail_, buf_.Get(int64_t{num_seqs_} * (plan.conv_size - 1) * widest));
  }

  // One GLA workspace for the forward and backward kernels of every layer.
  const GlaPrefillCudaParams fp = plan.PrefillCuda(GlaRows{}, num_seqs_, nullptr, CudaStateSlots(), nullptr);
  const GlaBackwardCudaParams bp = plan.BackwardCuda(GlaRows{}, num_seqs_, nullptr, nullptr, nullptr, nullptr, nullptr,
                                                     nullptr);
  gla_ws_bytes_ = cuda::GlaPrefillChunkWorkspaceBytes(fp, static_cast<int>(T_));
  if (backward_) gla_ws_bytes_ = std::max(gla_ws_bytes_, cuda::GlaBackwardChunkWorkspaceBytes(bp, static_cast<int>(T_)));
  ASSIGN_OR_RETURN(gla_ws_, buf_.Get<unsigned char>(static_cast<int64_t>(gla_ws_bytes_)));

  if (backward_ && m_.lora != nullptr) {
    int64_t max_r = 0, max_in = 0;
    for (int l = 0; l < c_.num_hidden_layers; ++l)
      for (int t = 0; t < kNumLoraTargets; ++t)
        if (const LoraPair* p = m_.Pair(l, static_cast<LoraTarget>(t))) {
          max_r = std::max(max_r, p->a.shape[0]);
          max_in = std::max(max_in, p->a.shape[1]);
        }
    ASSIGN_OR_RETURN(lora_tmp_, buf_.Get(T_ * max_r));
    if (m_.dropout > 0.f) {
      ASSIGN_OR_RETURN(lora_dxd_, buf_.Get(T_ * max_in));
    }
  }
  return absl::OkStatus();
}

absl::Status CudaTrainPass::AllocActs(Acts& a) {
  const GlaLayerPlan& p = m_.plan;
  const int64_t D = p.hidden, I = p.intermediate, kdpg = p.k_width, vdpg = p.v_width, VD = p.o_width, KD = p.q_width;
  a = Acts{};
  ASSIGN_OR_RETURN(a.x_in, buf_.Get(T_ * D));
  ASSIGN_OR_RETURN(a.h, buf_.Get(T_ * D));
  ASSIGN_OR_RETURN(a.q, buf_.Get(T_ * KD));
  ASSIGN_OR_RETURN(a.k, buf_.Get(T_ * kdpg));
  ASSIGN_OR_RETURN(a.v, buf_.Get(T_ * vdpg));
  if (p.output_gate) {
    ASSIGN_OR_RETURN(a.g, buf_.Get(T_ * VD));
  }
  ASSIGN_OR_RETURN(a.lr, buf_.Get(T_ * p.gate_rank));
  ASSIGN_OR_RETURN(a.gk_pre, buf_.Get(T_ * kdpg));
  ASSIGN_OR_RETURN(a.gk, buf_.Get(T_ * kdpg));
  if (p.short_conv) {
    ASSIGN_OR_RETURN(a.qc, buf_.Get(T_ * KD));
    ASSIGN_OR_RETURN(a.kc, buf_.Get(T_ * kdpg));
    ASSIGN_OR_RETURN(a.vc, buf_.Get(T_ * vdpg));
  }
  ASSIGN_OR_RETURN(a.o, buf_.Get(T_ * VD));
  ASSIGN_OR_RETURN(a.og, buf_.Get(T_ * VD));
  ASSIGN_OR_RETURN(a.x_mid, buf_.Get(T_ * D));
  ASSIGN_OR_RETURN(a.h2, buf_.Get(T_ * D));
  ASSIGN_OR_RETURN(a.gu, buf_.Get(T_ * 2 * I));
  ASSIGN_OR_RETURN(a.act, buf_.Get(T_ * I));
  return absl::OkStatus();
}

absl::Status CudaTrainPass::ProjForward(const float* x, const Weight& w, int layer, LoraTarget t, LoraCache& cache,
                                        float* y, int64_t y_stride, float beta) {
  const int64_t out = w.shape[0], in = w.shape[1];
  GLA_BLAS(cuda::LinearF32(m_.blas, x, in, m_.W(w), out, in, y, y_stride, T_, 1.f, beta));
  const LoraPair* p = m_.Pair(layer, t);
  if (p == nullptr) return absl::OkStatus();
  const int64_t r = p->a.shape[0];
  const float* xd = x;
  if (backward_ && m_.dropout > 0.f) {
    // A mask per (step, layer, target); the backward recomputes it from the same seed.
    cache.seed = seed_ * 0x100000001B3ull + static_cast<uint64_t>(layer) * kNumLoraTargets + static_cast<uint64_t>(t);
    ASSIGN_OR_RETURN(cache.x_drop, buf_.Get(T_ * in));
    GLA_CUDA(cuda::Dropout(x, in, T_, in, m_.dropout, cache.seed, cache.x_drop, in, s_));
    xd = cache.x_drop;
  }
  ASSIGN_OR_RETURN(cache.xa, buf_.Get(T_ * r));
  GLA_BLAS(cuda::LinearF32(m_.blas, xd, in, m_.W(p->a), r, in, cache.xa, r, T_, 1.f, 0.f));
  GLA_BLAS(cuda::LinearF32(m_.blas, cache.xa, r, m_.W(p->b), out, r, y, y_stride, T_, m_.lora_scale, 1.f));
  return absl::OkStatus();
}

absl::Status CudaTrainPass::ProjBackward(const float* x, const Weight& w, int layer, LoraTarget t,
                                         const LoraCache& cache, const float* dy, int64_t dy_stride, float* dx,
                                         float dx_beta) {
  const int64_t out = w.shape[0], in = w.shape[1];
  GLA_BLAS(cuda::LinearBackwardF32(m_.blas, x, in, m_.W(w), out, in, dy, dy_stride, dx, in, dx_beta, m_.G(w), T_, 1.f));
  const LoraPair* p = m_.Pair(layer, t);
  if (p == nullptr) return absl::OkStatus();
  const int64_t r = p->a.shape[0];
  // d(xa) = scale dy B;  dB += scale dy^T xa
  float* dxa = lora_tmp_;
  GLA_BLAS(cuda::LinearBackwardF32(m_.blas, cache.xa, r, m_.W(p->b), out, r, dy, dy_stride, dxa, r, 0.f, m_.G(p->b),
                                   T_, m_.lora_scale));
  if (cache.x_drop != nullptr) {  // d(drop x) = d(xa) A, then through the mask into dx;  dA += d(xa)^T drop(x)
    GLA_BLAS(cuda::LinearBackwardF32(m_.blas, cache.x_drop, in, m_.W(p->a), r, in, dxa, r, lora_dxd_, in, 0.f,
                                     m_.G(p->a), T_, 1.f));
    GLA_CUDA(cuda::DropoutBackwardAdd(lora_dxd_, in, T_, in, m_.dropout, cache.seed, dx, in, s_));
  } else {
    GLA_BLAS(cuda::LinearBackwardF32(m_.blas, x, in, m_.W(p->a), r, in, dxa, r, dx, in, 1.f, m_.G(p->a), T_, 1.f));
  }
  return absl::OkStatus();
}

absl::Status CudaTrainPass::Conv(const float* x, int64_t C, const Weight& wc, float* y) {
  // Every window starts from an empty past: a zero tail per sequence (slot s = sequence s).
  const int64_t tail = int64_t{m_.plan.conv_size - 1} * C;
  if (tail > 0) GLA_CUDA(cudaMemsetAsync(conv_tail_, 0, static_cast<size_t>(num_seqs_ * tail) * 4, s_));
  GLA_CUDA(cuda::ShortConvSilu(x, C, cu_seqlens_, num_seqs_, static_cast<int>(T_), C, m_.W(wc), m_.plan.conv_size,
                               CudaStateSlots{conv_tail_, tail, false}, slots_, y, C, s_));
  return absl::OkStatus();
}

GlaRows CudaTrainPass::GlaInputs(const Acts& a, float* o) const {
  const GlaLayerPlan& p = m_.plan;
  GlaRows r = p.Rows(p.short_conv ? a.qc : a.q, p.short_conv ? a.kc : a.k, p.short_conv ? a.vc : a.v, 0, a.gk, o);
  r.q_stride = p.q_width, r.k_stride = p.k_width, r.v_stride = p.v_width;
  return r;
}

absl::Status CudaTrainPass::LayerForward(int l, Acts& a, float* x_out) {
  const LayerWeights& w = m_.w->layers[l];
  const GlaLayerPlan& p = m_.plan;
  const int64_t D = p.hidden, I = p.intermediate, kdpg = p.k_width, vdpg = p.v_width, VD = p.o_width;
  const float eps = p.eps;
  auto cache = [&](LoraTarget t) -> LoraCache& { return a.lora[static_cast<int>(t)]; };
  GLA_CUDA(cuda::RmsNorm(a.x_in, D, nullptr, m_.W(w.attn_norm), a.h, D, T_, static_cast<int>(D), eps, s_));
  RETURN_IF_ERROR(ProjForward(a.h, w.q_proj, l, LoraTarget::kQ, cache(LoraTarget::kQ), a.q, p.q_width, 0.f));
  RETURN_IF_ERROR(ProjForward(a.h, w.k_proj, l, LoraTarget::kK, cache(LoraTarget::kK), a.k, kdpg, 0.f));
  RETURN_IF_ERROR(ProjForward(a.h, w.v_proj, l, LoraTarget::kV, cache(LoraTarget::kV), a.v, vdpg, 0.f));
  if (p.output_gate)
    RETURN_IF_ERROR(ProjForward(a.h, w.g_proj, l, LoraTarget::kG, cache(LoraTarget::kG), a.g, VD, 0.f));
  RETURN_IF_ERROR(ProjForward(a.h, w.gk_proj0, l, LoraTarget::kGk0, cache(LoraTarget::kGk0), a.lr, p.gate_rank, 0.f));
  RETURN_IF_ERROR(ProjForward(a.lr, w.gk_proj1, l, LoraTarget::kGk1, cache(LoraTarget::kGk1), a.gk_pre, kdpg, 0.f));
  GLA_CUDA(cudaMemcpyAsync(a.gk, a.gk_pre, static_cast<size_t>(T_ * kdpg) * 4, cudaMemcpyDeviceToDevice, s_));
  GLA_CUDA(cuda::LogSigmoidGate(a.gk, kdpg, m_.W(w.gk_proj1_bias), T_, kdpg, p.gate, s_));
  if (p.short_conv) {
    RETURN_IF_ERROR(Conv(a.q, p.q_width, w.q_conv, a.qc));
    RETURN_IF_ERROR(Conv(a.k, kdpg, w.k_conv, a.kc));
    RETURN_IF_ERROR(Conv(a.v, vdpg, w.v_conv, a.vc));
  }
  // From a zero state (no slots); the final state is not kept.
  GlaPrefillCudaParams gp = p.PrefillCuda(GlaInputs(a, a.o), num_seqs_, cu_seqlens_, CudaStateSlots(), nullptr);
  gp.total_tokens = static_cast<int>(T_);
  gp.workspace = gla_ws_, gp.workspace_bytes = gla_ws_bytes_;
  GLA_CUDA(cuda::GlaPrefillChunk(gp, s_));

  GLA_CUDA(cuda::RmsNormSwishGate(a.o, VD, p.output_gate ? a.g : nullptr, VD, m_.W(w.g_norm), a.og, VD, T_, p.heads,
                                  p.head_v, eps, s_));
  GLA_CUDA(cudaMemcpyAsync(a.x_mid, a.x_in, static_cast<size_t>(T_ * D) * 4, cudaMemcpyDeviceToDevice, s_));
  RETURN_IF_ERROR(ProjForward(a.og, w.o_proj, l, LoraTarget::kO, cache(LoraTarget::kO), a.x_mid, D, 1.f));
  GLA_CUDA(cuda::RmsNorm(a.x_mid, D, nullptr, m_.W(w.mlp_norm), a.h2, D, T_, static_cast<int>(D), eps, s_));
  RETURN_IF_ERROR(ProjForward(a.h2, w.gate_proj, l, LoraTarget::kGate, cache(LoraTarget::kGate), a.gu, 2 * I, 0.f));
  RETURN_IF_ERROR(ProjForward(a.h2, w.up_proj, l, LoraTarget::kUp, cache(LoraTarget::kUp), a.gu + I, 2 * I, 0.f));
  GLA_CUDA(cuda::SwiGlu(a.gu, 2 * I, a.act, I, T_, I, s_));
  GLA_CUDA(cudaMemcpyAsync(x_out, a.x_mid, static_cast<size_t>(T_ * D) * 4, cudaMemcpyDeviceToDevice, s_));
  RETURN_IF_ERROR(ProjForward(a.act, w.down_proj, l, LoraTarget::kDown, cache(LoraTarget::kDown), x_out, D, 1.f));
  return absl::OkStatus();
}

// dx holds the gradient of the layer's output on entry and of its input on return. Scratch for
// the layer's gradients comes from the step's pool (freed with the step, reused across layers by
// the pool itself).
absl::Status CudaTrainPass::LayerBackward(int l, const Acts& a, float* dx) {
  const LayerWeights& w = m_.w->layers[l];
  auto cache = [&](LoraTarget t) -> const LoraCache& { return a.lora[static_cast<int>(t)]; };
  const GlaLayerPlan& p = m_.plan;
  const int64_t D = p.hidden, I = p.intermediate, kdpg = p.k_width, vdpg = p.v_width, VD = p.o_width, KD = p.q_width;
  const float eps = p.eps;
  StepBuffers scratch(m_.pool, s_);
  ASSIGN_OR_RETURN(float* d_act, scratch.Get(T_ * I));
  ASSIGN_OR_RETURN(float* d_gu, scratch.Get(T_ * 2 * I));
  ASSIGN_OR_RETURN(float* d_h, scratch.Get(T_ * D));

  // MLP: x_out = x_mid + down(swiglu(gate|up(RmsNorm(x_mid))))
  RETURN_IF_ERROR(ProjBackward(a.act, w.down_proj, l, LoraTarget::kDown, cache(LoraTarget::kDown), dx, D, d_act, 0.f));
  GLA_CUDA(cuda::SwiGluBackward(a.gu, 2 * I, d_act, I, d_gu, 2 * I, T_, I, s_));
  RETURN_IF_ERROR(ProjBackward(a.h2, w.gate_proj, l, LoraTarget::kGate, cache(LoraTarget::kGate), d_gu, 2 * I, d_h, 0.f));
  RETURN_IF_ERROR(ProjBackward(a.h2, w.up_proj, l, LoraTarget::kUp, cache(LoraTarget::kUp), d_gu + I, 2 * I, d_h, 1.f));
  GLA_CUDA(cuda::RmsNormBackward(a.x_mid, D, m_.W(w.mlp_norm), d_h, D, dx, D, /*accumulate_dx=*/true,
                                 m_.G(w.mlp_norm), T_, static_cast<int>(D), eps, s_));

  // Attention: x_mid = x_in + o_proj(gnorm_swish(GLA(q, k, v, gk), g))
  ASSIGN_OR_RETURN(float* d_og, scratch.Get(T_ * VD));
  ASSIGN_OR_RETURN(float* d_o, scratch.Get(T_ * VD));
  float* d_g = nullptr;
  if (p.output_gate) {
    ASSIGN_OR_RETURN(d_g, scratch.Get(T_ * VD));
  }
  RETURN_IF_ERROR(ProjBackward(a.og, w.o_proj, l, LoraTarget::kO, cache(LoraTarget::kO), dx, D, d_og, 0.f));
  GLA_CUDA(cuda::RmsNormSwishGateBackward(a.o, VD, p.output_gate ? a.g : nullptr, VD, m_.W(w.g_norm), d_og, VD,
                                          d_o, VD, d_g, VD, m_.G(w.g_norm), T_, p.heads, p.head_v, eps, s_));

  ASSIGN_OR_RETURN(float* dq, scratch.Get(T_ * KD));
  ASSIGN_OR_RETURN(float* dk, scratch.Get(T_ * kdpg));
  ASSIGN_OR_RETURN(float* dv, scratch.Get(T_ * vdpg));
  ASSIGN_OR_RETURN(float* dgk, scratch.Get(T_ * kdpg));
  GlaBackwardCudaParams bp = p.BackwardCuda(GlaInputs(a, nullptr), num_seqs_, cu_seqlens_, d_o, dq, dk, dv, dgk);
  bp.total_tokens = static_cast<int>(T_);
  bp.workspace = gla_ws_, bp.workspace_bytes = gla_ws_bytes_;
  GLA_CUDA(cuda::GlaBackwardChunk(bp, s_));

  // Forget gate: gk = logsigmoid(gk_proj1(gk_proj0(h)) + b) / normalizer
  ASSIGN_OR_RETURN(float* d_gk_pre, scratch.Get(T_ * kdpg));
  ASSIGN_OR_RETURN(float* d_lr, scratch.Get(T_ * p.gate_rank));
  GLA_CUDA(cuda::LogSigmoidGateBackward(a.gk_pre, kdpg, m_.W(w.gk_proj1_bias), dgk, kdpg, d_gk_pre, kdpg,
                                        m_.G(w.gk_proj1_bias), T_, kdpg, p.gate, s_));
  RETURN_IF_ERROR(ProjBackward(a.lr, w.gk_proj1, l, LoraTarget::kGk1, cache(LoraTarget::kGk1), d_gk_pre, kdpg, d_lr, 0.f));

  if (p.short_conv) {  // the GLA gradients are those of the conv outputs: take them back to its inputs
    ASSIGN_OR_RETURN(float* tmp, scratch.Get(T_ * std::max<int64_t>(KD, vdpg)));
    auto back = [&](const float* x, int64_t C, const Weight& wc, float* d) -> absl::Status {
      GLA_CUDA(cuda::ShortConvSiluBackward(x, C, cu_seqlens_, num_seqs_, C, m_.W(wc), p.conv_size, d, C, tmp, C,
                                           m_.G(wc), s_));
      GLA_CUDA(cudaMemcpyAsync(d, tmp, static_cast<size_t>(T_ * C) * 4, cudaMemcpyDeviceToDevice, s_));
      return absl::OkStatus();
    };
    RETURN_IF_ERROR(back(a.q, KD, w.q_conv, dq));
    RETURN_IF_ERROR(back(a.k, kdpg, w.k_conv, dk));
    RETURN_IF_ERROR(back(a.v, vdpg, w.v_conv, dv));
  }

  // Every projection of h sends its gradient back into d_h.
  RETURN_IF_ERROR(ProjBackward(a.h, w.q_proj, l, LoraTarget::kQ, cache(LoraTarget::kQ), dq, KD, d_h, 0.f));
  RETURN_IF_ERROR(ProjBackward(a.h, w.k_proj, l, LoraTarget::kK, cache(LoraTarget::kK), dk, kdpg, d_h, 1.f));
  RETURN_IF_ERROR(ProjBackward(a.h, w.v_proj, l, LoraTarget::kV, cache(LoraTarget::kV), dv, vdpg, d_h, 1.f));
  if (p.output_gate)
    RETURN_IF_ERROR(ProjBackward(a.h, w.g_proj, l, LoraTarget::kG, cache(LoraTarget::kG), d_g, VD, d_h, 1.f));
  RETURN_IF_ERROR(ProjBackward(a.h, w.gk_proj0, l, LoraTarget::kGk0, cache(LoraTarget::kGk0), d_lr, p.gate_rank, d_h, 1.f));
  GLA_CUDA(cuda::RmsNormBackward(a.x_in, D, m_.W(w.attn_norm), d_h, D, dx, D, /*accumulate_dx=*/true,
                                 m_.G(w.attn_norm), T_, static_cast<int>(D), eps, s_));
  return absl::OkStatus();
}

// The lm_head GEMM and the loss, kCrossEntropyRows rows at a time: [rows, V] logits at most.
absl::Status CudaTrainPass::Pause() {
  if (yield_ == nullptr || !*yield_) return absl::OkStatus();
  // What a serving step waits for is then this layer's kernels, not the rest of the step queued
  // behind them on the stream.
  GLA_CUDA(cudaStreamSynchronize(s_));
  if (!(*yield_)()) return absl::CancelledError("the training step was stopped");
  return absl::OkStatus();
}

absl::Status CudaTrainPass::CrossEntropy(const float* hf, float grad_scale, float* dhf) {
  const int64_t D = m_.plan.hidden, V = c_.vocab_size;
  const Weight& lm = m_.w->output_embeddings();
  const int64_t block = std::min(T_, kCrossEntropyRows);
  StepBuffers scratch(m_.pool, s_);
  ASSIGN_OR_RETURN(float* z, scratch.Get(block * V));
  for (int64_t r0 = 0; r0 < T_; r0 += block) {
    if (r0 > 0 && r0 % (8 * block) == 0) RETURN_IF_ERROR(Pause());
    const int64_t n = std::min(block, T_ - r0);
    GLA_BLAS(cuda::LinearF32(m_.blas, hf + r0 * D, D, m_.W(lm), V, D, z, V, n, 1.f, 0.f));
    GLA_CUDA(cuda::SoftmaxCrossEntropyGrad(z, V, targets_ + r0, n, V, grad_scale, m_.sums.get<double>(), s_));
    if (dhf != nullptr)
      GLA_BLAS(cuda::LinearBackwardF32(m_.blas, hf + r0 * D, D, m_.W(lm), V, D, z, V, dhf + r0 * D, D, 0.f, m_.G(lm),
                                       n, 1.f));
  }
  return absl::OkStatus();
}

absl::Status CudaTrainPass::Run(float grad_scale) {
  RETURN_IF_ERROR(Setup());
  const int64_t D = m_.plan.hidden;
  const float eps = m_.plan.eps;
  const int L = c_.num_hidden_layers;
  // Training keeps every layer's activations; evaluation reuses one set.
  std::vector<Acts> acts(backward_ ? L : 1);
  for (Acts& a : acts) RETURN_IF_ERROR(AllocActs(a));
  ASSIGN_OR_RETURN(float* x, buf_.Get(T_ * D));
  GLA_CUDA(cuda::EmbeddingGather(m_.W(m_.w->embeddings), D, ids_, T_, acts[0].x_in, s_));
  for (int l = 0; l < L; ++l) {
    Acts& a = acts[backward_ ? l : 0];
    float* out = backward_ && l + 1 < L ? acts[l + 1].x_in : x;
    RETURN_IF_ERROR(LayerForward(l, a, out));
    RETURN_IF_ERROR(Pause());
    if (!backward_ && l + 1 < L)
      GLA_CUDA(cudaMemcpyAsync(a.x_in, x, static_cast<size_t>(T_ * D) * 4, cudaMemcpyDeviceToDevice, s_));
  }
  ASSIGN_OR_RETURN(float* hf, buf_.Get(T_ * D));
  GLA_CUDA(cuda::RmsNorm(x, D, nullptr, m_.W(m_.w->norm), hf, D, T_, static_cast<int>(D), eps, s_));
  float* dhf = nullptr;
  if (backward_) {
    ASSIGN_OR_RETURN(dhf, buf_.Get(T_ * D));
  }
  RETURN_IF_ERROR(CrossEntropy(hf, grad_scale, dhf));
  if (!backward_) return absl::OkStatus();

  // Backward: final norm, layers in reverse, embedding.
  ASSIGN_OR_RETURN(float* dx, buf_.Get(T_ * D));
  GLA_CUDA(cuda::RmsNormBackward(x, D, m_.W(m_.w->norm), dhf, D, dx, D, /*accumulate_dx=*/false, m_.G(m_.w->norm), T_,
                                 static_cast<int>(D), eps, s_));
  for (int l = L - 1; l >= 0; --l) {
    RETURN_IF_ERROR(Pause());
    RETURN_IF_ERROR(LayerBackward(l, acts[l], dx));
  }
  if (float* ge = m_.G(m_.w->embeddings)) GLA_CUDA(cuda::EmbeddingScatterAdd(dx, D, ids_, T_, ge, s_));
  return absl::OkStatus();
}

int64_t CudaTrainModel::StepBytes(const GlaConfig& c, int64_t tokens, const LoraAdapter* lora) {
  const GlaLayerPlan p(c);
  const int64_t D = p.hidden, I = p.intermediate, KD = p.q_width, VD = p.o_width;
  const int64_t kdpg = p.k_width, vdpg = p.v_width, R = p.gate_rank;
  // Floats per token: every layer's activations (AllocActs, and the LoRA caches) ...
  int64_t layer = 4 * D + KD + 3 * kdpg + vdpg + (p.output_gate ? VD : 0) + R + 2 * VD + 3 * I;
  if (p.short_conv) layer += KD + kdpg + vdpg;
  int64_t max_r = 0, max_in = 0;
  if (lora != nullptr)
    for (const auto& pairs : lora->layers)
      for (const auto& p : pairs)
        if (p.has_value()) {
          layer += p->a.shape[0] + (lora->config.dropout > 0 ? p->a.shape[1] : 0);
          max_r = std::max(max_r, p->a.shape[0]);
          max_in = std::max(max_in, p->a.shape[1]);
        }
  // ... the residual stream, final norm and their gradients, the LoRA scratch, and the peak of one
  // layer's backward scratch (LayerBackward).
  const int64_t global = 4 * D + 2 + max_r + max_in;
  const int64_t backward = 3 * I + D + 3 * VD + KD + 4 * kdpg + vdpg + R + std::max(KD, vdpg);
  const int64_t per_token = layer * c.num_hidden_layers + global + backward;
  // The GLA workspace (a few floats per token and head) and the lm_head block are in the margin.
  const int64_t block = int64_t{1024} * c.vocab_size;
  return (4 * per_token * tokens + 4 * block) / 10 * 11;
}

absl::Status CudaTrainModel::CheckStepFits(int64_t tokens, const std::string& what) const {
  const Impl& m = *impl_;
  GLA_CUDA_RETURN_IF_ERROR(cudaSetDevice(m.device));
  size_t free = 0, total = 0;
  GLA_CUDA_RETURN_IF_ERROR(cudaMemGetInfo(&free, &total));
  const int64_t need = StepBytes(m.c, tokens, m.lora);
  // Serving shares the device and may grow its buffers: a step may take 90% of what is free now.
  const int64_t usable = static_cast<int64_t>(free / 10 * 9);
  if (need > usable)
    return absl::ResourceExhaustedError(absl::StrCat(what, " needs about ", need >> 20, " MiB of GPU memory for its "
                                                     "activations; ", free >> 20, " MiB of the GPU's ", total >> 20,
                                                     " MiB are free (at most 90% is used): lower batch_sequences or "
                                                     "sequence_length"));
  return absl::OkStatus();
}

int64_t CudaTrainModel::StepBytesHighWater() const {
  uint64_t high = 0;
  if (cudaMemPoolGetAttribute(impl_->pool, cudaMemPoolAttrUsedMemHigh, &high) != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  return static_cast<int64_t>(high);
}

CudaTrainModel::CudaTrainModel() : impl_(std::make_unique<Impl>()) {}
CudaTrainModel::~CudaTrainModel() {
  if (impl_ != nullptr) cudaSetDevice(impl_->device);
}

absl::StatusOr<std::unique_ptr<CudaTrainModel>> CudaTrainModel::Create(int device, const GlaConfig& config,
                                                                       const ModelWeights& weights,
                                                                       const LoraAdapter* lora) {
  RETURN_IF_ERROR(CudaTrainSupported(config));
  GLA_CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
  std::unique_ptr<CudaTrainModel> model(new CudaTrainModel());
  Impl& m = *model->impl_;
  m.device = device;
  m.c = config;
  m.plan = GlaLayerPlan(config);
  m.w = &weights;
  m.lora = lora;
  if (lora != nullptr) {
    m.lora_scale = static_cast<float>(lora->config.scale());
    m.dropout = static_cast<float>(lora->config.dropout);
  }
  GLA_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&m.stream, cudaStreamNonBlocking));
  GLA_CUBLAS_RETURN_IF_ERROR(cublasCreate(&m.blas));
  GLA_CUBLAS_RETURN_IF_ERROR(cublasSetStream(m.blas, m.stream));
  cudaMemPoolProps props = {};
  props.allocType = cudaMemAllocationTypePinned;
  props.location.type = cudaMemLocationTypeDevice;
  props.location.id = device;
  GLA_CUDA_RETURN_IF_ERROR(cudaMemPoolCreate(&m.pool, &props));
  uint64_t keep = UINT64_MAX;  // a step's buffers stay in the pool for the next step
  GLA_CUDA_RETURN_IF_ERROR(cudaMemPoolSetAttribute(m.pool, cudaMemPoolAttrReleaseThreshold, &keep));
  ASSIGN_OR_RETURN(m.sums, DeviceMemory::Allocate(2 * sizeof(double), "training sums"));

  // The weights (ForEachParam order), then the adapter; gradients and moments for what trains.
  const bool full = lora == nullptr;
  auto add = [&](const Weight& host, bool trains, bool decay) -> absl::Status {
    DeviceTensor t;
    t.n = static_cast<int64_t>(host.data.size());
    t.decay = decay;
    const size_t bytes = host.data.size() * sizeof(float);
    ASSIGN_OR_RETURN(t.value, DeviceMemory::Allocate(bytes, "training weights"));
    GLA_CUDA_RETURN_IF_ERROR(cudaMemcpy(t.w(), host.data.data(), bytes, cudaMemcpyHostToDevice));
    if (trains) {
      ASSIGN_OR_RETURN(t.grad, DeviceMemory::Allocate(bytes, "training gradients"));
      ASSIGN_OR_RETURN(t.m, DeviceMemory::Allocate(bytes, "AdamW moments"));
      ASSIGN_OR_RETURN(t.v, DeviceMemory::Allocate(bytes, "AdamW moments"));
      GLA_CUDA_RETURN_IF_ERROR(cudaMemset(t.m.get(), 0, bytes));
      GLA_CUDA_RETURN_IF_ERROR(cudaMemset(t.v.get(), 0, bytes));
    }
    m.index[&host] = m.tensors.size();
    m.tensors.push_back(std::move(t));
    return absl::OkStatus();
  };
  absl::Status status;
  ModelWeights& wmut = const_cast<ModelWeights&>(weights);  // ForEachParam walks mutable trees; nothing is written
  ForEachParam(wmut, wmut, [&](Weight& p, Weight&, bool decay) {
    if (status.ok()) status = add(p, full, decay);
  });
  RETURN_IF_ERROR(status);
  m.first_lora = m.tensors.size();
  if (lora != nullptr) {
    LoraAdapter& lmut = const_cast<LoraAdapter&>(*lora);
    ForEachParam(lmut, lmut, [&](Weight& p, Weight&, bool decay) {
      if (status.ok()) status = add(p, true, decay);
    });
    RETURN_IF_ERROR(status);
  }
  GLA_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
  return model;
}

absl::StatusOr<CudaTrainModel::StepResult> CudaTrainModel::ForwardBackward(
    std::span<const std::span<const int32_t>> windows, float grad_scale, uint64_t dropout_seed,
    const std::function<bool()>& yield) {
  Impl& m = *impl_;
  GLA_CUDA_RETURN_IF_ERROR(cudaSetDevice(m.device));
  for (const DeviceTensor& t : m.tensors)
    if (t.g() != nullptr) GLA_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(t.g(), 0, t.n * sizeof(float), m.stream));
  GLA_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(m.sums.get(), 0, 2 * sizeof(double), m.stream));
  {
    CudaTrainPass pass(m, windows, /*backward=*/true, dropout_seed, &yield);
    RETURN_IF_ERROR(pass.Run(grad_scale));
  }
  double* sumsq = m.sums.get<double>() + 1;
  for (const DeviceTensor& t : m.tensors)
    if (t.g() != nullptr) GLA_CUDA_RETURN_IF_ERROR(cuda::SumOfSquares(t.g(), t.n, sumsq, m.stream));
  double host[2];
  GLA_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(host, m.sums.get(), sizeof(host), cudaMemcpyDeviceToHost, m.stream));
  GLA_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(m.stream));
  return StepResult{host[0], host[1]};
}

absl::StatusOr<double> CudaTrainModel::LossSum(std::span<const std::span<const int32_t>> windows) {
  Impl& m = *impl_;
  GLA_CUDA_RETURN_IF_ERROR(cudaSetDevice(m.device));
  GLA_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(m.sums.get(), 0, sizeof(double), m.stream));
  {
    CudaTrainPass pass(m, windows, /*backward=*/false, 0);
    RETURN_IF_ERROR(pass.Run(1.f));
  }
  double loss = 0.0;
  GLA_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(&loss, m.sums.get(), sizeof(loss), cudaMemcpyDeviceToHost, m.stream));
  GLA_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(m.stream));
  return loss;
}

absl::Status CudaTrainModel::Update(const cpu::AdamWParams& params, float weight_decay, float grad_scale) {
  Impl& m = *impl_;
  GLA_CUDA_RETURN_IF_ERROR(cudaSetDevice(m.device));
  for (const DeviceTensor& t : m.tensors) {
    if (t.g() == nullptr) continue;
    cpu::AdamWParams p = params;
    p.weight_decay = t.decay ? weight_decay : 0.f;
    GLA_CUDA_RETURN_IF_ERROR(
        cuda::AdamWStep(t.w(), t.g(), t.m.get<float>(), t.v.get<float>(), t.n, p, grad_scale, m.stream));
  }
  GLA_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(m.stream));
  return absl::OkStatus();
}

namespace {

// Copies tensors[first..] (values or gradients) into the tensors of `tree` in ForEachParam order.
template <typename Tree>
absl::Status CopyOut(const std::vector<DeviceTensor>& tensors, size_t first, Tree* tree, bool grads) {
  if (tree == nullptr) return absl::OkStatus();
  absl::Status status;
  size_t i = first;
  ForEachParam(*tree, *tree, [&](Weight& p, Weight&, bool) {
    if (!status.ok()) return;
    if (i >= tensors.size() || tensors[i].n != static_cast<int64_t>(p.data.size())) {
      status = absl::InternalError("download: the host tree does not match the trained tensors");
      return;
    }
    const float* src = grads ? tensors[i].g() : tensors[i].w();
    if (src == nullptr) std::fill(p.data.begin(), p.data.end(), 0.0f);  // frozen: no gradient
    else status = CudaStatus(cudaMemcpy(p.data.data(), src, p.data.size() * 4, cudaMemcpyDeviceToHost), "download");
    ++i;
  });
  return status;
}

}  // namespace

absl::Status CudaTrainModel::DownloadParams(ModelWeights* weights, LoraAdapter* lora) const {
  GLA_CUDA_RETURN_IF_ERROR(cudaSetDevice(impl_->device));
  GLA_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(impl_->stream));
  RETURN_IF_ERROR(CopyOut(impl_->tensors, 0, weights, false));
  if (impl_->lora != nullptr) RETURN_IF_ERROR(CopyOut(impl_->tensors, impl_->first_lora, lora, false));
  return absl::OkStatus();
}

absl::Status CudaTrainModel::DownloadGrads(ModelWeights* weights, LoraAdapter* lora) const {
  GLA_CUDA_RETURN_IF_ERROR(cudaSetDevice(impl_->device));
  GLA_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(impl_->stream));
  RETURN_IF_ERROR(CopyOut(impl_->tensors, 0, weights, true));
  if (impl_->lora != nullptr) RETURN_IF_ERROR(CopyOut(impl_->tensors, impl_->first_lora, lora, true));
  return absl::OkStatus();
}

}  // namespace gla
