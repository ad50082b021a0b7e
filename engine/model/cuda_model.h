// The CUDA model runner: weights loaded once (bf16 matrices, or FP8 / INT8 rows with a scale per row:
// CudaModelOptions::weights), fp32 residual stream and states, packed steps of many sequences
// (prefill chunks and decode tokens mixed) over states in a GpuStatePool.
//
// One step: embedding gather -> per layer [RMSNorm -> fused q|k|v|g|gk0 GEMM -> (short conv) ->
// low-rank gate -> GLA (decode kernel for the 1-token rows, prefill kernel for the rest) -> gate
// norm -> o_proj GEMM (+residual) -> RMSNorm -> fused gate|up GEMM -> SwiGLU -> down GEMM
// (+residual)] -> final norm and lm_head on the rows whose logits are wanted. Decode-only steps
// replay a CUDA graph captured per batch-size bucket (padding rows use the pool's scratch slot).
//
// LoRA adapters apply per segment, as in CpuModel: sequences with different adapters (or none)
// share a step. Each adapter is uploaded once (bf16 A, scale * B in fp32 and bf16; for gk_proj.1,
// whose output feeds the fused low-rank gate kernel, the second gate factor merged with the adapter
// in fp32) and kept while recent steps use it. Per target, the rows of each adapter's segments get
// y += (x A^T)(scale B)^T through two small cuBLAS GEMMs after the base projection (x A^T in fp32
// where y is fp32). Steps with an adapter run eagerly (no decode graph).
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <array>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/cuda_util.h"
#include "engine/model/gemm_tuning_cache.h"
#include "engine/model/layer_plan.h"
#include "engine/model/projection_paths.h"
#include "engine/model/weight_format.h"
#include "engine/sequence_state.h"
#include "kernels/linear.h"
#include "kernels/linear_bf16_tuned.h"
#include "kernels/linear_fp8.h"
#include "kernels/persistent_decode.h"
#include "kernels/row_form.h"
#include "models/checkpoint.h"
#include "models/lora_adapter.h"

namespace gla {

struct CudaModelOptions {
  int device = 0;
  int max_tokens = 512;      // rows one step may hold (the scheduler's step budget, decodes included)
  int max_logit_rows = 256;  // rows of logits one step may produce
  bool cuda_graphs = true;   // decode-only steps through captured graphs
  // Prefill through the tensor-core chunkwise kernel where the head shape allows it (dk 64, 128
  // or 256); otherwise, or when false, through the fused-recurrent kernel.
  bool chunked_prefill = true;
  // With chunked_prefill: the prefill rows' forget gates made inside the chunkwise kernel's prep
  // (GlaPrefillCudaParams::gate; the same bits) instead of by LowRankGate, whose fp32 rows the prep
  // then read back: a launch and a write and read of the gate's rows fewer per layer. Steps with
  // adapters, and gate ranks above cuda::kChunkPrepMaxGateRank, keep the gate launch. On since its
  // GPU tests passed and its engine A/B (`bash deploy/gpu-check.sh prep_gate`, H100 2026-12-07)
  // gained 1.9% at gla-340M's prefill T=4096 and changed gla-1.3B's within the runs' spread.
  bool prefill_gate_in_prep = true;
  // With chunked_prefill: the chunkwise kernel's plan forced for every prefill step, for benchmarks
  // (GlaPrefillCudaParams::plan_segments and plan_split_prep; 0 = the kernel's own plan): segments
  // a sequence is cut into (1 = none, up to kChunkMaxSegments), the prep kernel in clusters
  // (1 = no, 2 = yes).
  int prefill_chunk_segments = 0;
  int prefill_chunk_split_prep = 0;
  // Batch-1 decode steps (no adapter) through one persistent kernel for the whole model
  // (kernels/persistent_decode.h) where the device (Hopper on) and the shapes allow it.
  bool persistent_decode = true;
  // With persistent_decode: decode-only steps of 2 up to this many sequences (at most
  // cuda::kPersistentMaxBatch, 8) through the batched persistent kernel (tensor-core projections;
  // kernels/cuda/persistent_decode_batched.cu) instead of a captured graph of per-operation kernels.
  // 1: batch 1 only. 4: with one tile in flight (below) faster than the graph at 2-4 sequences
  // (gla-1.3B 7-19%), slower at 8 (H100, 2026-12-07, docs/performance.md).
  int persistent_decode_max_batch = 4;
  // The persistent kernels' weight tiles in flight at once (PersistentDecodeParams::tiles_in_flight,
  // capped at each batch's ring); 0: the whole ring. 1: the consumers' loads and the grid barriers'
  // polls no longer queue behind the ring's refill (gla-1.3B batch 1 / 2 / 4 decode 10 / 8 / 7%
  // faster than with 0 on an H100, 2026-12-07).
  int persistent_tiles_in_flight = 1;
  // A cap on the persistent kernels' weight tile bytes (PersistentDecodeParams::tile_bytes: 0 their
  // own, or 2,048-98,304 in whole KiB). Finer tiles than 32 KiB are slower at every batch with any
  // tiles in flight (H100, 2026-12-07: gla-1.3B batch 1 at 16 KiB 1,540-1,573 us against 1,187), and
  // so are batch 1's larger ones (64 KiB: 1,425 against 1,353 on another H100).
  int persistent_tile_bytes = 0;
  // The persistent kernels' grid: 0, one block per SM; n, min(n, SMs) blocks (at most
  // cuda::kPersistentMaxBlocks). Fewer blocks make each grid barrier cheaper (fewer arrivals on its
  // counter) and each block's share of the weight stream larger: slower at every batch measured
  // (gla-1.3B batch 1 at 100 / 66 blocks 1,397 / 1,698 us against 1,187 at 132; H100, 2026-12-07).
  int persistent_blocks = 0;
  // The persistent kernels' first state item of a block loaded before in_proj's tiles, not after
  // (PersistentDecodeParams::early_state_loads), so the barrier after in_proj does not wait for it.
  bool persistent_early_state_loads = true;
  // Batch-1 persistent steps: 1, the residual stream and activations exchanged as tagged words, not
  // through three of the five grid barriers a layer (PersistentDecodeParams::tagged); 2, in_proj's
  // values too (four of five: tagged_proj); 3, in_proj's values alone (x and act through barriers:
  // PersistentDecodeParams::tagged_residual false); 0, grid barriers. Where the shapes allow
  // (cuda::PersistentTaggedExchangeSupported: gla-340M and gla-1.3B do). 3 by default: against the
  // barriers the kernel 5% (gla-1.3B) and 6% (gla-340M) faster, 1% and 2.3% faster than level 2 (x as
  // tagged words waits longer than its barrier: every thread of every block polls); the engine 2%
  // faster than level 2 at gla-1.3B, level at gla-340M (H100 80GB HBM3, 2026-12-07; docs/performance.md
  // "Tagged exchanges"); 1 is level with the barriers.
  int persistent_tagged_exchange = 3;
  // The batched kernel's steps (2-4 sequences) with tagged words too (level 1: x and act), when
  // persistent_tagged_exchange is on. Off: measured 22-32% slower than its barriers at batch 2 (same
  // runs); kept for the tests and for other devices.
  bool persistent_tagged_batched = false;
  // kFp8: the layers' projections (q|k|v|g|gk0, o, gate|up, down) in FP8 E4M3 with a scale per
  // output row, rounded at load as CpuModel's kFp8 rounds them (gk_proj.1, which the gate kernel
  // reads in fp32, holds those FP8 values in fp32; embeddings and lm_head stay bf16). Decode-sized
  // projections read the FP8 rows with bf16 inputs (kernels/linear.h); larger ones quantize their
  // inputs per row and run on the FP8 tensor cores (kernels/linear_fp8.h).
  // kInt8: the same projections weight-only INT8 with a scale per row (CpuModel's kInt8 rows; an
  // INT8 checkpoint's own). Decode-sized projections read the INT8 rows as FP8's; larger ones
  // dequantize each matrix to bf16 in a scratch buffer for a bf16 GEMM (inputs stay bf16).
  // Neither has the persistent batch-1 kernel (it streams bf16).
  WeightFormat weights = WeightFormat::kNative;
  // Which kernel takes a projection of M rows, per weight format (engine/model/projection_paths.h).
  ProjectionPaths paths;
  // With paths.tuned_bf16_gemms: the choices kept in this file across processes
  // (engine/model/gemm_tuning_cache.h; glad --gemm_tuning_cache): a shape and row count found
  // there for this GPU and cuBLASLt runs that algorithm without timing it, and a new choice is added
  // to it. Empty: none. A file that is not a cache is a load error.
  std::string gemm_tuning_cache;
};

class CudaModel {
 public:
  // Loads weights to the GPU (bf16, FP8 or INT8 matrices; fp32 norms/gates) and allocates the workspace.
  static absl::StatusOr<std::unique_ptr<CudaModel>> FromCheckpoint(Checkpoint checkpoint,
                                                                    const CudaModelOptions& options);
  ~CudaModel();

  const GlaConfig& config() const { return config_; }
  const Tokenizer* tokenizer() const { return tokenizer_.get(); }
  const StateLayout& state_layout() const { return layout_; }
  const CudaModelOptions& options() const { return options_; }
  cudaStream_t stream() const { return stream_; }
  int64_t weight_bytes() const { return static_cast<int64_t>(weights_.bytes()); }
  int64_t workspace_bytes() const;
  std::string device_name() const { return device_name_; }
  bool uses_chunked_prefill() const { return chunk_workspace_bytes_ > 0; }
  bool uses_persistent_decode() const { return persistent_.blocks > 0; }
  // The most sequences a decode step may hold and still take the persistent kernel (0: none).
  int persistent_decode_batch() const { return uses_persistent_decode() ? persistent_max_batch_ : 0; }
  // Steps enqueued through the persistent kernel so far (tests: which path a step took).
  int64_t persistent_steps() const { return persistent_steps_; }
  // Of those, the steps that exchanged values as tagged words (tests: which kernel a step took).
  int64_t tagged_steps() const { return tagged_steps_; }
  // Layer launches whose prefill rows' gates the chunkwise prep kernel made (prefill_gate_in_prep;
  // tests: which path a step took).
  int64_t prep_gate_layers() const { return prep_gate_layers_; }
  // The tagged exchanges batch-1 persistent steps take (CudaModelOptions::persistent_tagged_exchange):
  // 0 none, 1 x and act, 2 in_proj's values too, 3 in_proj's alone (batched steps: 1 with
  // persistent_tagged_batched, else 0).
  int tagged_exchange() const {
    if (!uses_persistent_decode() || persistent_.tagged == nullptr) return 0;
    return !persistent_.tagged_proj ? 1 : persistent_.tagged_residual ? 2 : 3;
  }
  bool uses_fp8_weights() const { return options_.weights == WeightFormat::kFp8; }
  bool uses_int8_weights() const { return options_.weights == WeightFormat::kInt8; }
  // Why a pre-quantized checkpoint runs as bf16 of its values rather than in its own form (empty
  // when it runs in its own form, or the checkpoint is not quantized).
  const std::string& bf16_fallback_reason() const { return bf16_fallback_reason_; }

  enum class Logits { kNone, kLast, kAll };
  struct Segment {
    std::span<const int32_t> tokens;
    int slot = -1;
    Logits logits = Logits::kLast;
    std::shared_ptr<const LoraAdapter> adapter;  // null: the base model
  };
  // Where the states live: slot s's values from pool.Index(s, 0) on, in state_layout()'s order,
  // fp32 or bf16 (kernels/state_slots.h; GpuStatePool::slots()).
  struct States {
    CudaStateSlots pool;
    int scratch_slot = -1;  // a slot no sequence uses (graph padding); -1 disables the graphs
  };

  // Enqueues one step on stream(). On return (asynchronously complete) logits() holds the wanted
  // rows, fp32 [rows, vocab], in segment order; (*first_row)[i] is segment i's first row or -1.
  // Bad input (empty segment, id outside the vocabulary, two segments on one slot, a step larger
  // than max_tokens / max_logit_rows, an adapter whose layers or shapes do not fit the model) is
  // INVALID_ARGUMENT and enqueues nothing.
  absl::Status Forward(std::span<const Segment> segments, const States& states, std::vector<int>* first_row);
  const float* logits() const { return logits_; }
  int cached_adapters() const { return static_cast<int>(adapters_.size()); }
  // paths.tuned_bf16_gemms: the (projection, row count) choices made so far, and the projections
  // that ran a chosen cuBLASLt algorithm (not cublasGemmEx's default).
  int tuned_gemm_plans() const { return bf16_gemm_.plans(); }
  int64_t tuned_gemm_runs() const { return bf16_gemm_.tuned_runs(); }
  // options.gemm_tuning_cache: the choices taken from the file (not timed here).
  int gemm_choices_from_cache() const { return gemm_choices_from_cache_; }
  // paths.tuned_bf16_gemms: tunes now every row count a step would tune at its first run (the
  // decode graphs' buckets up to max_decode_rows, the power-of-two row counts and max_tokens of
  // eager steps), so that serving does not pause for it at a new batch or prompt size (the backend
  // calls it at load; with options.gemm_tuning_cache, a restart restores instead of timing). Uses
  // the activation buffers: nothing of a step may be in flight. A no-op without tuning.
  absl::Status TuneBf16GemmsForEveryStepSize(int max_decode_rows);

 private:
  // An adapter on the device. Holding `host` keeps its address unique while it is cached.
  struct DeviceAdapter {
    std::shared_ptr<const LoraAdapter> host;
    DeviceMemory mem;
    struct Pair {
      const __nv_bfloat16* a = nullptr;  // [r, in]
      const __nv_bfloat16* b = nullptr;  // [out, r], times the adapter's scale (for bf16 outputs)
      const float* b32 = nullptr;        // the same in fp32 (for fp32 outputs: no rounding of x A^T)
      int r = 0, in = 0, out = 0;
    };
    std::vector<std::array<Pair, kNumLoraTargets>> layers;
    std::vector<const float*> gk1;  // per layer: gk_proj.1 merged with the adapter, or null
    int max_r = 0;
    uint64_t last_step = 0;
  };
  // Rows [row0, row0 + rows) of a step that use one adapter.
  struct AdapterRows {
    int row0 = 0, rows = 0;
    const DeviceAdapter* adapter = nullptr;
  };
  static constexpr int kMaxCachedAdapters = 16;
  absl::StatusOr<const DeviceAdapter*> UseAdapter(const std::shared_ptr<const LoraAdapter>& a);
  // y[rows of each adapter] += LoRA delta of target t in layer l (x: the projection's input).
  absl::Status AddLoraDeltas(int l, LoraTarget t, const __nv_bfloat16* x, int64_t x_stride, void* y, bool y_bf16,
                             int64_t y_stride);

  CudaModel() = default;
  absl::Status UploadWeights(Checkpoint& ck);
  absl::Status AllocateWorkspace();
  // Fills persistent_ when options_.persistent_decode holds and the device and shapes allow it
  // (else persistent_.blocks stays 0 and batch-1 steps take the kernel-per-operation path).
  absl::Status SetUpPersistentDecode();
  // The kernels of one step over the inputs already in device memory.
  absl::Status Enqueue(int rows, int decode_rows, int num_seqs, int logit_rows, const States& states);
  absl::Status RunGraph(int bucket, const States& states);
  // FP8 weights: the plans of a step's FP8 GEMMs at `rows` rows, made before a graph captures them
  // (cuBLASLt's heuristic is not run inside a capture).
  absl::Status PrepareFp8Plans(int rows);
  // bf16 weights with paths.tuned_bf16_gemms: times cuBLASLt's algorithms for the layers' four
  // projections at `rows` rows (each over every layer's matrix) unless done before; then Project
  // runs the fastest at that row count. Called before a step's kernels are enqueued (it scribbles on
  // the activation buffers and synchronizes the stream): before a decode graph's capture, and
  // before an eager step of a power-of-two row count or the full step budget.
  absl::Status TuneBf16Gemms(int64_t rows);
  // A projection's weights on the device: bf16 rows, or FP8 / INT8 rows with a scale per row.
  struct Matrix {
    const __nv_bfloat16* bf16 = nullptr;
    cuda::Fp8Weight fp8;    // fp8.q set: FP8
    cuda::Int8Weight int8;  // int8.q set: INT8
    bool is_fp8() const { return fp8.q != nullptr; }
    bool is_int8() const { return int8.q != nullptr; }
  };
  absl::Status Project(const __nv_bfloat16* x, int64_t x_stride, const Matrix& w, int64_t N, int64_t K, void* y,
                       bool y_bf16, int64_t y_stride, int64_t M, float beta);
  // Whether Project takes an FP8 projection of M rows through the FP8 GEMM (inputs quantized per
  // row): above the one-byte tensor-core kernel's rows and the medium-M kernel's. Enqueue's made
  // FP8 rows and RunGraph's GEMM plans follow the same choice.
  bool Fp8GemmTakes(int64_t M) const {
    return M > options_.paths.byte_weight_kernel_rows && M > options_.paths.fp8_medium_m_kernel_rows;
  }
  // The row kernels' form for a step of `rows` rows of `width` values (ProjectionPaths::warp_rows_from
  // and warp_rows_max_width; both forms give the same bits).
  cuda::RowForm RowFormFor(int64_t rows, int64_t width) const {
    const ProjectionPaths& p = options_.paths;
    return p.warp_rows_from > 0 && rows >= p.warp_rows_from && width <= p.warp_rows_max_width
               ? cuda::RowForm::kWarpPerRow
               : cuda::RowForm::kBlockPerRow;
  }
  // An FP8 projection of M rows made from the previous kernel's output (cuda::QuantizeMadeRowsFp8
  // into the FP8 input buffer, then the FP8 GEMM).
  absl::Status ProjectMadeRowsFp8(const cuda::OneRowInput& in, const Matrix& w, int64_t N, int64_t K, void* y,
                                  bool y_bf16, int64_t y_stride, int64_t M, float beta);
  // One row's projection with its input made inside the kernel (cuda::LinearOneRowStaged).
  absl::Status ProjectOneRow(const cuda::OneRowInput& in, const Matrix& w, int64_t N, int64_t K, void* y, bool y_bf16,
                             float beta);

  GlaConfig config_;
  std::unique_ptr<Tokenizer> tokenizer_;
  StateLayout layout_{GlaConfig{}};
  CudaModelOptions options_;
  std::string device_name_;
  std::string bf16_fallback_reason_;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;

  // Weights: one allocation, pointers into it.
  DeviceMemory weights_;
  struct Layer {
    const float *attn_norm, *gk1, *gk1_bias, *q_conv, *k_conv, *v_conv, *g_norm, *mlp_norm;
    Matrix in_proj, o_proj, gate_up, down;
  };
  std::vector<Layer> layers_;
  const __nv_bfloat16* embeddings_ = nullptr;
  Matrix lm_head_;  // bf16 in every format
  const float* final_norm_ = nullptr;
  GlaLayerPlan plan_{GlaConfig{}};  // the layer's shapes, constants and kernel params (layer_plan.h)

  // Workspace: activations for max_tokens rows, the step's inputs, logits, cuBLAS workspace.
  DeviceMemory workspace_, cublas_workspace_;
  PinnedMemory host_inputs_;
  int32_t *d_inputs_ = nullptr;  // [tokens | slots | cu_all | cu_prefill | row_ids]
  int32_t *d_tokens_ = nullptr, *d_slots_ = nullptr, *d_cu_all_ = nullptr, *d_cu_prefill_ = nullptr,
          *d_row_ids_ = nullptr;
  size_t input_ints_ = 0;
  // The step's prefill sequence offsets as Forward wrote them on the host (cu_prefill above).
  int32_t* host_cu_prefill() {
    const size_t N = static_cast<size_t>(options_.max_tokens);
    return host_inputs_.get<int32_t>() + N + N + (N + 1);
  }
  void* chunk_workspace_ = nullptr;  // the chunkwise prefill kernel's scratch (0 bytes: not used)
  size_t chunk_workspace_bytes_ = 0;
  float *x_ = nullptr, *proj_ = nullptr, *conv_ = nullptr, *gk_ = nullptr, *o_ = nullptr, *logits_ = nullptr;
  __nv_bfloat16 *h_ = nullptr, *og_ = nullptr, *gate_up_ = nullptr, *act_ = nullptr;
  // FP8 weights: a projection's inputs quantized per row for the FP8 GEMM ([max_tokens, widest K]
  // and a scale per row), and the GEMM's plans and cuBLASLt handle (its workspace is cuBLAS's: the
  // two never run at once on the one stream).
  uint8_t* fp8_x_ = nullptr;
  float* fp8_x_scale_ = nullptr;
  int64_t fp8_x_stride_ = 0;
  cuda::LinearFp8Gemm fp8_gemm_;
  // bf16 weights: the GEMM algorithms timed per projection and row count (paths.tuned_bf16_gemms;
  // else never tuned, and every call takes cublasGemmEx's default). Shares cuBLAS's workspace.
  cuda::TunedBf16Gemm bf16_gemm_;
  std::optional<GemmTuningCache> gemm_cache_;  // options.gemm_tuning_cache, opened at load
  int gemm_choices_from_cache_ = 0;
  bool gemm_cache_write_failed_ = false;  // said once on stderr
  // INT8 weights: the matrix of a larger step dequantized to bf16 (the largest projection's size).
  __nv_bfloat16* int8_dequant_ = nullptr;

  // Captured decode graphs by bucket size (and the state pool they were captured with).
  struct Graph {
    cudaGraphExec_t exec = nullptr;
    CudaStateSlots pool;
  };
  std::map<int, Graph> graphs_;

  // The persistent decode kernels' parameters (all but the step's batch, states and logits), their
  // device array of layers and its grid-barrier counter.
  cuda::PersistentDecodeParams persistent_;
  int persistent_max_batch_ = 1;  // see persistent_decode_batch()
  int64_t persistent_steps_ = 0;
  // The tagged words the last persistent step wrote ([0, this): cuda::PersistentTaggedWords; 0 after a
  // step without them); a step that reads more zeroes them first. All of them are zero when allocated.
  int64_t tagged_words_written_ = 0;
  int64_t tagged_steps_ = 0;  // see tagged_steps()
  int64_t prep_gate_layers_ = 0;  // see prep_gate_layers()
  DeviceMemory persistent_mem_;

  // Adapters by host address (the entry holds the adapter, so the address is not reused), the
  // step's adapter rows (eager steps), and the x A^T scratch, [max_tokens, largest rank] in fp32
  // and then in bf16.
  std::map<const LoraAdapter*, DeviceAdapter> adapters_;
  std::vector<AdapterRows> step_adapters_;
  uint64_t steps_ = 0;
  DeviceMemory lora_scratch_;
  int lora_scratch_r_ = 0;
};

// Smallest captured bucket that holds n decode rows: 1, 2, 4, 8, 16, 24, 32, 48, 64, then
// multiples of 32 (fewer graphs than one per size, little padding).
int DecodeBucket(int n);

}  // namespace gla
