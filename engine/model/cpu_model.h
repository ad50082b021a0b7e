// The CPU model runner: fp32 compute over fp32/bf16/f16 checkpoints. It runs a packed step of
// several sequences at once (prefill chunks and single decode tokens mixed), each continuing from
// a state the caller owns. The CPU backend serves with it; the CUDA kernels are tested against it.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/layer_plan.h"
#include "engine/model/weight_format.h"
#include "engine/sequence_state.h"
#include "kernels/linear_int8.h"
#include "models/checkpoint.h"
#include "models/lora_adapter.h"

namespace gla {

struct CpuModelOptions {
  // How multi-token segments run the GLA operator. Single tokens always take the decode step.
  enum class GlaForm { kChunkwise, kRecurrent } gla_form = GlaForm::kChunkwise;
  int chunk = 64;      // C
  int sub_chunk = 16;  // c
  int threads = 0;     // BLAS threads; 0 = library default
  // kInt8: every layer's projections quantized at load (weight-only, per output row); the
  // embeddings and lm_head stay fp32. A pre-quantized INT8 checkpoint (config.quantization) runs
  // as INT8 under kNative (and kFp8) too: that is its native form. An FP8 one runs as kFp8 (its
  // values computed in fp32: no FP8 arithmetic on the CPU) under kNative and kFp8, or quantized to
  // INT8 from them under kInt8. kFp8 on any other checkpoint: the same projections rounded at load
  // to FP8 E4M3 with a scale per output row and computed in fp32 (exactly what serving the
  // checkpoint `gla-eval quantize --scheme fp8` writes computes).
  WeightFormat weights = WeightFormat::kNative;
  // kBF16: every sequence's state is rounded to bf16 (nearest even) at the end of each step, as a
  // pool of bf16 slots would keep it between steps, while each step still updates it in fp32
  // (issue 23's --state_dtype bf16: this measures its accuracy; the memory is not halved yet).
  enum class StateDType { kF32, kBF16 } state_dtype = StateDType::kF32;
  // kBF16: the activations the CUDA engine keeps in bf16 are rounded to bf16 (nearest even) where
  // it rounds them: each RMSNorm's rows a projection reads, the gated attention output o_proj
  // reads, gate|up and its SwiGLU rows, the final norm's rows lm_head reads; the residual stream,
  // the projections' fp32 outputs and the GLA operator stay fp32, as there. The CPU then computes
  // what the GPU's decode steps compute up to the order of their sums, so the GPU tests hold the
  // GPU to it tightly (on a random test model whose FP8 decode step moved 14.4% from fp32
  // activations, the GPU and this agreed to three digits), and gla-eval measures what bf16
  // activations cost a model. (Prefill on the GPU also rounds inside its chunkwise kernel, and an
  // adapter's low-rank product into gate|up runs in bf16: neither is modelled here.)
  enum class ActivationDType { kF32, kBF16 } activations = ActivationDType::kF32;
};

class CpuModel {
 public:
  static absl::StatusOr<std::unique_ptr<CpuModel>> Load(const std::string& dir, const CpuModelOptions& options = {});
  static absl::StatusOr<std::unique_ptr<CpuModel>> FromCheckpoint(Checkpoint checkpoint,
                                                                   const CpuModelOptions& options = {});

  const GlaConfig& config() const { return ck_.config; }
  const Tokenizer* tokenizer() const { return ck_.tokenizer.get(); }
  const StateLayout& state_layout() const { return layout_; }
  const CpuModelOptions& options() const { return options_; }  // as run
  WeightFormat weights() const { return options_.weights; }  // as run (a pre-quantized checkpoint's own form)
  // Bytes the weights take as this model holds them (fp32, or int8 and scales).
  int64_t weight_bytes() const;
  // Of those, the bytes one decode step reads: all but the input embeddings' table when lm_head is
  // its own (a step gathers one row of it per token).
  int64_t step_weight_bytes() const;
  SequenceState NewState() const;  // the empty past

  // One sequence's part of a packed step: its new tokens, the state they continue from (updated
  // in place: state_layout().floats() values, e.g. a StatePool slot or SequenceState::data), and
  // whether logits are wanted for every token or only for the last one.
  struct Segment {
    std::span<const int32_t> tokens;
    float* state = nullptr;
    bool all_logits = false;
    // A LoRA adapter for this sequence (null: the base model). Sequences with different adapters,
    // or none, share a step: each projection adds scale * (x A^T) B^T on its own rows.
    const LoraAdapter* adapter = nullptr;
  };
  // Appends logits rows ([vocab] each) to *logits in segment order: T rows for an all_logits
  // segment, 1 otherwise. Bad input (empty segment, id outside the vocabulary, missing or shared
  // state) is INVALID_ARGUMENT and changes no state.
  absl::Status Forward(std::span<const Segment> segments, std::vector<float>* logits);

  // Convenience: one segment.
  absl::StatusOr<std::vector<float>> Run(std::span<const int32_t> tokens, SequenceState& state, bool all_logits);

 private:
  CpuModel(Checkpoint ck, const CpuModelOptions& options);
  absl::Status FuseWeights();
  struct Workspace;
  void RunLayer(int layer, std::span<const Segment> segments, const std::vector<int64_t>& offsets, Workspace& ws);
  // Rounds v to bf16 where options_.activations says so (the GPU's bf16 activations); else nothing.
  void RoundActivations(float* v, int64_t n) const;
  // y[rows of each adapted segment] += scale * (x A^T) B^T for the segments whose adapter targets t.
  void AddLoraDeltas(int layer, LoraTarget t, std::span<const Segment> segments, const std::vector<int64_t>& offsets,
                     const float* x, int64_t x_stride, float* y, int64_t y_stride) const;

  Checkpoint ck_;
  CpuModelOptions options_;
  StateLayout layout_;
  // A projection's weight [N, K] as the model keeps it: fp32, or INT8 (options.weights).
  struct Projection {
    int64_t N = 0, K = 0;
    std::vector<float> f32;
    cpu::Int8Weight int8;
  };
  // Moves the weights `parts` (their rows stacked: [N, K] together; empty ones skipped) into one
  // projection, as fp32 or as INT8 when `format` asks for it: a part a pre-quantized checkpoint gave
  // as INT8 keeps its own rows and scales, the others are quantized here. kFp8: fp32 of each row
  // rounded to FP8 with its scale, unless `fp8_checkpoint` says the values are FP8 already.
  // INVALID_ARGUMENT naming `what` when a weight is not finite and must be quantized.
  static absl::StatusOr<Projection> MakeProjection(std::initializer_list<Weight*> parts, int64_t N, int64_t K,
                                                   WeightFormat format, bool fp8_checkpoint,
                                                   const std::string& what);
  // y[M, N] = x W^T + beta y through whichever form the projection holds.
  static void Project(const Projection& w, const float* x, int64_t x_stride, float* y, int64_t y_stride, int64_t M,
                      float beta = 0.0f);
  // Per-layer projections, fused where they share an input: [q | k | v | g | gk_lowrank] rows of h,
  // and [gate | up].
  struct FusedLayer {
    Projection in_proj;  // [P, D]
    Projection gk1;      // [k_width, gate_rank]
    Projection o_proj;   // [D, o_width]
    Projection gate_up;  // [2I, D]
    Projection down;     // [D, I]
  };
  std::vector<FusedLayer> fused_;
  GlaLayerPlan plan_;  // the layer's shapes, constants and kernel params (layer_plan.h)
};

}  // namespace gla
