#include "engine/model/cuda_model.h"

#include <cuda_bf16.h>

#include <algorithm>
#include <cstdio>
#include <cmath>
#include <cstring>
#include <numeric>
#include <set>
#include <utility>

#include "kernels/activations.h"
#include "kernels/conv.h"
#include "kernels/gla.h"
#include "kernels/linear.h"
#include "kernels/linear_int8.h"
#include "kernels/norm.h"
#include "models/dtype.h"
#include "models/status_macros.h"

namespace gla {

namespace {

constexpr size_t kAlign = 256;
size_t AlignUp(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

// Plans one device arena for the weights: each piece is one or more host tensors concatenated
// (fused projections), stored as bf16 (matrices) or fp32 (norms, gate, conv: small, precision), or
// bytes made at load (FP8 rows and their scales), which the arena keeps until the upload.
class WeightArena {
 public:
  size_t Add(std::vector<const Weight*> parts, bool bf16) {
    size_t n = 0;
    for (const Weight* w : parts) n += w->data.size();
    return Place(Piece{std::move(parts), bf16, {}, 0}, n * (bf16 ? sizeof(__nv_bfloat16) : sizeof(float)));
  }
  size_t AddBytes(std::vector<char> bytes) {
    const size_t n = bytes.size();
    return Place(Piece{{}, false, std::move(bytes), 0}, n);
  }
  size_t size() const { return size_; }

  absl::Status Upload(char* device) const {
    std::vector<__nv_bfloat16> staging;
    for (const Piece& p : pieces_) {
      char* dst = device + p.offset;
      if (!p.bytes.empty())
        GLA_CUDA_RETURN_IF_ERROR(cudaMemcpy(dst, p.bytes.data(), p.bytes.size(), cudaMemcpyHostToDevice));
      for (const Weight* w : p.parts) {
        if (w->data.empty()) continue;
        if (p.bf16) {
          staging.resize(w->data.size());
          for (size_t i = 0; i < staging.size(); ++i) staging[i] = __float2bfloat16(w->data[i]);  // round to nearest even
          GLA_CUDA_RETURN_IF_ERROR(
              cudaMemcpy(dst, staging.data(), staging.size() * sizeof(__nv_bfloat16), cudaMemcpyHostToDevice));
          dst += staging.size() * sizeof(__nv_bfloat16);
        } else {
          GLA_CUDA_RETURN_IF_ERROR(cudaMemcpy(dst, w->data.data(), w->data.size() * sizeof(float), cudaMemcpyHostToDevice));
          dst += w->data.size() * sizeof(float);
        }
      }
    }
    return absl::OkStatus();
  }

 private:
  struct Piece {
    std::vector<const Weight*> parts;
    bool bf16;
    std::vector<char> bytes;
    size_t offset;
  };
  size_t Place(Piece piece, size_t bytes) {
    piece.offset = size_;
    size_ = AlignUp(size_ + bytes);
    pieces_.push_back(std::move(piece));
    return pieces_.back().offset;
  }
  std::vector<Piece> pieces_;
  size_t size_ = 0;
};

// A projection's parts (rows of [., K] each) as one-byte codes with a scale per row: FP8 E4M3 as
// CpuModel's kFp8 rounds them (QuantizeFp8E4M3PerRow), or INT8 as its kInt8 does
// (cpu::QuantizeInt8PerRow); a checkpoint's own FP8 or INT8 rows as they are. The rows' bytes, then the
// scales' floats.
struct ByteRows {
  std::vector<char> q, scale;
};
absl::StatusOr<ByteRows> QuantizeRows(std::initializer_list<const Weight*> parts, int64_t K, WeightFormat format,
                                      const std::string& what) {
  size_t n = 0;
  for (const Weight* w : parts) n += w->data.size();
  ByteRows out;
  out.q.resize(n);
  out.scale.resize(n / static_cast<size_t>(K) * sizeof(float));
  char* q = out.q.data();
  float* scale = reinterpret_cast<float*>(out.scale.data());
  for (const Weight* w : parts) {
    if (w->data.empty()) continue;  // a part this model does not have
    const int64_t rows = static_cast<int64_t>(w->data.size()) / K;
    bool finite = true;
    if (format == WeightFormat::kFp8 && w->fp8) {  // the checkpoint's own FP8 codes
      std::memcpy(q, w->fp8->q.data(), w->fp8->q.size());
      std::memcpy(scale, w->fp8->scale.data(), w->fp8->scale.size() * sizeof(float));
    } else if (format == WeightFormat::kFp8) {
      finite = QuantizeFp8E4M3PerRow(w->data.data(), rows, K, reinterpret_cast<uint8_t*>(q), scale);
    } else if (w->int8) {  // the checkpoint's own INT8 rows
      std::memcpy(q, w->int8->q.data(), w->int8->q.size());
      std::memcpy(scale, w->int8->scale.data(), w->int8->scale.size() * sizeof(float));
    } else {
      cpu::Int8Weight made;
      finite = cpu::QuantizeInt8PerRow(w->data.data(), rows, K, &made);
      if (finite) {
        std::memcpy(q, made.q.data(), made.q.size());
        std::memcpy(scale, made.scale.data(), made.scale.size() * sizeof(float));
      }
    }
    if (!finite)
      return absl::InvalidArgumentError(absl::StrCat(what, " holds a value that is not finite: --weights ",
                                                     WeightFormatName(format), " cannot quantize it"));
    q += rows * K;
    scale += rows;
  }
  return out;
}

// Whether this GPU and model can run their projections as one-byte rows of `format` (FP8 or INT8),
// and if not, why: an INT8 checkpoint is not rounded again to FP8, FP8 needs Hopper's FP8 tensor
// cores, and the one-byte kernels read rows in 16-byte chunks.
absl::Status CheckByteWeights(const GlaConfig& c, WeightFormat format, const cudaDeviceProp& prop) {
  const char* name = WeightFormatName(format);
  if (format == WeightFormat::kFp8 && c.quantization && c.quantization->kind == CheckpointQuantization::Kind::kInt8)
    return absl::InvalidArgumentError(
        "an INT8 checkpoint runs on the GPU as INT8 (--weights int8) or bf16 of its values (--weights native): FP8 "
        "would round them twice");
  if (format == WeightFormat::kFp8 && prop.major < 9)
    return absl::InvalidArgumentError(absl::StrCat("--weights fp8 needs FP8 tensor cores (Hopper, sm_90, on); ",
                                                   prop.name, " is sm_", prop.major, prop.minor));
  const GlaLayerPlan plan(c);
  for (int64_t K : {plan.hidden, plan.o_width, plan.intermediate})
    if (K % 16 != 0)
      return absl::InvalidArgumentError(absl::StrCat("--weights ", name, " on the GPU needs every projection's "
                                                     "input width to be a multiple of 16 (one-byte rows in 16-byte "
                                                     "chunks); ", K, " is not"));
  if (plan.in_proj.width % 4 != 0)  // the FP8 GEMM writes fp32 rows 16-byte aligned
    return absl::InvalidArgumentError(absl::StrCat("--weights ", name, " on the GPU needs the fused q|k|v|g|gk "
                                                   "input projection's width to be a multiple of 4; ",
                                                   plan.in_proj.width, " is not"));
  return absl::OkStatus();
}

}  // namespace

int DecodeBucket(int n) {
  for (int b : {1, 2, 4, 8, 16, 24, 32, 48, 64})
    if (n <= b) return b;
  return (n + 31) / 32 * 32;
}

CudaModel::~CudaModel() {
  for (auto& [b, g] : graphs_)
    if (g.exec != nullptr) cudaGraphExecDestroy(g.exec);
  if (cublas_ != nullptr) cublasDestroy(cublas_);
  if (stream_ != nullptr) {
    cudaStreamSynchronize(stream_);
    cudaStreamDestroy(stream_);
  }
}

absl::StatusOr<std::unique_ptr<CudaModel>> CudaModel::FromCheckpoint(Checkpoint ck, const CudaModelOptions& options) {
  if (options.max_tokens < 1 || options.max_logit_rows < 1)
    return absl::InvalidArgumentError("max_tokens and max_logit_rows must be at least 1");
  if (options.paths.byte_weight_kernel_rows < cuda::kSmallMTensorCores ||
      options.paths.byte_weight_kernel_rows > cuda::kSmallMByteTensorCores)
    return absl::InvalidArgumentError(absl::StrCat("byte_weight_kernel_rows must be in [", cuda::kSmallMTensorCores,
                                                   ", ", cuda::kSmallMByteTensorCores, "], not ",
                                                   options.paths.byte_weight_kernel_rows));
  for (const auto& [name, rows] : {std::pair{"medium_m_kernel_rows", options.paths.medium_m_kernel_rows},
                                   std::pair{"fp8_medium_m_kernel_rows", options.paths.fp8_medium_m_kernel_rows},
                                   std::pair{"int8_medium_m_kernel_rows", options.paths.int8_medium_m_kernel_rows}})
    if (rows < 0 || rows > cuda::kMediumMMaxRows)
      return absl::InvalidArgumentError(
          absl::StrCat(name, " must be in [0, ", cuda::kMediumMMaxRows, "], not ", rows));
  if (options.paths.fp8_made_rows_from < 0)
    return absl::InvalidArgumentError(
        absl::StrCat("fp8_made_rows_from must be 0 (never) or a row count, not ", options.paths.fp8_made_rows_from));
  if (options.paths.warp_rows_from < 0)
    return absl::InvalidArgumentError(
        absl::StrCat("warp_rows_from must be 0 (never) or a row count, not ", options.paths.warp_rows_from));
  if (options.paths.warp_rows_max_width < 1)
    return absl::InvalidArgumentError(
        absl::StrCat("warp_rows_max_width must be a row width (1 or more), not ", options.paths.warp_rows_max_width));
  int devices = 0;
  GLA_CUDA_RETURN_IF_ERROR(cudaGetDeviceCount(&devices));
  if (options.device < 0 || options.device >= devices)
    return absl::InvalidArgumentError(absl::StrCat("CUDA device ", options.device, " does not exist (", devices, " found)"));
  // The recurrent kernels move states 4 values at a time (16-byte fp32, 8-byte bf16 accesses): every
  // layer's state must start at a multiple of 4 values, and so must each head's row of dv values.
  const GlaConfig& c = ck.config;
  if (c.head_v_dim % 4 != 0 || c.StateFloatsPerLayer() % 4 != 0)
    return absl::InvalidArgumentError(absl::StrCat("the CUDA backend needs head_v_dim (", c.head_v_dim,
                                                   ") and a layer's state values (", c.StateFloatsPerLayer(),
                                                   ") to be multiples of 4; this model runs on --backend cpu"));
  GLA_CUDA_RETURN_IF_ERROR(cudaSetDevice(options.device));
  cudaDeviceProp prop{};
  GLA_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, options.device));
  // A pre-quantized checkpoint under --weights native runs in its own form where this GPU can (as on
  // the CPU backend): an INT8 checkpoint's rows as INT8, an FP8 one's as FP8 on Hopper's FP8 tensor
  // cores. Where it cannot (FP8 before sm_90, a width the one-byte kernels do not take), bf16 of its
  // values (scale x q), and the device line says which.
  CudaModelOptions run = options;
  std::string bf16_fallback_reason;
  if (run.weights == WeightFormat::kNative && c.quantization) {
    const WeightFormat own =
        c.quantization->kind == CheckpointQuantization::Kind::kInt8 ? WeightFormat::kInt8 : WeightFormat::kFp8;
    if (absl::Status own_form = CheckByteWeights(c, own, prop); own_form.ok()) {
      run.weights = own;
    } else {
      bf16_fallback_reason = std::string(own_form.message());
    }
  } else if (run.weights != WeightFormat::kNative) {
    RETURN_IF_ERROR(CheckByteWeights(c, run.weights, prop));
  }

  std::unique_ptr<CudaModel> m(new CudaModel());
  m->config_ = ck.config;
  m->layout_ = StateLayout(ck.config);
  m->plan_ = GlaLayerPlan(ck.config);
  m->options_ = run;
  m->bf16_fallback_reason_ = std::move(bf16_fallback_reason);
  m->device_name_ = absl::StrCat(prop.name, " (", prop.totalGlobalMem >> 30, " GiB, sm_", prop.major, prop.minor, ")");
  GLA_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&m->stream_, cudaStreamNonBlocking));
  GLA_CUBLAS_RETURN_IF_ERROR(cublasCreate(&m->cublas_));
  GLA_CUBLAS_RETURN_IF_ERROR(cublasSetStream(m->cublas_, m->stream_));
  RETURN_IF_ERROR(m->UploadWeights(ck));
  m->tokenizer_ = std::move(ck.tokenizer);
  RETURN_IF_ERROR(m->AllocateWorkspace());
  RETURN_IF_ERROR(m->SetUpPersistentDecode());
  return m;
}

absl::Status CudaModel::UploadWeights(Checkpoint& ck) {
  const GlaConfig& c = config_;
  const WeightFormat format = options_.weights;
  const bool bytes = format != WeightFormat::kNative;  // FP8 or INT8 rows with a scale per row
  const GlaLayerPlan& p = plan_;

  ModelWeights& w = ck.weights;
  WeightArena arena;
  // A projection: bf16 rows, or the FP8 / INT8 rows and their scales.
  struct MatrixOffsets {
    size_t rows = 0, scale = 0;
  };
  auto matrix = [&](std::initializer_list<const Weight*> parts, int64_t K,
                    const std::string& what) -> absl::StatusOr<MatrixOffsets> {
    if (!bytes) return MatrixOffsets{arena.Add(parts, true), 0};
    ASSIGN_OR_RETURN(ByteRows b, QuantizeRows(parts, K, format, what));
    const size_t rows = arena.AddBytes(std::move(b.q));
    return MatrixOffsets{rows, arena.AddBytes(std::move(b.scale))};
  };
  // gk_proj.1 stays fp32 for the gate kernel: under fp8 or int8, the values CpuModel computes with
  // (scale x code of each row; a checkpoint already in that format gives them as they are).
  const bool values_are_codes =
      c.quantization && (c.quantization->kind == CheckpointQuantization::Kind::kFp8E4M3) == (format == WeightFormat::kFp8);
  auto gate_factor = [&](const Weight& g, const std::string& what) -> absl::StatusOr<size_t> {
    if (!bytes || values_are_codes || g.data.empty()) return arena.Add({&g}, false);
    const int64_t K = p.gate_rank;
    ASSIGN_OR_RETURN(ByteRows b, QuantizeRows({&g}, K, format, what));
    std::vector<char> values(g.data.size() * sizeof(float));
    float* v = reinterpret_cast<float*>(values.data());
    const float* scale = reinterpret_cast<const float*>(b.scale.data());
    for (size_t i = 0; i < g.data.size(); ++i) {
      const uint8_t code = static_cast<uint8_t>(b.q[i]);
      v[i] = scale[i / static_cast<size_t>(K)] *
             (format == WeightFormat::kFp8 ? Float8E4M3ToFloat(code) : static_cast<float>(static_cast<int8_t>(code)));
    }
    return arena.AddBytes(std::move(values));
  };
  struct Offsets {
    size_t attn_norm, gk1, gk1_bias, q_conv, k_conv, v_conv, g_norm, mlp_norm;
    MatrixOffsets in_proj, o_proj, gate_up, down;
  };
  std::vector<Offsets> off(c.num_hidden_layers);
  const size_t emb = arena.Add({&w.embeddings}, true);
  const size_t lm = w.lm_head.empty() ? emb : arena.Add({&w.lm_head}, true);
  const size_t norm = arena.Add({&w.norm}, false);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const LayerWeights& lw = w.layers[l];
    Offsets& o = off[l];
    const std::string layer = absl::StrCat("layer ", l, "'s ");
    o.attn_norm = arena.Add({&lw.attn_norm}, false);
    ASSIGN_OR_RETURN(o.in_proj, matrix({&lw.q_proj, &lw.k_proj, &lw.v_proj, &lw.g_proj, &lw.gk_proj0}, p.hidden,
                                       layer + "q/k/v/g/gk_proj.0 weights"));  // g_proj empty without output gate
    ASSIGN_OR_RETURN(o.gk1, gate_factor(lw.gk_proj1, layer + "gk_proj.1 weight"));
    o.gk1_bias = arena.Add({&lw.gk_proj1_bias}, false);
    o.q_conv = arena.Add({&lw.q_conv}, false);
    o.k_conv = arena.Add({&lw.k_conv}, false);
    o.v_conv = arena.Add({&lw.v_conv}, false);
    o.g_norm = arena.Add({&lw.g_norm}, false);
    ASSIGN_OR_RETURN(o.o_proj, matrix({&lw.o_proj}, p.o_width, layer + "o_proj weight"));
    o.mlp_norm = arena.Add({&lw.mlp_norm}, false);
    ASSIGN_OR_RETURN(o.gate_up, matrix({&lw.gate_proj, &lw.up_proj}, p.hidden, layer + "gate/up_proj weights"));
    ASSIGN_OR_RETURN(o.down, matrix({&lw.down_proj}, p.intermediate, layer + "down_proj weight"));
  }
  const char* what = format == WeightFormat::kFp8    ? "the model weights (fp8)"
                     : format == WeightFormat::kInt8 ? "the model weights (int8)"
                                                     : "the model weights (bf16)";
  ASSIGN_OR_RETURN(weights_, DeviceMemory::Allocate(arena.size(), what));
  RETURN_IF_ERROR(arena.Upload(weights_.get<char>()));

  char* base = weights_.get<char>();
  auto f32 = [&](size_t o) { return reinterpret_cast<const float*>(base + o); };
  auto b16 = [&](size_t o) { return reinterpret_cast<const __nv_bfloat16*>(base + o); };
  auto mat = [&](const MatrixOffsets& o) {
    Matrix m;
    if (format == WeightFormat::kFp8) m.fp8 = {reinterpret_cast<const uint8_t*>(base + o.rows), f32(o.scale)};
    else if (format == WeightFormat::kInt8) m.int8 = {reinterpret_cast<const int8_t*>(base + o.rows), f32(o.scale)};
    else m.bf16 = b16(o.rows);
    return m;
  };
  embeddings_ = b16(emb);
  lm_head_.bf16 = b16(lm);
  final_norm_ = f32(norm);
  layers_.resize(c.num_hidden_layers);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const Offsets& o = off[l];
    const bool conv = plan_.short_conv;
    layers_[l] = Layer{f32(o.attn_norm), f32(o.gk1), f32(o.gk1_bias), conv ? f32(o.q_conv) : nullptr,
                       conv ? f32(o.k_conv) : nullptr, conv ? f32(o.v_conv) : nullptr, f32(o.g_norm),
                       f32(o.mlp_norm), mat(o.in_proj), mat(o.o_proj), mat(o.gate_up), mat(o.down)};
  }
  return absl::OkStatus();
}

absl::Status CudaModel::AllocateWorkspace() {
  const GlaConfig& c = config_;
  const size_t N = static_cast<size_t>(options_.max_tokens), R = static_cast<size_t>(options_.max_logit_rows);
  const GlaLayerPlan& p = plan_;
  const size_t D = p.hidden, I = p.intermediate, V = c.vocab_size;
  // Inputs of one step: tokens [N] | slots [N] | cu_all [N+1] | cu_prefill [N+1] | row_ids [max(N, R)].
  input_ints_ = N + N + (N + 1) + (N + 1) + std::max(N, R);
  size_t bytes = 0;
  auto take = [&](size_t n) {
    const size_t o = bytes;
    bytes = AlignUp(bytes + n);
    return o;
  };
  const size_t inputs = take(input_ints_ * sizeof(int32_t));
  const size_t x = take(N * D * sizeof(float));
  const size_t h = take(std::max(N, R) * D * sizeof(__nv_bfloat16));
  const size_t proj = take(N * p.in_proj.width * sizeof(float));
  const size_t conv = take(p.short_conv ? N * p.conv_width * sizeof(float) : 0);
  const size_t gk = take(N * p.k_width * sizeof(float));
  const size_t o = take(N * p.o_width * sizeof(float));
  const size_t og = take(N * p.o_width * sizeof(__nv_bfloat16));
  const size_t gu = take(N * 2 * I * sizeof(__nv_bfloat16));
  const size_t act = take(N * I * sizeof(__nv_bfloat16));
  const size_t logits = take(std::max(N, R) * V * sizeof(float));
  // FP8 weights: the widest projection input quantized per row (the FP8 GEMM wants 16-byte rows).
  fp8_x_stride_ = uses_fp8_weights() ? static_cast<int64_t>((std::max({D, I, static_cast<size_t>(p.o_width)}) + 15) / 16 * 16) : 0;
  const size_t fp8_x = take(N * static_cast<size_t>(fp8_x_stride_));
  const size_t fp8_x_scale = take(uses_fp8_weights() ? N * sizeof(float) : 0);
  // INT8 weights: the largest projection dequantized to bf16.
  const size_t int8_dequant = take(
      uses_int8_weights() ? std::max({p.in_proj.width * D, D * static_cast<size_t>(p.o_width), 2 * I * D, D * I}) *
                                sizeof(__nv_bfloat16)
                          : 0);
  // The chunkwise prefill kernel's scratch: its plan depends on how many sequences share a step
  // (few long ones are cut into segments run in parallel), so size it for the largest of them.
  chunk_workspace_bytes_ = 0;
  if (options_.prefill_chunk_segments < 0 || options_.prefill_chunk_segments > kChunkMaxSegments ||
      options_.prefill_chunk_split_prep < 0 || options_.prefill_chunk_split_prep > 2)
    return absl::InvalidArgumentError(absl::StrCat("chunkwise prefill plan: segments ", options_.prefill_chunk_segments,
                                                   " (0-", kChunkMaxSegments, ") or prep split ",
                                                   options_.prefill_chunk_split_prep, " (0-2) out of range"));
  if (options_.chunked_prefill && cuda::GlaChunkHeadDimSupported(p.head_k) && p.head_v % 4 == 0) {
    GlaPrefillCudaParams shape = p.PrefillCuda(GlaRows{}, 0, nullptr, CudaStateSlots(), nullptr);
    shape.plan_segments = options_.prefill_chunk_segments;
    shape.plan_split_prep = options_.prefill_chunk_split_prep;
    // Few sequences may be cut into segments (extra state buffers); beyond that the need grows
    // with the count (per-chunk decays), so the largest is at one of the small counts or at N.
    std::vector<int> counts;
    for (int seqs = 1; seqs <= static_cast<int>(std::min<size_t>(N, 256)); ++seqs) counts.push_back(seqs);
    counts.push_back(static_cast<int>(N));
    for (int seqs : counts) {
      shape.num_seqs = seqs;
      chunk_workspace_bytes_ = std::max(chunk_workspace_bytes_, cuda::GlaPrefillChunkWorkspaceBytes(shape, static_cast<int>(N)));
    }
  }
  const size_t chunk = take(chunk_workspace_bytes_);
  ASSIGN_OR_RETURN(workspace_, DeviceMemory::Allocate(bytes, "the activation workspace"));
  ASSIGN_OR_RETURN(host_inputs_, PinnedMemory::Allocate(input_ints_ * sizeof(int32_t), "step inputs"));
  // cuBLAS gets its own workspace so no allocation happens inside a captured graph.
  constexpr size_t kCublasWorkspace = 32u << 20;
  ASSIGN_OR_RETURN(cublas_workspace_, DeviceMemory::Allocate(kCublasWorkspace, "the cuBLAS workspace"));
  GLA_CUBLAS_RETURN_IF_ERROR(cublasSetWorkspace(cublas_, cublas_workspace_.get(), kCublasWorkspace));
  if (uses_fp8_weights()) {
    const cublasStatus_t lt = fp8_gemm_.Init(cublas_workspace_.get(), kCublasWorkspace);
    if (lt == CUBLAS_STATUS_NOT_SUPPORTED)
      return absl::FailedPreconditionError(absl::StrCat(
          "--weights fp8 needs cuBLASLt 12.9 or newer (FP8 GEMMs with a scale per row); this one is ", cublasLtGetVersion()));
    GLA_CUBLAS_RETURN_IF_ERROR(lt);
  }
  if (options_.paths.tuned_bf16_gemms && options_.weights == WeightFormat::kNative) {
    GLA_CUBLAS_RETURN_IF_ERROR(bf16_gemm_.Init(cublas_workspace_.get(), kCublasWorkspace));
    if (!options_.gemm_tuning_cache.empty()) {
      ASSIGN_OR_RETURN(GemmTuningCache cache, GemmTuningCache::Open(options_.gemm_tuning_cache,
                                                                    cuda::TunedBf16Gemm::DeviceKey(options_.device)));
      gemm_cache_ = std::move(cache);
    }
  }

  char* base = workspace_.get<char>();
  d_inputs_ = reinterpret_cast<int32_t*>(base + inputs);
  d_tokens_ = d_inputs_;
  d_slots_ = d_tokens_ + N;
  d_cu_all_ = d_slots_ + N;
  d_cu_prefill_ = d_cu_all_ + N + 1;
  d_row_ids_ = d_cu_prefill_ + N + 1;
  x_ = reinterpret_cast<float*>(base + x);
  h_ = reinterpret_cast<__nv_bfloat16*>(base + h);
  proj_ = reinterpret_cast<float*>(base + proj);
  conv_ = p.short_conv ? reinterpret_cast<float*>(base + conv) : nullptr;
  gk_ = reinterpret_cast<float*>(base + gk);
  o_ = reinterpret_cast<float*>(base + o);
  og_ = reinterpret_cast<__nv_bfloat16*>(base + og);
  gate_up_ = reinterpret_cast<__nv_bfloat16*>(base + gu);
  act_ = reinterpret_cast<__nv_bfloat16*>(base + act);
  logits_ = reinterpret_cast<float*>(base + logits);
  chunk_workspace_ = chunk_workspace_bytes_ > 0 ? base + chunk : nullptr;
  fp8_x_ = uses_fp8_weights() ? reinterpret_cast<uint8_t*>(base + fp8_x) : nullptr;
  fp8_x_scale_ = uses_fp8_weights() ? reinterpret_cast<float*>(base + fp8_x_scale) : nullptr;
  int8_dequant_ = uses_int8_weights() ? reinterpret_cast<__nv_bfloat16*>(base + int8_dequant) : nullptr;
  return absl::OkStatus();
}

absl::Status CudaModel::SetUpPersistentDecode() {
  const int tile_bytes = options_.persistent_tile_bytes;
  if (!cuda::PersistentTilesInFlightValid(options_.persistent_tiles_in_flight) ||
      !cuda::PersistentTileBytesValid(tile_bytes) || !cuda::PersistentBlocksValid(options_.persistent_blocks))
    return absl::InvalidArgumentError(absl::StrCat(
        "persistent decode: tiles in flight ", options_.persistent_tiles_in_flight, " (0-16), tile bytes ", tile_bytes,
        " (0, or 2048-98304 in whole KiB) or blocks ", options_.persistent_blocks, " (0-1024) out of range"));
  if (!options_.persistent_decode || plan_.short_conv) return absl::OkStatus();
  const int sms = cuda::PersistentDecodeBlocks(options_.device);
  if (sms == 0) return absl::OkStatus();
  const int blocks = options_.persistent_blocks > 0 ? std::min(options_.persistent_blocks, sms) : sms;
  const GlaLayerPlan& p = plan_;
  const int L = config_.num_hidden_layers;
  // The projections as the kernel streams them: bf16 rows, or FP8 / INT8 rows with their scales.
  auto rows = [](const Matrix& m) -> const void* {
    return m.is_fp8() ? static_cast<const void*>(m.fp8.q) : m.is_int8() ? static_cast<const void*>(m.int8.q) : m.bf16;
  };
  auto scales = [](const Matrix& m) { return m.is_fp8() ? m.fp8.scale : m.is_int8() ? m.int8.scale : nullptr; };
  std::vector<cuda::PersistentDecodeLayer> layers(L);
  for (int l = 0; l < L; ++l) {
    const Layer& w = layers_[l];
    layers[l] = {w.attn_norm,       rows(w.in_proj), w.gk1,           w.gk1_bias,     w.g_norm,
                 rows(w.o_proj),    w.mlp_norm,      rows(w.gate_up), rows(w.down),   layout_.S_offset(l),
                 scales(w.in_proj), scales(w.o_proj), scales(w.gate_up), scales(w.down)};
  }
  const size_t layer_bytes = AlignUp(layers.size() * sizeof(cuda::PersistentDecodeLayer));
  // After the tables: the grid barrier's counter, the batched kernel's sums of o's squares, then the
  // tagged words (persistent_tagged_exchange; for the largest batch; zeroed here, once).
  const size_t sumsq_bytes =
      AlignUp(sizeof(float) * cuda::kPersistentMaxBatch * config_.num_heads * (config_.head_v_dim / 16 + 1));
  if (options_.persistent_tagged_exchange < 0 || options_.persistent_tagged_exchange > 3)
    return absl::InvalidArgumentError(
        absl::StrCat("persistent decode: tagged exchange ", options_.persistent_tagged_exchange, " (0-3) out of range"));
  const size_t tagged_bytes =
      options_.persistent_tagged_exchange > 0
          ? AlignUp(sizeof(unsigned long long) *
                    std::max(cuda::kPersistentMaxBatch * (static_cast<size_t>(p.hidden) + static_cast<size_t>(p.intermediate)),
                             static_cast<size_t>(p.hidden) + static_cast<size_t>(p.intermediate) +
                                 static_cast<size_t>(p.in_proj.width)))
          : 0;
  ASSIGN_OR_RETURN(persistent_mem_, DeviceMemory::Allocate(layer_bytes + kAlign + sumsq_bytes + tagged_bytes,
                                                           "the persistent decode kernel's tables"));
  if (tagged_bytes > 0)
    GLA_CUDA_RETURN_IF_ERROR(cudaMemset(persistent_mem_.get<char>() + layer_bytes + kAlign + sumsq_bytes, 0, tagged_bytes));
  tagged_words_written_ = static_cast<int64_t>(tagged_bytes / sizeof(unsigned long long));  // all zero
  GLA_CUDA_RETURN_IF_ERROR(cudaMemcpy(persistent_mem_.get<char>(), layers.data(),
                                      layers.size() * sizeof(cuda::PersistentDecodeLayer), cudaMemcpyHostToDevice));
  cuda::PersistentDecodeParams q = p.PersistentDecodeCuda(L);
  q.layers = persistent_mem_.get<cuda::PersistentDecodeLayer>();
  q.weights = uses_fp8_weights()    ? cuda::PersistentWeights::kFp8
              : uses_int8_weights() ? cuda::PersistentWeights::kInt8
                                    : cuda::PersistentWeights::kBf16;
  q.final_norm = final_norm_;
  q.lm_head = lm_head_.bf16;
  q.vocab = config_.vocab_size;
  q.slots = d_slots_;
  q.x = x_;
  q.proj = proj_;
  q.o = o_;
  q.act = act_;
  q.logits = logits_;
  q.barrier = reinterpret_cast<unsigned*>(persistent_mem_.get<char>() + layer_bytes);
  q.o_sumsq = reinterpret_cast<float*>(persistent_mem_.get<char>() + layer_bytes + kAlign);
  q.blocks = blocks;
  q.tile_bytes = tile_bytes;
  q.early_state_loads = options_.persistent_early_state_loads;
  // Tagged exchanges where asked for and the shapes and grid allow them; otherwise grid barriers.
  if (tagged_bytes > 0 && cuda::PersistentTaggedExchangeSupported(q)) {
    q.tagged = reinterpret_cast<unsigned long long*>(persistent_mem_.get<char>() + layer_bytes + kAlign + sumsq_bytes);
    q.tagged_proj = options_.persistent_tagged_exchange >= 2;
    q.tagged_residual = options_.persistent_tagged_exchange != 3;
  }
  q.state.base = x_;  // any aligned device pointer for the shape check; each step sets its states
  if (!cuda::PersistentDecodeShapesSupported(q)) {
    persistent_mem_ = DeviceMemory();
    return absl::OkStatus();
  }
  // The largest batch up to the option's whose input rows and stages fit the batched kernel's
  // shared memory (the layout grows with the batch).
  persistent_max_batch_ = 1;
  for (int b = std::min(options_.persistent_decode_max_batch, cuda::kPersistentMaxBatch); b >= 2; --b) {
    q.batch = b;
    if (cuda::PersistentDecodeShapesSupported(q)) {
      persistent_max_batch_ = b;
      break;
    }
  }
  q.batch = 1;
  q.state = CudaStateSlots();
  persistent_ = q;
  return absl::OkStatus();
}

int64_t CudaModel::workspace_bytes() const {
  return static_cast<int64_t>(workspace_.bytes() + cublas_workspace_.bytes() + host_inputs_.bytes());
}

absl::Status CudaModel::Forward(std::span<const Segment> segments, const States& states, std::vector<int>* first_row) {
  const GlaConfig& c = config_;
  // Validate everything before enqueuing anything.
  int rows = 0, logit_rows = 0;
  for (size_t s = 0; s < segments.size(); ++s) {
    const Segment& seg = segments[s];
    if (seg.tokens.empty()) return absl::InvalidArgumentError(absl::StrCat("segment ", s, " has no tokens"));
    if (seg.slot < 0) return absl::InvalidArgumentError(absl::StrCat("segment ", s, " has no state slot"));
    for (int32_t id : seg.tokens)
      if (id < 0 || id >= c.vocab_size)
        return absl::InvalidArgumentError(absl::StrCat("token id ", id, " is outside the vocabulary [0, ", c.vocab_size, ")"));
    rows += static_cast<int>(std::min<size_t>(seg.tokens.size(), 1u << 30));
    logit_rows += seg.logits == Logits::kAll ? static_cast<int>(seg.tokens.size()) : seg.logits == Logits::kLast ? 1 : 0;
    if (rows > options_.max_tokens)
      return absl::InvalidArgumentError(absl::StrCat("a step of more than ", options_.max_tokens, " tokens"));
  }
  if (logit_rows > options_.max_logit_rows)
    return absl::InvalidArgumentError(absl::StrCat("a step wants ", logit_rows, " rows of logits; at most ",
                                                   options_.max_logit_rows));
  {
    std::vector<int> slots;
    for (const Segment& seg : segments) slots.push_back(seg.slot);
    std::sort(slots.begin(), slots.end());
    if (std::adjacent_find(slots.begin(), slots.end()) != slots.end())
      return absl::InvalidArgumentError("two segments of one step share a state slot");
  }
  first_row->assign(segments.size(), -1);
  if (segments.empty()) return absl::OkStatus();

  // The previous step's input copy must be done before the pinned buffer is rewritten (and before
  // an adapter leaves the cache below).
  GLA_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  ++steps_;
  step_adapters_.clear();
  std::vector<const DeviceAdapter*> seg_adapter(segments.size(), nullptr);
  int max_r = 0;
  for (size_t s = 0; s < segments.size(); ++s) {
    if (segments[s].adapter == nullptr) continue;
    auto a = UseAdapter(segments[s].adapter);
    if (!a.ok())  // keeps the code: a full GPU is RESOURCE_EXHAUSTED, an adapter of another model INVALID_ARGUMENT
      return absl::Status(a.status().code(), absl::StrCat("segment ", s, "'s adapter: ", a.status().message()));
    seg_adapter[s] = *a;
    max_r = std::max(max_r, (*a)->max_r);
  }
  if (max_r > lora_scratch_r_) {
    lora_scratch_ = DeviceMemory();  // freed first (and recorded so) in case the larger one does not fit
    lora_scratch_r_ = 0;
    ASSIGN_OR_RETURN(lora_scratch_, DeviceMemory::Allocate(static_cast<size_t>(options_.max_tokens) * max_r *
                                                               (sizeof(float) + sizeof(__nv_bfloat16)),
                                                           "the LoRA scratch"));
    lora_scratch_r_ = max_r;
  }
  while (adapters_.size() > kMaxCachedAdapters) {  // least recently used first; never this step's
    auto lru = adapters_.end();
    for (auto it = adapters_.begin(); it != adapters_.end(); ++it)
      if (it->second.last_step != steps_ && (lru == adapters_.end() || it->second.last_step < lru->second.last_step))
        lru = it;
    if (lru == adapters_.end()) break;
    adapters_.erase(lru);
  }

  // Row order inside the step: single-token segments first (the decode kernel takes rows [0, Nd)),
  // then the multi-token ones (the prefill kernel, packed with cu_seqlens).
  std::vector<int> order(segments.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_partition(order.begin(), order.end(), [&](int i) { return segments[i].tokens.size() == 1; });
  int decode_rows = 0;
  while (decode_rows < static_cast<int>(order.size()) && segments[order[decode_rows]].tokens.size() == 1) ++decode_rows;

  const size_t N = static_cast<size_t>(options_.max_tokens);
  int32_t* h_tokens = host_inputs_.get<int32_t>();
  int32_t* h_slots = h_tokens + N;
  int32_t* h_cu_all = h_slots + N;
  int32_t* h_cu_prefill = host_cu_prefill();
  int32_t* h_row_ids = h_cu_prefill + N + 1;

  std::vector<int> seg_row(segments.size());
  int r = 0;
  h_cu_all[0] = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    const Segment& seg = segments[order[i]];
    seg_row[order[i]] = r;
    std::memcpy(h_tokens + r, seg.tokens.data(), seg.tokens.size() * sizeof(int32_t));
    h_slots[i] = seg.slot;
    r += static_cast<int>(seg.tokens.size());
    h_cu_all[i + 1] = r;
  }
  const int num_seqs = static_cast<int>(segments.size());
  for (int i = decode_rows; i <= num_seqs; ++i) h_cu_prefill[i - decode_rows] = h_cu_all[i] - decode_rows;
  // Adapter rows in row order, neighbours with one adapter merged (fewer, larger GEMMs).
  for (size_t i = 0; i < order.size(); ++i) {
    const DeviceAdapter* a = seg_adapter[order[i]];
    if (a == nullptr) continue;
    const int row0 = seg_row[order[i]], n = static_cast<int>(segments[order[i]].tokens.size());
    if (!step_adapters_.empty() && step_adapters_.back().adapter == a &&
        step_adapters_.back().row0 + step_adapters_.back().rows == row0)
      step_adapters_.back().rows += n;
    else
      step_adapters_.push_back({row0, n, a});
  }

  // Decode-only steps replay a captured graph: rows padded to the bucket, logits for every row.
  const bool decode_only = decode_rows == num_seqs;
  bool all_last = true;
  for (const Segment& seg : segments) all_last = all_last && seg.logits != Logits::kAll;
  // A decode step through the persistent kernel is three launches (gather, clear, kernel): it runs
  // eagerly (no graph to capture a cooperative launch into). Batches of 2 and more: every sequence's
  // logits or none (the kernel's logit rows are its sequences).
  bool same_logits = true;
  for (const Segment& seg : segments) same_logits = same_logits && seg.logits == segments.front().logits;
  const bool persistent = uses_persistent_decode() && decode_only && all_last && step_adapters_.empty() &&
                          (num_seqs == 1 || (num_seqs <= persistent_max_batch_ && same_logits));
  if (!persistent && options_.cuda_graphs && states.scratch_slot >= 0 && decode_only && all_last && step_adapters_.empty() &&
      DecodeBucket(num_seqs) <= options_.max_tokens && DecodeBucket(num_seqs) <= options_.max_logit_rows) {
    const int bucket = DecodeBucket(num_seqs);
    for (int i = num_seqs; i < bucket; ++i) {
      h_tokens[i] = 0;
      h_slots[i] = states.scratch_slot;
      h_cu_all[i + 1] = i + 1;
    }
    for (int i = 0; i < bucket; ++i) h_row_ids[i] = i;
    for (int i = 0; i < num_seqs; ++i)
      if (segments[i].logits != Logits::kNone) (*first_row)[i] = seg_row[i];
    GLA_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(d_inputs_, h_tokens, input_ints_ * sizeof(int32_t),
                                             cudaMemcpyHostToDevice, stream_));
    return RunGraph(bucket, states);
  }

  // Eager step: the rows whose logits are wanted, in segment order.
  int lr = 0;
  for (size_t s = 0; s < segments.size(); ++s) {
    const Segment& seg = segments[s];
    if (seg.logits == Logits::kNone) continue;
    (*first_row)[s] = lr;
    const int T = static_cast<int>(seg.tokens.size());
    for (int t = seg.logits == Logits::kAll ? 0 : T - 1; t < T; ++t) h_row_ids[lr++] = seg_row[s] + t;
  }
  // Eager steps tune only at a power-of-two row count or the full step budget (a long prompt's
  // chunks): a bounded set, where prompts of every length would each cost a tuning.
  if ((rows & (rows - 1)) == 0 || rows == options_.max_tokens) RETURN_IF_ERROR(TuneBf16Gemms(rows));
  GLA_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(d_inputs_, h_tokens, input_ints_ * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
  return Enqueue(rows, decode_rows, num_seqs, lr, states);
}

absl::Status CudaModel::RunGraph(int bucket, const States& states) {
  Graph& g = graphs_[bucket];
  if (g.exec != nullptr && (g.pool.base != states.pool.base || g.pool.slot_stride != states.pool.slot_stride ||
                            g.pool.bf16 != states.pool.bf16)) {
    cudaGraphExecDestroy(g.exec);
    g.exec = nullptr;
  }
  if (g.exec == nullptr) {
    if (uses_fp8_weights() && Fp8GemmTakes(bucket)) RETURN_IF_ERROR(PrepareFp8Plans(bucket));
    RETURN_IF_ERROR(TuneBf16Gemms(bucket));
    GLA_CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    const absl::Status enqueued = Enqueue(bucket, bucket, bucket, bucket, states);
    cudaGraph_t graph = nullptr;
    const cudaError_t ended = cudaStreamEndCapture(stream_, &graph);
    RETURN_IF_ERROR(enqueued);
    GLA_CUDA_RETURN_IF_ERROR(ended);
    const cudaError_t inst = cudaGraphInstantiate(&g.exec, graph, 0);
    cudaGraphDestroy(graph);
    GLA_CUDA_RETURN_IF_ERROR(inst);
    g.pool = states.pool;
  }
  GLA_CUDA_RETURN_IF_ERROR(cudaGraphLaunch(g.exec, stream_));
  return absl::OkStatus();
}

absl::Status CudaModel::PrepareFp8Plans(int rows) {
  const GlaLayerPlan& p = plan_;
  const int64_t D = p.hidden, I = p.intermediate, P = p.in_proj.width, Vd = p.o_width;
  const Layer& w = layers_.front();  // every layer's matrices have the same shapes and alignment
  const cuda::Fp8Input in{fp8_x_, fp8_x_scale_, fp8_x_stride_};
  const struct {
    const Matrix& m;
    int64_t N, K;
    void* y;
    bool y_bf16;
    int64_t y_stride;
  } gemms[] = {{w.in_proj, P, D, proj_, false, P},
               {w.o_proj, D, Vd, x_, false, D},
               {w.gate_up, 2 * I, D, gate_up_, true, 2 * I},
               {w.down, D, I, x_, false, D}};
  for (const auto& g : gemms)
    GLA_CUBLAS_RETURN_IF_ERROR(fp8_gemm_.Prepare(in, g.m.fp8, g.N, g.K, g.y, g.y_bf16, g.y_stride, rows));
  return absl::OkStatus();
}

absl::Status CudaModel::TuneBf16GemmsForEveryStepSize(int max_decode_rows) {
  std::set<int64_t> sizes;
  for (int n = 1; n <= max_decode_rows; ++n) sizes.insert(DecodeBucket(n));
  for (int64_t r = 1; r <= options_.max_tokens; r *= 2) sizes.insert(r);
  sizes.insert(options_.max_tokens);
  for (const int64_t rows : sizes)
    if (rows <= options_.max_tokens) RETURN_IF_ERROR(TuneBf16Gemms(rows));  // skips what it does not tune
  return absl::OkStatus();
}

absl::Status CudaModel::TuneBf16Gemms(int64_t rows) {
  // Only where Project gives the rows to cuBLAS (bf16 weights, more rows than the kernels take).
  if (!options_.paths.tuned_bf16_gemms || options_.weights != WeightFormat::kNative || layers_.empty() ||
      layers_.front().in_proj.bf16 == nullptr || rows <= cuda::kSmallM || rows <= options_.paths.medium_m_kernel_rows)
    return absl::OkStatus();
  const GlaLayerPlan& p = plan_;
  const int64_t D = p.hidden, I = p.intermediate, P = p.in_proj.width, Vd = p.o_width;
  const struct {
    const __nv_bfloat16* x;
    cuda::Bf16GemmShape shape;
    void* y;
    const Matrix Layer::*matrix;
  } gemms[] = {{h_, {P, D, D, P, false, false}, proj_, &Layer::in_proj},
               {og_, {D, Vd, Vd, D, false, true}, x_, &Layer::o_proj},
               {h_, {2 * I, D, D, 2 * I, true, false}, gate_up_, &Layer::gate_up},
               {act_, {D, I, I, D, false, true}, x_, &Layer::down}};
  std::vector<const __nv_bfloat16*> weights(layers_.size());
  for (const auto& g : gemms) {
    if (bf16_gemm_.TunedAt(g.shape, rows)) continue;
    const GemmTuningKey key{g.shape.N, g.shape.K, g.shape.x_stride, g.shape.y_stride, g.shape.y_bf16,
                            g.shape.accumulate, rows};
    // A choice an earlier process made on this GPU and library (options.gemm_tuning_cache): taken
    // without timing, unless cuBLASLt no longer takes it (then timed again and replaced).
    if (const GemmTuningChoice* cached = gemm_cache_ ? gemm_cache_->Find(key) : nullptr) {
      cuda::TunedBf16Gemm::Choice choice;
      choice.use_default = cached->use_default;
      std::copy(cached->algo.begin(), cached->algo.end(), choice.algo);
      const cublasStatus_t restored = bf16_gemm_.Restore(g.shape, rows, choice);
      if (restored == CUBLAS_STATUS_SUCCESS) {
        ++gemm_choices_from_cache_;
        continue;
      }
      if (restored != CUBLAS_STATUS_NOT_SUPPORTED && restored != CUBLAS_STATUS_INVALID_VALUE)
        GLA_CUBLAS_RETURN_IF_ERROR(restored);
    }
    for (size_t l = 0; l < layers_.size(); ++l) weights[l] = (layers_[l].*g.matrix).bf16;
    const cublasStatus_t st = bf16_gemm_.Tune(cublas_, g.shape, rows, g.x, weights.data(),
                                              static_cast<int>(weights.size()), g.y, stream_);
    // Operands the cuBLASLt path does not take (odd widths): the default runs them, as before.
    if (st == CUBLAS_STATUS_INVALID_VALUE) continue;
    GLA_CUBLAS_RETURN_IF_ERROR(st);
    cuda::TunedBf16Gemm::Choice made;
    if (gemm_cache_ && bf16_gemm_.ChoiceAt(g.shape, rows, &made)) {
      GemmTuningChoice record;
      record.use_default = made.use_default;
      std::copy(std::begin(made.algo), std::end(made.algo), record.algo.begin());
      // A cache that cannot be written costs the next process a tuning, not this step: said once.
      if (const absl::Status written = gemm_cache_->Add(key, record); !written.ok() && !gemm_cache_write_failed_) {
        gemm_cache_write_failed_ = true;
        std::fprintf(stderr, "GEMM tuning cache not written (choices kept for this process only): %s\n",
                     std::string(written.message()).c_str());
      }
    }
  }
  return absl::OkStatus();
}

absl::Status CudaModel::Project(const __nv_bfloat16* x, int64_t x_stride, const Matrix& w, int64_t N, int64_t K,
                               void* y, bool y_bf16, int64_t y_stride, int64_t M, float beta) {
  if (w.is_fp8()) {
    // Decode-sized: the FP8 rows widened in registers against the bf16 inputs (M <= 16 by default);
    // then the medium-M kernel (to 32 rows by default). Larger: the inputs quantized per row, then
    // the FP8 tensor cores.
    if (M <= cuda::kSmallM) {
      GLA_CUDA_RETURN_IF_ERROR(cuda::LinearSmallMFp8(x, x_stride, w.fp8, N, K, y, y_bf16, y_stride, M, beta, stream_));
    } else if (M <= options_.paths.byte_weight_kernel_rows) {
      GLA_CUDA_RETURN_IF_ERROR(
          cuda::LinearSmallMFp8TensorCores(x, x_stride, w.fp8, N, K, y, y_bf16, y_stride, M, beta, stream_));
    } else if (!Fp8GemmTakes(M)) {  // within fp8_medium_m_kernel_rows
      GLA_CUDA_RETURN_IF_ERROR(
          cuda::LinearMediumMFp8(x, x_stride, w.fp8, N, K, y, y_bf16, y_stride, M, beta, stream_));
    } else {
      GLA_CUDA_RETURN_IF_ERROR(
          cuda::QuantizeRowsFp8(x, x_stride, M, K, fp8_x_, fp8_x_stride_, fp8_x_scale_, stream_, RowFormFor(M, K)));
      GLA_CUBLAS_RETURN_IF_ERROR(fp8_gemm_.Run(cuda::Fp8Input{fp8_x_, fp8_x_scale_, fp8_x_stride_}, w.fp8, N, K, y,
                                               y_bf16, y_stride, M, beta, stream_));
    }
    return absl::OkStatus();
  }
  if (w.is_int8()) {
    // Decode-sized: the INT8 rows widened in registers (as FP8's; M <= 16 by default); then the
    // medium-M kernel (to 64 rows by default). Larger: the matrix dequantized to bf16, then the bf16
    // GEMM (weight-only: the inputs stay bf16).
    if (M <= cuda::kSmallM) {
      GLA_CUDA_RETURN_IF_ERROR(cuda::LinearSmallMInt8(x, x_stride, w.int8, N, K, y, y_bf16, y_stride, M, beta, stream_));
    } else if (M <= options_.paths.byte_weight_kernel_rows) {
      GLA_CUDA_RETURN_IF_ERROR(
          cuda::LinearSmallMInt8TensorCores(x, x_stride, w.int8, N, K, y, y_bf16, y_stride, M, beta, stream_));
    } else if (M <= options_.paths.int8_medium_m_kernel_rows) {
      GLA_CUDA_RETURN_IF_ERROR(
          cuda::LinearMediumMInt8(x, x_stride, w.int8, N, K, y, y_bf16, y_stride, M, beta, stream_));
    } else {
      GLA_CUDA_RETURN_IF_ERROR(cuda::DequantizeInt8ToBf16(w.int8, N, K, int8_dequant_, stream_));
      GLA_CUBLAS_RETURN_IF_ERROR(
          cuda::LinearBf16(cublas_, x, x_stride, int8_dequant_, N, K, y, y_bf16, y_stride, M, beta));
    }
    return absl::OkStatus();
  }
  // Decode-sized steps stream the weights through the matrix-vector kernel; medium ones (where
  // enabled) through LinearMediumM; larger ones use cuBLAS.
  if (M <= cuda::kSmallM) {
    GLA_CUDA_RETURN_IF_ERROR(cuda::LinearSmallM(x, x_stride, w.bf16, N, K, y, y_bf16, y_stride, M, beta, stream_));
  } else if (M <= options_.paths.medium_m_kernel_rows) {
    GLA_CUDA_RETURN_IF_ERROR(cuda::LinearMediumM(x, x_stride, w.bf16, N, K, y, y_bf16, y_stride, M, beta, stream_));
  } else {
    // The algorithm TuneBf16Gemms chose for this shape and row count, or cublasGemmEx's default.
    GLA_CUBLAS_RETURN_IF_ERROR(
        bf16_gemm_.Run(cublas_, x, x_stride, w.bf16, N, K, y, y_bf16, y_stride, M, beta, stream_));
  }
  return absl::OkStatus();
}

absl::Status CudaModel::ProjectMadeRowsFp8(const cuda::OneRowInput& in, const Matrix& w, int64_t N, int64_t K,
                                           void* y, bool y_bf16, int64_t y_stride, int64_t M, float beta) {
  GLA_CUDA_RETURN_IF_ERROR(
      cuda::QuantizeMadeRowsFp8(in, M, K, fp8_x_, fp8_x_stride_, fp8_x_scale_, stream_, RowFormFor(M, K)));
  GLA_CUBLAS_RETURN_IF_ERROR(fp8_gemm_.Run(cuda::Fp8Input{fp8_x_, fp8_x_scale_, fp8_x_stride_}, w.fp8, N, K, y, y_bf16,
                                           y_stride, M, beta, stream_));
  return absl::OkStatus();
}

absl::Status CudaModel::ProjectOneRow(const cuda::OneRowInput& in, const Matrix& w, int64_t N, int64_t K, void* y,
                                      bool y_bf16, float beta) {
  if (w.is_fp8()) {
    GLA_CUDA_RETURN_IF_ERROR(cuda::LinearOneRowStagedFp8(in, w.fp8, N, K, y, y_bf16, beta, stream_));
  } else if (w.is_int8()) {
    GLA_CUDA_RETURN_IF_ERROR(cuda::LinearOneRowStagedInt8(in, w.int8, N, K, y, y_bf16, beta, stream_));
  } else {
    GLA_CUDA_RETURN_IF_ERROR(cuda::LinearOneRowStaged(in, w.bf16, N, K, y, y_bf16, beta, stream_));
  }
  return absl::OkStatus();
}

absl::Status CudaModel::Enqueue(int rows, int decode_rows, int num_seqs, int logit_rows, const States& states) {
  const GlaLayerPlan& p = plan_;
  const InProjLayout& ip = p.in_proj;
  const int64_t D = p.hidden, I = p.intermediate, P = ip.width, Vd = p.o_width;
  const int prefill_seqs = num_seqs - decode_rows;
  const bool adapters = !step_adapters_.empty();

  GLA_CUDA_RETURN_IF_ERROR(cuda::EmbeddingGather(embeddings_, D, d_tokens_, rows, x_, stream_));
  if (uses_persistent_decode() && rows == decode_rows && rows <= persistent_max_batch_ && !adapters &&
      (logit_rows == 0 || logit_rows == rows)) {
    cuda::PersistentDecodeParams q = persistent_;
    q.batch = rows;
    q.tiles_in_flight = std::min(options_.persistent_tiles_in_flight, cuda::PersistentDecodeStages(q));
    q.state = states.pool;
    if (logit_rows == 0) q.logits = nullptr;
    q.step = static_cast<unsigned>(persistent_steps_ + 1);  // a new tag for every launch (tagged exchanges)
    // The batched kernel's barriers (its tagged words are x's and act's alone: none at level 3).
    if (rows > 1 && (!options_.persistent_tagged_batched || !q.tagged_residual)) q.tagged = nullptr;
    if (q.tagged != nullptr) {
      // Words past what the last step wrote may hold any older step's tag: zeroed (no tag is 0).
      const int64_t words = cuda::PersistentTaggedWords(q);
      if (words > tagged_words_written_)
        GLA_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(q.tagged, 0, static_cast<size_t>(words) * sizeof(*q.tagged), stream_));
      tagged_words_written_ = words;
      ++tagged_steps_;
    } else {
      tagged_words_written_ = 0;  // steps without the words: what they hold grows older
    }
    GLA_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(q.barrier, 0, sizeof(unsigned), stream_));
    GLA_CUDA_RETURN_IF_ERROR(cuda::PersistentDecodeStep(q, stream_));
    ++persistent_steps_;
    return absl::OkStatus();
  }
  // A one-row step (batch-1 decode) makes each norm and SwiGLU inside the projection that reads it
  // (cuda::LinearOneRowStaged, the same bits): three launches fewer per layer. Adapters read the
  // normed rows themselves, so they keep the separate kernels.
  const bool one_row = rows == 1 && !adapters && D <= cuda::kOneRowMaxK && I <= cuda::kOneRowMaxK;
  auto NormedRow = [&](const float* x, const int32_t* row_id, const float* norm_w) {
    cuda::OneRowInput in;
    in.kind = cuda::OneRowInput::kRmsNorm;
    in.x = x;
    in.x_stride = D;
    in.row_id = row_id;
    in.norm_w = norm_w;
    in.eps = p.eps;
    return in;
  };
  // FP8 steps of fp8_made_rows_from rows and more that take the FP8 GEMM, without adapters (they
  // read h_ and act_): each norm and SwiGLU made inside the kernel that quantizes the rows for the
  // GEMM (cuda::QuantizeMadeRowsFp8: the same bits as the two kernels it replaces), so each of a
  // layer's four projections takes one launch fewer and no bf16 round trip of its input.
  const bool fp8_steps = options_.paths.fp8_made_rows_from > 0 && rows >= options_.paths.fp8_made_rows_from &&
                         uses_fp8_weights() && !adapters && !one_row && Fp8GemmTakes(rows) &&
                         D <= cuda::kOneRowMaxK && I <= cuda::kOneRowMaxK && Vd <= cuda::kOneRowMaxK;
  auto made_fp8_rows = [&](const Matrix& m) { return fp8_steps && m.is_fp8(); };
  cuda::OneRowInput swiglu_rows;  // the down projection's input: SwiGLU of each [gate | up] row
  swiglu_rows.kind = cuda::OneRowInput::kSwiGlu;
  swiglu_rows.x = gate_up_;
  swiglu_rows.x_stride = 2 * I;
  for (int l = 0; l < config_.num_hidden_layers; ++l) {
    const Layer& w = layers_[l];
    auto lora = [&](LoraTarget t, const __nv_bfloat16* x, int64_t x_stride, void* y, bool y_bf16, int64_t y_stride) {
      return adapters ? AddLoraDeltas(l, t, x, x_stride, y, y_bf16, y_stride) : absl::OkStatus();
    };
    if (one_row) {  // the norm made inside the projection (no adapter reads h_)
      RETURN_IF_ERROR(ProjectOneRow(NormedRow(x_, nullptr, w.attn_norm), w.in_proj, P, D, proj_, false, 0.0f));
    } else if (made_fp8_rows(w.in_proj)) {
      RETURN_IF_ERROR(
          ProjectMadeRowsFp8(NormedRow(x_, nullptr, w.attn_norm), w.in_proj, P, D, proj_, false, P, rows, 0.0f));
    } else {
      GLA_CUDA_RETURN_IF_ERROR(
          cuda::RmsNorm(x_, D, nullptr, w.attn_norm, h_, D, rows, static_cast<int>(D), p.eps, stream_,
                        RowFormFor(rows, D)));
      RETURN_IF_ERROR(Project(h_, D, w.in_proj, P, D, proj_, false, P, rows, 0.0f));
    }
    RETURN_IF_ERROR(lora(LoraTarget::kQ, h_, D, proj_ + ip.q, false, P));
    RETURN_IF_ERROR(lora(LoraTarget::kK, h_, D, proj_ + ip.k, false, P));
    RETURN_IF_ERROR(lora(LoraTarget::kV, h_, D, proj_ + ip.v, false, P));
    if (p.output_gate) RETURN_IF_ERROR(lora(LoraTarget::kG, h_, D, proj_ + ip.g, false, P));
    RETURN_IF_ERROR(lora(LoraTarget::kGk0, h_, D, proj_ + ip.r, false, P));

    GlaRows gla_rows = p.Rows(proj_ + ip.q, proj_ + ip.k, proj_ + ip.v, P, gk_, o_);
    if (p.short_conv) {
      struct Part {
        int64_t src, dst, width, tail;
        const float* w;
      };
      const Part parts[] = {{ip.q, 0, p.q_width, layout_.q_tail_offset(l), w.q_conv},
                            {ip.k, p.q_width, p.k_width, layout_.k_tail_offset(l), w.k_conv},
                            {ip.v, p.q_width + p.k_width, p.v_width, layout_.v_tail_offset(l), w.v_conv}};
      for (const Part& part : parts)
        GLA_CUDA_RETURN_IF_ERROR(cuda::ShortConvSilu(proj_ + part.src, P, d_cu_all_, num_seqs, rows, part.width, part.w,
                                                     p.conv_size, states.pool.At(part.tail), d_slots_,
                                                     conv_ + part.dst, p.conv_width, stream_));
      gla_rows = p.Rows(conv_, conv_ + p.q_width, conv_ + p.q_width + p.k_width, p.conv_width, gk_, o_);
    }

    // gk = gate(h Wgk0^T Wgk1^T + b): the second factor in fp32, fused with the gate. At a small
    // decode batch the decode step makes the decode rows' gates itself: a launch fewer per layer
    // (H200, 2026-12-04: B = 1 step -4% at gla-340M, -2% at gla-1.3B). Every block of the step
    // recomputes its head's gates, so at larger batches that costs more than the launch saves
    // (B = 32 / 128: +4-6%): there, and when an adapter merges its own second factor (below),
    // LowRankGate makes them.
    // The chunkwise prefill's prep kernel makes its rows' gates too (prefill_gate_in_prep): the gate
    // launch then covers the decode rows alone, if any.
    constexpr int kGateInDecodeMaxRows = 4;
    const bool gate_in_decode = decode_rows > 0 && decode_rows <= kGateInDecodeMaxRows && step_adapters_.empty();
    const bool gate_in_prefill = prefill_seqs > 0 && options_.prefill_gate_in_prep && chunk_workspace_bytes_ > 0 &&
                                 step_adapters_.empty() && p.gate_rank <= cuda::kChunkPrepMaxGateRank;
    const int gate_row0 = gate_in_decode ? decode_rows : 0, gate_row1 = gate_in_prefill ? decode_rows : rows;
    const GlaGateFactors gate_factors = p.GateFactors(proj_ + ip.r, P, w.gk1, w.gk1_bias);
    GLA_CUDA_RETURN_IF_ERROR(cuda::LowRankGate(proj_ + int64_t{gate_row0} * P + ip.r, P, w.gk1, p.gate_rank, w.gk1_bias,
                                               gk_ + int64_t{gate_row0} * p.k_width, p.k_width,
                                               std::max(gate_row1 - gate_row0, 0), p.k_width, p.gate, stream_));
    for (const AdapterRows& ar : step_adapters_) {  // gk_proj.1 adapted: the gate again, merged factor
      const float* merged = ar.adapter->gk1[l];
      if (merged == nullptr) continue;
      GLA_CUDA_RETURN_IF_ERROR(cuda::LowRankGate(proj_ + int64_t{ar.row0} * P + ip.r, P, merged, p.gate_rank,
                                                 w.gk1_bias, gk_ + int64_t{ar.row0} * p.k_width, p.k_width, ar.rows,
                                                 p.k_width, p.gate, stream_));
    }

    const CudaStateSlots layer_states = states.pool.At(layout_.S_offset(l));
    if (decode_rows > 0) {
      GlaDecodeCudaParams dp = p.DecodeCuda(gla_rows, decode_rows, layer_states, d_slots_);
      if (gate_in_decode) {
        dp.gate = gate_factors;
      }
      GLA_CUDA_RETURN_IF_ERROR(cuda::GlaDecodeStep(dp, stream_));
    }
    if (prefill_seqs > 0) {
      GlaPrefillCudaParams pp = p.PrefillCuda(GlaLayerPlan::From(gla_rows, decode_rows), prefill_seqs, d_cu_prefill_,
                                              layer_states, d_slots_ + decode_rows);
      if (chunk_workspace_bytes_ > 0) {
        pp.total_tokens = rows - decode_rows;
        pp.workspace = chunk_workspace_;
        pp.workspace_bytes = chunk_workspace_bytes_;
        pp.plan_segments = options_.prefill_chunk_segments;
        pp.plan_split_prep = options_.prefill_chunk_split_prep;
        pp.host_cu_seqlens = host_cu_prefill();  // Forward wrote them for this step
        if (gate_in_prefill) {
          pp.gate = gate_factors;
          pp.gate.lowrank += int64_t{decode_rows} * P;  // the prefill's rows follow the decode rows
          ++prep_gate_layers_;
        }
        GLA_CUDA_RETURN_IF_ERROR(cuda::GlaPrefillChunk(pp, stream_));
      } else {
        GLA_CUDA_RETURN_IF_ERROR(cuda::GlaPrefillRecurrent(pp, stream_));
      }
    }

    const float* gate = p.output_gate ? proj_ + ip.g : nullptr;
    if (made_fp8_rows(w.o_proj)) {
      cuda::OneRowInput in;
      in.kind = cuda::OneRowInput::kGatedHeadNorm;
      in.x = o_;
      in.x_stride = Vd;
      in.norm_w = w.g_norm;
      in.eps = p.eps;
      in.heads = p.heads;
      in.head_dim = p.head_v;
      in.gate = gate;
      in.gate_stride = P;
      RETURN_IF_ERROR(ProjectMadeRowsFp8(in, w.o_proj, D, Vd, x_, false, D, rows, 1.0f));
    } else {
      GLA_CUDA_RETURN_IF_ERROR(
          cuda::RmsNormSwishGate(o_, Vd, gate, P, w.g_norm, og_, Vd, rows, p.heads, p.head_v, p.eps, stream_,
                                 RowFormFor(rows, Vd)));
      RETURN_IF_ERROR(Project(og_, Vd, w.o_proj, D, Vd, x_, false, D, rows, 1.0f));
    }
    RETURN_IF_ERROR(lora(LoraTarget::kO, og_, Vd, x_, false, D));

    if (one_row) {  // the norm inside the gate/up projection, SwiGLU inside the down projection
      RETURN_IF_ERROR(ProjectOneRow(NormedRow(x_, nullptr, w.mlp_norm), w.gate_up, 2 * I, D, gate_up_, true, 0.0f));
      cuda::OneRowInput act;
      act.kind = cuda::OneRowInput::kSwiGlu;
      act.x = gate_up_;
      RETURN_IF_ERROR(ProjectOneRow(act, w.down, D, I, x_, false, 1.0f));
      continue;
    }
    if (made_fp8_rows(w.gate_up)) {
      RETURN_IF_ERROR(
          ProjectMadeRowsFp8(NormedRow(x_, nullptr, w.mlp_norm), w.gate_up, 2 * I, D, gate_up_, true, 2 * I, rows,
                             0.0f));
    } else {
      GLA_CUDA_RETURN_IF_ERROR(
          cuda::RmsNorm(x_, D, nullptr, w.mlp_norm, h_, D, rows, static_cast<int>(D), p.eps, stream_,
                        RowFormFor(rows, D)));
      RETURN_IF_ERROR(Project(h_, D, w.gate_up, 2 * I, D, gate_up_, true, 2 * I, rows, 0.0f));
    }
    RETURN_IF_ERROR(lora(LoraTarget::kGate, h_, D, gate_up_, true, 2 * I));
    RETURN_IF_ERROR(lora(LoraTarget::kUp, h_, D, gate_up_ + I, true, 2 * I));
    if (made_fp8_rows(w.down)) {
      RETURN_IF_ERROR(ProjectMadeRowsFp8(swiglu_rows, w.down, D, I, x_, false, D, rows, 1.0f));
    } else {
      GLA_CUDA_RETURN_IF_ERROR(cuda::SwiGlu(gate_up_, 2 * I, act_, I, rows, I, stream_));
      RETURN_IF_ERROR(Project(act_, I, w.down, D, I, x_, false, D, rows, 1.0f));
    }
    RETURN_IF_ERROR(lora(LoraTarget::kDown, act_, I, x_, false, D));
  }
  if (logit_rows == 1 && D <= cuda::kOneRowMaxK) {  // the final norm inside the head
    RETURN_IF_ERROR(ProjectOneRow(NormedRow(x_, d_row_ids_, final_norm_), lm_head_, config_.vocab_size, D, logits_,
                                  false, 0.0f));
  } else if (logit_rows > 0) {
    GLA_CUDA_RETURN_IF_ERROR(
        cuda::RmsNorm(x_, D, d_row_ids_, final_norm_, h_, D, logit_rows, static_cast<int>(D), p.eps, stream_,
                      RowFormFor(logit_rows, D)));
    RETURN_IF_ERROR(Project(h_, D, lm_head_, config_.vocab_size, D, logits_, false, config_.vocab_size, logit_rows, 0.0f));
  }
  return absl::OkStatus();
}

absl::Status CudaModel::AddLoraDeltas(int l, LoraTarget t, const __nv_bfloat16* x, int64_t x_stride, void* y,
                                      bool y_bf16, int64_t y_stride) {
  float* xa32 = lora_scratch_.get<float>();
  __nv_bfloat16* xa16 = reinterpret_cast<__nv_bfloat16*>(xa32 + int64_t{options_.max_tokens} * lora_scratch_r_);
  const size_t elem = y_bf16 ? sizeof(__nv_bfloat16) : sizeof(float);
  for (const AdapterRows& ar : step_adapters_) {
    const DeviceAdapter::Pair& pair = ar.adapter->layers[l][static_cast<int>(t)];
    if (pair.a == nullptr) continue;
    // xa = x A^T ([rows, r]), then y += xa (scale B)^T; cuBLAS for both (any rank works). Into an
    // fp32 y the second product runs in fp32 (xa is not rounded); into a bf16 y (gate|up) in bf16.
    const __nv_bfloat16* xr = x + int64_t{ar.row0} * x_stride;
    void* yr = static_cast<char*>(y) + int64_t{ar.row0} * y_stride * elem;
    if (y_bf16) {
      GLA_CUBLAS_RETURN_IF_ERROR(
          cuda::LinearBf16(cublas_, xr, x_stride, pair.a, pair.r, pair.in, xa16, true, pair.r, ar.rows, 0.0f));
      GLA_CUBLAS_RETURN_IF_ERROR(
          cuda::LinearBf16(cublas_, xa16, pair.r, pair.b, pair.out, pair.r, yr, true, y_stride, ar.rows, 1.0f));
    } else {
      GLA_CUBLAS_RETURN_IF_ERROR(
          cuda::LinearBf16(cublas_, xr, x_stride, pair.a, pair.r, pair.in, xa32, false, pair.r, ar.rows, 0.0f));
      const float one = 1.0f;
      GLA_CUBLAS_RETURN_IF_ERROR(cublasGemmEx(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, pair.out, ar.rows, pair.r, &one,
                                              pair.b32, CUDA_R_32F, pair.r, xa32, CUDA_R_32F, pair.r, &one, yr,
                                              CUDA_R_32F, static_cast<int>(y_stride), CUBLAS_COMPUTE_32F,
                                              CUBLAS_GEMM_DEFAULT));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<const CudaModel::DeviceAdapter*> CudaModel::UseAdapter(const std::shared_ptr<const LoraAdapter>& a) {
  auto found = adapters_.find(a.get());
  if (found != adapters_.end()) {
    found->second.last_step = steps_;
    return &found->second;
  }
  const GlaConfig& c = config_;
  if (static_cast<int>(a->layers.size()) != c.num_hidden_layers)
    return absl::InvalidArgumentError(
        absl::StrCat("the adapter has ", a->layers.size(), " layers; the model has ", c.num_hidden_layers));
  const float scale = static_cast<float>(a->config.scale());
  const int64_t n = plan_.k_width, rank = plan_.gate_rank;
  // Plan: bf16 A and scale * B per pair, one merged fp32 gate factor per layer with gk_proj.1.
  struct Piece {
    int l, t;
    size_t a, b, b32;
  };
  std::vector<Piece> pieces;
  std::vector<std::pair<int, size_t>> merged;
  size_t bytes = 0;
  auto take = [&](size_t n_bytes) {
    const size_t at = bytes;
    bytes = AlignUp(bytes + n_bytes);
    return at;
  };
  DeviceAdapter d;
  d.host = a;
  d.layers.resize(c.num_hidden_layers);
  d.gk1.assign(c.num_hidden_layers, nullptr);
  for (int l = 0; l < c.num_hidden_layers; ++l)
    for (int t = 0; t < kNumLoraTargets; ++t) {
      const auto& pair = a->layers[l][t];
      if (!pair.has_value()) continue;
      const LoraTarget target = static_cast<LoraTarget>(t);
      const auto [out, in] = LoraTargetShape(c, target);
      const int64_t r = pair->a.shape.size() == 2 ? pair->a.shape[0] : 0;
      if (r < 1 || pair->a.shape != std::vector<int64_t>{r, in} || pair->b.shape != std::vector<int64_t>{out, r} ||
          pair->a.data.size() != static_cast<size_t>(r * in) || pair->b.data.size() != static_cast<size_t>(out * r))
        return absl::InvalidArgumentError(absl::StrCat("the adapter's ", LoraTargetName(target), " in layer ", l,
                                                       " does not fit the model's [", out, ", ", in, "] projection"));
      if (target == LoraTarget::kGk1) {
        merged.push_back({l, take(static_cast<size_t>(n * rank) * sizeof(float))});
        continue;
      }
      d.layers[l][t].r = static_cast<int>(r);
      d.layers[l][t].in = static_cast<int>(in);
      d.layers[l][t].out = static_cast<int>(out);
      d.max_r = std::max(d.max_r, static_cast<int>(r));
      pieces.push_back({l, t, take(static_cast<size_t>(r * in) * 2), take(static_cast<size_t>(out * r) * 2),
                        take(static_cast<size_t>(out * r) * 4)});
    }
  ASSIGN_OR_RETURN(d.mem, DeviceMemory::Allocate(std::max<size_t>(bytes, 1), "a LoRA adapter"));
  char* base = d.mem.get<char>();
  std::vector<__nv_bfloat16> staging;
  auto upload_bf16 = [&](const std::vector<float>& src, float mul, size_t at) -> absl::Status {
    staging.resize(src.size());
    for (size_t i = 0; i < src.size(); ++i) staging[i] = __float2bfloat16(src[i] * mul);
    GLA_CUDA_RETURN_IF_ERROR(cudaMemcpy(base + at, staging.data(), staging.size() * 2, cudaMemcpyHostToDevice));
    return absl::OkStatus();
  };
  for (const Piece& p : pieces) {
    const LoraPair& pair = *a->layers[p.l][p.t];
    RETURN_IF_ERROR(upload_bf16(pair.a.data, 1.0f, p.a));
    RETURN_IF_ERROR(upload_bf16(pair.b.data, scale, p.b));
    std::vector<float> b32(pair.b.data);
    for (float& v : b32) v *= scale;
    GLA_CUDA_RETURN_IF_ERROR(cudaMemcpy(base + p.b32, b32.data(), b32.size() * sizeof(float), cudaMemcpyHostToDevice));
    d.layers[p.l][p.t].a = reinterpret_cast<const __nv_bfloat16*>(base + p.a);
    d.layers[p.l][p.t].b = reinterpret_cast<const __nv_bfloat16*>(base + p.b);
    d.layers[p.l][p.t].b32 = reinterpret_cast<const float*>(base + p.b32);
  }
  std::vector<float> w1(static_cast<size_t>(n * rank));
  for (const auto& [l, at] : merged) {  // w1 + scale B A, in fp32 like the base factor
    const LoraPair& pair = *a->layers[l][static_cast<int>(LoraTarget::kGk1)];
    const int64_t r = pair.a.shape[0];
    GLA_CUDA_RETURN_IF_ERROR(cudaMemcpy(w1.data(), layers_[l].gk1, w1.size() * sizeof(float), cudaMemcpyDeviceToHost));
    for (int64_t j = 0; j < n; ++j)
      for (int64_t k = 0; k < rank; ++k) {
        double acc = 0.0;
        for (int64_t q = 0; q < r; ++q) acc += static_cast<double>(pair.b.data[j * r + q]) * pair.a.data[q * rank + k];
        w1[j * rank + k] += static_cast<float>(scale * acc);
      }
    GLA_CUDA_RETURN_IF_ERROR(cudaMemcpy(base + at, w1.data(), w1.size() * sizeof(float), cudaMemcpyHostToDevice));
    d.gk1[l] = reinterpret_cast<const float*>(base + at);
  }
  // The copies above ran on the legacy stream; the step's kernels run on stream_ (non-blocking).
  GLA_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
  d.last_step = steps_;
  return &adapters_.emplace(a.get(), std::move(d)).first->second;
}

}  // namespace gla
