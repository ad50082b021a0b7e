// What the scheduler needs from a device: a state pool and one packed step that advances
// several sequences (prefill chunks and decode tokens mixed) and samples where asked. Sampling
// belongs to the backend so the CUDA one can sample on the device without copying logits.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/projection_paths.h"
#include "engine/model/weight_format.h"
#include "engine/sampler.h"
#include "engine/state_pool.h"
#include "engine/state_storage.h"
#include "models/config.h"
#include "models/lora_adapter.h"
#include "models/tokenizer.h"

namespace gla {

struct StepItem {
  std::span<const int32_t> tokens;  // new tokens of this sequence (a prefill chunk, or 1 to decode)
  int slot = -1;                    // its state in the pool; updated in place
  // Sample a next token after the last one (false for a prefill chunk that does not end the prompt).
  bool sample = false;
  const SamplingParams* params = nullptr;
  const TokenHistory* history = nullptr;
  uint64_t step = 0;  // index of the token being generated (the RNG counter)
  // LoRA adapter of this sequence (null: the base model). Shared: a backend may keep it (the CUDA
  // backend's device copies are keyed by it) after the request that owns it has ended.
  std::shared_ptr<const LoraAdapter> adapter;
  // Prompt scoring: score_targets[i] is the token that follows tokens[i] (at most tokens.size()
  // of them); for each, the backend appends to *scored its log-probability under the model's raw
  // logits (no penalties, no temperature) and the `score_top` most likely alternatives. A step
  // computes tokens.size() rows of logits for such an item (Backend::max_logit_rows bounds them).
  std::span<const int32_t> score_targets;
  int score_top = 0;
  std::vector<SampledToken>* scored = nullptr;
  // >= 0: this item has no tokens and no slot of its own: it samples (with its own params, history
  // and step) from the last row of item `sample_from`, an earlier item with tokens and sample set.
  // n > 1: every generation's first token comes from the one prefill's logits.
  int sample_from = -1;
  // Structured output: the ids the sampler may pick (bit t of word t / 64, vocab_limit() bits, at
  // least one set; the scheduler's, valid for the step); null: any.
  const uint64_t* allowed = nullptr;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;    // "cpu", "cuda"
  virtual std::string device() const = 0;  // human-readable
  virtual const GlaConfig& config() const = 0;
  virtual const Tokenizer* tokenizer() const = 0;  // null when the checkpoint has none
  virtual int64_t weight_bytes() const = 0;
  virtual StatePool& pool() = 0;
  // Memory the pool's storage and the step workspace hold (device memory for the CUDA backend).
  virtual int64_t state_pool_bytes() const = 0;
  virtual int64_t workspace_bytes() const = 0;
  // Memory of the device the backend serves from (the GPU's, for metrics); false when it has none
  // of its own (the CPU backend).
  virtual bool DeviceMemory(int64_t* used, int64_t* total) const {
    (void)used, (void)total;
    return false;
  }
  // Makes the calling thread use this backend's device (the CUDA backend: cudaSetDevice). The
  // scheduler's loop calls it first: with one engine per GPU (engine_set.h), a thread otherwise
  // works on device 0 whichever engine it serves.
  virtual absl::Status BindThread() { return absl::OkStatus(); }
  // Whether Step applies StepItem::adapter (LoRA adapters per sequence).
  virtual bool supports_adapters() const { return false; }
  // How the projections' weights run (a pre-quantized checkpoint's own form where the backend runs
  // it so): states made under one form are not another's, so shared prefix states say theirs.
  virtual WeightFormat weight_format() const { return WeightFormat::kNative; }
  // Ids a sampler may produce: the tokenizer's vocabulary when it is smaller than the model's.
  int vocab_limit() const;
  // Rows of logits one step may produce: one per sampling item plus tokens.size() per scoring item.
  virtual int max_logit_rows() const = 0;

  // Runs the items as one step. out[i] is filled for items with sample = true (others untouched);
  // out is resized to items.size(). On error no slot has been changed.
  // before_sampling (optional): called once the forward pass is under way and before anything
  // reads StepItem::allowed, which it may still write: structured output's masks are made there,
  // on CPU threads while the GPU runs the step (the CPU backend calls it between its forward pass
  // and its sampling). It cannot fail: a mask that comes out empty is the scheduler's to handle.
  virtual absl::Status Step(std::span<const StepItem> items, std::vector<SampledToken>* out,
                            const std::function<void()>& before_sampling) = 0;
  absl::Status Step(std::span<const StepItem> items, std::vector<SampledToken>* out) {
    return Step(items, out, nullptr);
  }
};

// What every backend checks of a step's items before running anything (INTERNAL: these are the
// scheduler's mistakes, not a client's): slots in range and distinct, scoring targets that fit,
// sample_from naming an earlier sampling item with tokens.
absl::Status CheckStepItems(std::span<const StepItem> items, int slots);

struct CpuBackendOptions {
  int slots = 16;
  int threads = 0;  // BLAS threads, 0 = library default
  WeightFormat weights = WeightFormat::kNative;  // kInt8: weight-only INT8 projections (CpuModelOptions)
  StateDType state_dtype = StateDType::kF32;      // how the pool keeps states (engine/state_storage.h)
};

absl::StatusOr<std::unique_ptr<Backend>> MakeCpuBackend(const std::string& model_dir, const CpuBackendOptions& options);

struct CudaBackendOptions {
  int device = 0;
  int slots = 16;
  int64_t state_memory_bytes = 0;  // > 0: as many slots as this holds (instead of `slots`)
  // The scheduler's step shape: a step holds at most max(step_token_budget, running sequences +
  // min_prefill_tokens) tokens; the workspace is sized for that.
  int step_token_budget = 512;
  int min_prefill_tokens = 16;
  bool cuda_graphs = true;
  bool chunked_prefill = true;  // the tensor-core chunkwise kernel where the head shape allows it
  bool prefill_gate_in_prep = true;   // CudaModelOptions::prefill_gate_in_prep
  int prefill_chunk_segments = 0;     // CudaModelOptions::prefill_chunk_segments (0: the kernel's plan)
  int prefill_chunk_split_prep = 0;   // CudaModelOptions::prefill_chunk_split_prep (0: the kernel's plan)
  bool persistent_decode = true;  // batch-1 decode as one persistent kernel where device and shapes allow it
  int persistent_decode_max_batch = 4;  // CudaModelOptions::persistent_decode_max_batch (2-8: the batched kernel)
  int persistent_tiles_in_flight = 1;   // CudaModelOptions::persistent_tiles_in_flight (0: the whole ring)
  int persistent_tile_bytes = 0;        // CudaModelOptions::persistent_tile_bytes (0: the kernels' own tiles)
  int persistent_blocks = 0;            // CudaModelOptions::persistent_blocks (0: one block per SM)
  bool persistent_early_state_loads = true;  // CudaModelOptions::persistent_early_state_loads
  int persistent_tagged_exchange = 3;        // CudaModelOptions::persistent_tagged_exchange (0-3)
  bool persistent_tagged_batched = false;    // CudaModelOptions::persistent_tagged_batched
  WeightFormat weights = WeightFormat::kNative;  // kFp8 / kInt8: CudaModelOptions::weights
  ProjectionPaths paths;  // CudaModelOptions::paths (gla-engine-bench --byte_rows, --fp8_made_rows, --medium_rows)
  std::string gemm_tuning_cache;  // CudaModelOptions::gemm_tuning_cache (glad --gemm_tuning_cache)
  StateDType state_dtype = StateDType::kF32;      // how the pool keeps states (kernels/state_slots.h)
};

// UNIMPLEMENTED in a build without CUDA; FAILED_PRECONDITION with the reason when no GPU is usable;
// RESOURCE_EXHAUSTED when weights, pool and workspace do not fit in GPU memory.
absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(const std::string& model_dir, const CudaBackendOptions& options);

// Whether this build has CUDA and a GPU is usable; *why says what is missing otherwise.
bool CudaBackendAvailable(std::string* why);

}  // namespace gla
