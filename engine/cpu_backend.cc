// The CPU backend: CpuModel over a host StatePool, sampling on the host. With bf16 states
// (--state_dtype bf16) the pool keeps half the bytes; a step unpacks its sequences' states to fp32,
// runs the model on them and packs what it returns (rounded to bf16) back into their slots.
#include <algorithm>
#include <thread>

#include "absl/strings/str_cat.h"
#include "engine/backend.h"
#include "engine/model/cpu_model.h"
#include "models/status_macros.h"

namespace gla {

namespace {

class CpuBackend : public Backend {
 public:
  CpuBackend(std::unique_ptr<CpuModel> model, int slots, StateDType state_dtype, int64_t weight_bytes, int threads)
      : model_(std::move(model)), pool_(slots, model_->state_layout().floats(), state_dtype), weight_bytes_(weight_bytes),
        threads_(threads) {}

  std::string name() const override { return "cpu"; }
  std::string device() const override {
    return absl::StrCat("CPU (", threads_ > 0 ? threads_ : static_cast<int>(std::thread::hardware_concurrency()),
                        " BLAS threads", model_->weights() == WeightFormat::kInt8  ? ", int8 weights"
                                        : model_->weights() == WeightFormat::kFp8 ? ", fp8 weights (fp32 arithmetic)"
                                                                                  : "",
                        pool_.state_dtype() == StateDType::kBF16 ? ", bf16 states" : "", ")");
  }
  const GlaConfig& config() const override { return model_->config(); }
  const Tokenizer* tokenizer() const override { return model_->tokenizer(); }
  int64_t weight_bytes() const override { return weight_bytes_; }
  StatePool& pool() override { return pool_; }
  int64_t state_pool_bytes() const override { return int64_t{pool_.capacity()} * pool_.state_bytes(); }
  int64_t workspace_bytes() const override { return 0; }  // sized per step on the heap
  bool supports_adapters() const override { return true; }
  WeightFormat weight_format() const override { return model_->weights(); }

  // Any number: the logits of a step are sized per step on the heap.
  int max_logit_rows() const override { return 1 << 20; }

  using Backend::Step;
  absl::Status Step(std::span<const StepItem> items, std::vector<SampledToken>* out,
                    const std::function<void()>& before_sampling) override {
    RETURN_IF_ERROR(CheckStepItems(items, pool_.capacity()));
    std::vector<CpuModel::Segment> segs;
    segs.reserve(items.size());
    const bool bf16 = pool_.state_dtype() == StateDType::kBF16;
    const int64_t values = pool_.state_values();
    size_t unpacked = 0;
    for (const StepItem& it : items) {
      if (it.sample_from >= 0) continue;
      float* state = pool_.data(it.slot);
      if (bf16) {  // the model runs on an fp32 copy
        if (unpacked == fp32_states_.size()) fp32_states_.emplace_back(static_cast<size_t>(values));
        state = fp32_states_[unpacked++].data();
        UnpackBf16State(pool_.data(it.slot), values, state);
      }
      segs.push_back({it.tokens, state, !it.score_targets.empty(), it.adapter.get()});
    }
    std::vector<float> logits;
    RETURN_IF_ERROR(model_->Forward(segs, &logits));  // refused: no slot was written
    if (bf16) {
      size_t seg = 0;
      for (const StepItem& it : items)
        if (it.sample_from < 0) PackBf16State(segs[seg++].state, values, pool_.data(it.slot));
    }
    if (before_sampling) before_sampling();
    out->resize(items.size());
    const size_t V = config().vocab_size;
    auto logits_row = [&](size_t r) { return std::span<const float>(logits).subspan(r * V, V); };
    std::vector<size_t> last_row(items.size());
    size_t row = 0, seg = 0;  // an all-logits segment has a row per token, the others one
    for (size_t i = 0; i < items.size(); ++i) {
      const StepItem& it = items[i];
      if (it.sample_from >= 0) {
        last_row[i] = last_row[it.sample_from];
      } else {
        for (size_t t = 0; t < it.score_targets.size(); ++t)
          it.scored->push_back(ScoreToken(logits_row(row + t), vocab_limit(), it.score_targets[t], it.score_top));
        row += segs[seg++].all_logits ? it.tokens.size() : 1;
        last_row[i] = row - 1;
      }
      if (it.sample) (*out)[i] = SampleToken(logits_row(last_row[i]), vocab_limit(), *it.params, *it.history, it.step,
                                           it.allowed);
    }
    return absl::OkStatus();
  }

 private:
  std::unique_ptr<CpuModel> model_;
  HostStatePool pool_;
  std::vector<std::vector<float>> fp32_states_;  // bf16 pool: a step's states unpacked (kept for reuse)
  int64_t weight_bytes_;
  int threads_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> MakeCpuBackend(const std::string& model_dir, const CpuBackendOptions& options) {
  if (options.slots < 1) return absl::InvalidArgumentError("slots must be at least 1");
  ASSIGN_OR_RETURN(Checkpoint ck, LoadCheckpoint(model_dir));
  CpuModelOptions mo;
  mo.threads = options.threads;
  mo.weights = options.weights;
  ASSIGN_OR_RETURN(auto model, CpuModel::FromCheckpoint(std::move(ck), mo));
  const int64_t weight_bytes = model->weight_bytes();
  return std::unique_ptr<Backend>(
      new CpuBackend(std::move(model), options.slots, options.state_dtype, weight_bytes, options.threads));
}

}  // namespace gla
