// The CUDA backend: CudaModel over a GpuStatePool, sampling on the GPU (CudaSampler).
#include <cuda_runtime_api.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "engine/backend.h"
#include "engine/model/cuda_model.h"
#include "engine/cuda_sampler.h"
#include "engine/cuda_state_pool.h"
#include "models/status_macros.h"

namespace gla {

bool CudaBackendAvailable(std::string* why) {
  int n = 0;
  if (const cudaError_t e = cudaGetDeviceCount(&n); e != cudaSuccess) {
    *why = absl::StrCat("no usable CUDA device (", cudaGetErrorString(e), ")");
    cudaGetLastError();
    return false;
  }
  if (n == 0) *why = "no CUDA device";
  return n > 0;
}

namespace {

// How the weights run: FP8 or INT8 rows (--weights fp8 / int8, or a pre-quantized checkpoint's own
// form under --weights native), or bf16 (a pre-quantized checkpoint this GPU cannot run in its own
// form runs as bf16 of its values, scale x q), and where they came from.
std::string WeightsNote(const CudaModel& m) {
  const GlaConfig& c = m.config();
  const char* from = !c.quantization                                                      ? ""
                     : c.quantization->kind == CheckpointQuantization::Kind::kFp8E4M3 ? " from an fp8 checkpoint"
                                                                                       : " from an int8 checkpoint";
  if (m.uses_fp8_weights()) return absl::StrCat(", fp8 weights", from);
  if (m.uses_int8_weights()) return absl::StrCat(", int8 weights", from);
  if (!c.quantization) return "";
  // Said with the reason, so that an operator who expected the checkpoint's own form sees why not.
  return absl::StrCat(", bf16 weights", from, " (", m.bf16_fallback_reason(), ")");
}

// The decode steps the persistent kernel takes, for device(): ", persistent batch-1 decode" or
// ", persistent decode to batch N".
std::string PersistentNote(const CudaModel& m) {
  const int batch = m.persistent_decode_batch();
  if (batch == 0) return "";
  return batch == 1 ? ", persistent batch-1 decode" : absl::StrCat(", persistent decode to batch ", batch);
}

class CudaBackend : public Backend {
 public:
  CudaBackend(std::unique_ptr<CudaModel> model, std::unique_ptr<GpuStatePool> pool, std::unique_ptr<CudaSampler> sampler,
              int max_logit_rows)
      : model_(std::move(model)), pool_(std::move(pool)), sampler_(std::move(sampler)),
        max_logit_rows_(max_logit_rows) {}

  std::string name() const override { return "cuda"; }
  std::string device() const override {
    return absl::StrCat(model_->device_name(), ", ", model_->uses_chunked_prefill() ? "chunkwise" : "fused-recurrent",
                        " prefill", PersistentNote(*model_),
                        WeightsNote(*model_),
                        pool_->state_dtype() == StateDType::kBF16 ? ", bf16 states" : "");
  }
  const GlaConfig& config() const override { return model_->config(); }
  const Tokenizer* tokenizer() const override { return model_->tokenizer(); }
  int64_t weight_bytes() const override { return model_->weight_bytes(); }
  StatePool& pool() override { return *pool_; }
  int64_t state_pool_bytes() const override { return pool_->device_bytes(); }
  int64_t workspace_bytes() const override { return model_->workspace_bytes() + sampler_->device_bytes(); }
  bool supports_adapters() const override { return true; }
  WeightFormat weight_format() const override { return model_->options().weights; }
  absl::Status BindThread() override {
    GLA_CUDA_RETURN_IF_ERROR(cudaSetDevice(model_->options().device));
    return absl::OkStatus();
  }
  bool DeviceMemory(int64_t* used, int64_t* total) const override {
    size_t free_bytes = 0, total_bytes = 0;
    // Called from a metrics thread: that thread's current device may be another one.
    if (cudaSetDevice(model_->options().device) != cudaSuccess || cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    *used = static_cast<int64_t>(total_bytes - free_bytes);
    *total = static_cast<int64_t>(total_bytes);
    return true;
  }

  int max_logit_rows() const override { return max_logit_rows_; }

  using Backend::Step;
  absl::Status Step(std::span<const StepItem> items, std::vector<SampledToken>* out,
                    const std::function<void()>& before_sampling) override {
    RETURN_IF_ERROR(CheckStepItems(items, pool_->capacity()));
    std::vector<CudaModel::Segment> segs;
    std::vector<size_t> seg_of(items.size());  // item -> its segment (an item with tokens)
    segs.reserve(items.size());
    for (size_t i = 0; i < items.size(); ++i) {
      const StepItem& it = items[i];
      if (it.sample_from >= 0) continue;
      RETURN_IF_ERROR(pool_->OrderBeforeUse(it.slot));  // a swap into or out of it may still run
      const auto logits = !it.score_targets.empty() ? CudaModel::Logits::kAll
                          : it.sample               ? CudaModel::Logits::kLast
                                                    : CudaModel::Logits::kNone;
      seg_of[i] = segs.size();
      segs.push_back({it.tokens, it.slot, logits, it.adapter});
    }
    std::vector<int> first_row;
    const CudaModel::States states{pool_->device_slots(), pool_->scratch_slot()};
    RETURN_IF_ERROR(model_->Forward(segs, states, &first_row));
    // The forward pass is queued on the stream: the masks are made while the GPU runs it.
    if (before_sampling) before_sampling();
    // Sampled rows and scored rows (a forced token each, the raw logits: no penalties, greedy) go
    // through the sampler in one launch; a sampled row's token mask (structured output) with it,
    // applied on the device (siblings of an n > 1 request each with their own).
    std::vector<SampleRequest> requests;
    std::vector<SamplingParams> score_params(items.size());
    auto last_row = [&](size_t i) {  // a sibling's (sample_from) is its leader's
      const size_t owner = items[i].sample_from >= 0 ? static_cast<size_t>(items[i].sample_from) : i;
      const size_t s = seg_of[owner];
      return first_row[s] +
             (segs[s].logits == CudaModel::Logits::kAll ? static_cast<int>(items[owner].tokens.size()) - 1 : 0);
    };
    for (size_t i = 0; i < items.size(); ++i) {
      const StepItem& it = items[i];
      score_params[i].logprobs = it.score_top;
      for (size_t t = 0; t < it.score_targets.size(); ++t)
        requests.push_back({first_row[seg_of[i]] + static_cast<int>(t), &score_params[i], nullptr, 0, it.score_targets[t]});
      if (it.sample) requests.push_back({last_row(i), it.params, it.history, it.step, -1, it.allowed});
    }
    std::vector<SampledToken> sampled;
    RETURN_IF_ERROR(sampler_->Sample(model_->logits(), config().vocab_size, vocab_limit(), requests, &sampled));
    if (requests.empty()) GLA_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(model_->stream()));  // a step ends done
    out->resize(items.size());
    size_t j = 0;
    for (size_t i = 0; i < items.size(); ++i) {
      const StepItem& it = items[i];
      for (size_t t = 0; t < it.score_targets.size(); ++t) it.scored->push_back(std::move(sampled[j++]));
      if (it.sample) (*out)[i] = std::move(sampled[j++]);
    }
    return absl::OkStatus();
  }

 private:
  std::unique_ptr<CudaModel> model_;
  std::unique_ptr<GpuStatePool> pool_;
  std::unique_ptr<CudaSampler> sampler_;
  int max_logit_rows_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(const std::string& model_dir, const CudaBackendOptions& options) {
  std::string why;
  if (!CudaBackendAvailable(&why)) return absl::FailedPreconditionError(absl::StrCat("--backend cuda: ", why));
  if (options.slots < 1 && options.state_memory_bytes <= 0) return absl::InvalidArgumentError("slots must be at least 1");
  ASSIGN_OR_RETURN(Checkpoint ck, LoadCheckpoint(model_dir));
  const StateLayout layout(ck.config);
  const int64_t state_bytes = StateWords(layout.floats(), options.state_dtype) * int64_t{sizeof(float)};
  int slots = options.slots;
  if (options.state_memory_bytes > 0) {
    slots = static_cast<int>(std::min<int64_t>(options.state_memory_bytes / state_bytes, 1 << 20));
    if (slots < 1)
      return absl::InvalidArgumentError(
          absl::StrCat("a state memory budget of ", options.state_memory_bytes, " bytes holds no state of ", state_bytes, " bytes"));
  }
  CudaModelOptions mo;
  mo.device = options.device;
  mo.max_tokens = std::max({options.step_token_budget, slots + options.min_prefill_tokens, DecodeBucket(slots)});
  // A row per running sequence, plus room for prompt scoring (a scored prompt token needs its own
  // row: kScoreRows per step, 32 MiB of fp32 logits at a 32k vocabulary).
  constexpr int kScoreRows = 256;
  mo.max_logit_rows = DecodeBucket(slots) + kScoreRows;
  mo.cuda_graphs = options.cuda_graphs;
  mo.chunked_prefill = options.chunked_prefill;
  mo.prefill_gate_in_prep = options.prefill_gate_in_prep;
  mo.prefill_chunk_segments = options.prefill_chunk_segments;
  mo.prefill_chunk_split_prep = options.prefill_chunk_split_prep;
  mo.persistent_decode = options.persistent_decode;
  mo.persistent_decode_max_batch = options.persistent_decode_max_batch;
  mo.persistent_tiles_in_flight = options.persistent_tiles_in_flight;
  mo.persistent_tile_bytes = options.persistent_tile_bytes;
  mo.persistent_blocks = options.persistent_blocks;
  mo.persistent_early_state_loads = options.persistent_early_state_loads;
  mo.persistent_tagged_exchange = options.persistent_tagged_exchange;
  mo.persistent_tagged_batched = options.persistent_tagged_batched;
  mo.weights = options.weights;
  mo.paths = options.paths;
  mo.gemm_tuning_cache = options.gemm_tuning_cache;
  ASSIGN_OR_RETURN(auto model, CudaModel::FromCheckpoint(std::move(ck), mo));
  // The GEMM tuning of every step size now, at load, rather than at a first step while serving (a
  // decode step holds at most a row a slot).
  RETURN_IF_ERROR(model->TuneBf16GemmsForEveryStepSize(slots));
  ASSIGN_OR_RETURN(auto pool, GpuStatePool::Create(slots, layout.floats(), options.state_dtype, model->stream()));
  ASSIGN_OR_RETURN(auto sampler, CudaSampler::Create(mo.max_logit_rows, model->config().vocab_size, model->stream()));
  return std::unique_ptr<Backend>(new CudaBackend(std::move(model), std::move(pool), std::move(sampler), mo.max_logit_rows));
}

}  // namespace gla
