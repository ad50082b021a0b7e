// gla-finetune-bench: LoRA training throughput of the fine-tune path (engine/finetune/trainer.h)
// on a checkpoint, on the CPU or the GPU, next to its FLOP floor.
//
//   gla-finetune-bench --model DIR [--device cpu|cuda] [--steps 3] [--batch 1] [--seq-len 256]
//                      [--rank 8] [--targets q_proj,k_proj,v_proj,o_proj]
//
// Random token documents; one untimed step, then `steps` timed ones. The floor: a LoRA step with
// frozen base weights computes the forward (2 FLOPs per weight and token) and the gradients of the
// activations (2 more), but no base weight gradients: ~4 N FLOPs per token for N matrix weights
// (embeddings excluded, lm_head included), plus the chunkwise GLA work, at a peak rate: on the CPU
// the sgemm rate this machine measures here (OpenBLAS, 1024^3); on a GPU the cuBLAS GEMM rates the
// device reaches in the same run (tests/cuda/device_ceilings.h: TF32, what the projections run on;
// bf16, the floor a bf16 training path would have). Also printed: how often a step offers serving the device (its
// yield points) and the longest stretch between two of them.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <vector>

#include <cblas.h>

#if defined(GLA_HAVE_CUDA)
#include "tests/cuda/device_ceilings.h"
#endif

#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "clients/common/args.h"
#include "clients/common/usage.h"
#include "engine/finetune/trainer.h"
#include "models/checkpoint.h"
#include "models/status_macros.h"

namespace gla {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// FLOP/s of a 1024^3 sgemm (best of 3).
double SgemmRate() {
  constexpr int n = 1024;
  std::vector<float> a(n * n, 0.5f), b(n * n, 0.25f), c(n * n);
  double best = 0;
  for (int i = 0; i < 3; ++i) {
    const auto t0 = Clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    best = std::max(best, 2.0 * n * n * n / Seconds(t0, Clock::now()));
  }
  return best;
}

absl::Status Main(const ParsedArgs& a) {
  ASSIGN_OR_RETURN(std::string dir, a.Required("model"));
  ASSIGN_OR_RETURN(int steps, a.Int("steps", 3, 1));
  ASSIGN_OR_RETURN(int batch, a.Int("batch", 1, 1));
  ASSIGN_OR_RETURN(int seq_len, a.Int("seq-len", 256, 2));
  ASSIGN_OR_RETURN(int rank, a.Int("rank", 8, 1));
  const std::string device = a.Has("device") ? a.flags.at("device") : "cpu";
  if (device != "cpu" && device != "cuda") return absl::InvalidArgumentError("--device must be cpu or cuda");
  TrainDevice where;
  std::string device_name = "CPU";
  double tf32_peak = 0, bf16_peak = 0;
  if (device == "cuda") {
    where.cuda_device = 0;
#if defined(GLA_HAVE_CUDA)
    const bench::DeviceCeilings ceil = bench::MeasureDeviceCeilings();  // before the job takes its memory
    device_name = ceil.device;
    tf32_peak = ceil.tf32_gemm_flops;
    bf16_peak = ceil.bf16_gemm_flops;
#else
    return absl::UnavailableError("this build has no CUDA");
#endif
  }
  std::vector<std::string> targets = {"q_proj", "k_proj", "v_proj", "o_proj"};
  if (a.Has("targets")) targets = absl::StrSplit(a.flags.at("targets"), ',', absl::SkipEmpty());
  ASSIGN_OR_RETURN(Checkpoint ck, LoadCheckpoint(dir));
  const GlaConfig& c = ck.config;
  if (where.cuda()) RETURN_IF_ERROR(CudaTrainingAvailable(c));

  TrainOptions o;
  o.method = TrainOptions::Method::kLora;
  o.lora.r = rank;
  o.lora.alpha = 2.0 * rank;
  ASSIGN_OR_RETURN(o.lora.targets, ParseLoraTargets(targets));
  o.max_steps = steps + 1;
  o.batch_sequences = batch;
  o.sequence_length = seq_len;
  o.warmup_steps = 0;
  std::mt19937 rng(1);
  std::vector<std::vector<int32_t>> docs(std::max(4, 2 * batch));
  for (auto& d : docs) {
    d.resize(seq_len + 1);
    for (auto& t : d) t = static_cast<int32_t>(rng() % c.vocab_size);
  }
  ASSIGN_OR_RETURN(auto trainer, Trainer::Create(ck, o, docs, where));

  // Matrix weights (embeddings excluded; the lm_head, tied or not, counted once).
  int64_t n = 0;
  for (const LayerWeights& l : ck.weights.layers)
    for (const Weight* w : {&l.q_proj, &l.k_proj, &l.v_proj, &l.g_proj, &l.o_proj, &l.gk_proj0, &l.gk_proj1,
                            &l.gate_proj, &l.up_proj, &l.down_proj})
      n += static_cast<int64_t>(w->data.size());
  n += static_cast<int64_t>(c.vocab_size) * c.hidden_size;
  // Chunkwise GLA per token, layer and head (C = 64): forward 2 (2 dk dv + C dv + C dk), backward
  // about twice that.
  const double C = 64, dk = c.head_k_dim, dv = c.head_v_dim;
  const double gla = 3.0 * 2 * (2 * dk * dv + C * dv + C * dk) * c.num_heads * c.num_hidden_layers;
  const double flops_per_token = 4.0 * static_cast<double>(n) + gla;
  const double rate = where.cuda() ? tf32_peak : SgemmRate();

  // Steps run as a fine-tune job runs them: with a yield hook (here one that never waits), called
  // where a serving step waiting for the device would go in. The longest stretch between two
  // calls (or a step's start or end and the nearest call) is what such a serving step can wait.
  Clock::time_point mark;
  double longest_gap = 0;
  int64_t yields = 0;
  const auto yield = [&] {
    const auto now = Clock::now();
    longest_gap = std::max(longest_gap, Seconds(mark, now));
    mark = now;
    ++yields;
    return true;
  };
  ASSIGN_OR_RETURN(TrainProgress warm, trainer->Step(yield));  // untimed: first-touch allocations
  longest_gap = 0;
  yields = 0;
  const auto t0 = Clock::now();
  TrainProgress last = warm;
  for (int i = 0; i < steps; ++i) {
    mark = Clock::now();
    ASSIGN_OR_RETURN(last, trainer->Step(yield));
    longest_gap = std::max(longest_gap, Seconds(mark, Clock::now()));
  }
  const double s = Seconds(t0, Clock::now());
  const double tokens = static_cast<double>(steps) * batch * seq_len;
  const double floor_tps = rate / flops_per_token;
  std::printf("model %s: %lld matrix weights, hidden %d, %d layers; LoRA rank %d on %s; %.2f GFLOP per token\n",
              dir.c_str(), static_cast<long long>(n), c.hidden_size, c.num_hidden_layers, rank,
              absl::StrJoin(targets, ",").c_str(), flops_per_token / 1e9);
  std::printf("| device | batch x seq | steps | s/step | tokens/s | floor tokens/s | of floor | loss |\n");
  std::printf("| --- | --- | --- | --- | --- | --- | --- | --- |\n");
  if (!where.cuda()) {
    std::printf("| CPU, sgemm %.0f GFLOP/s | %d x %d | %d | %.2f | %.1f | %.1f | %.0f%% | %.3f |\n", rate / 1e9, batch,
                seq_len, steps, s / steps, tokens / s, floor_tps, 100.0 * (tokens / s) / floor_tps, last.loss);
  } else if (rate > 0) {
    const double bf16_floor = bf16_peak / flops_per_token;
    std::printf("| %s, TF32 GEMM %.0f TFLOP/s measured now | %d x %d | %d | %.4f | %.0f | %.0f | %.0f%% (%.0f%% of the bf16 floor, "
                "%.0f) | %.3f |\n",
                device_name.c_str(), rate / 1e12, batch, seq_len, steps, s / steps, tokens / s, floor_tps,
                100.0 * (tokens / s) / floor_tps, 100.0 * (tokens / s) / bf16_floor, bf16_floor, last.loss);
  } else {
    std::printf("| %s (peak unknown) | %d x %d | %d | %.4f | %.0f | n/a | n/a | %.3f |\n", device_name.c_str(), batch,
                seq_len, steps, s / steps, tokens / s, last.loss);
  }
  std::printf("yield points: %.0f per step; longest stretch without one %.1f ms (what a serving step waiting for "
              "the device waits at most)\n",
              static_cast<double>(yields) / steps, longest_gap * 1e3);
  return absl::OkStatus();
}

}  // namespace
}  // namespace gla

int main(int argc, char** argv) {
  // One command, always implicit: `gla-finetune-bench --model DIR ...`.
  const gla::ProgramSpec program = {
      "gla-finetune-bench",
      "LoRA training throughput of the fine-tune path, next to its FLOP floor",
      {{"run",
        "one untimed step, then --steps timed ones on random token documents",
        {{"model", "DIR", "checkpoint directory", ""},
         {"device", "cpu|cuda", "where to train", "cpu"},
         {"steps", "N", "timed steps", "3"},
         {"batch", "B", "sequences per step", "1"},
         {"seq-len", "L", "tokens per sequence", "256"},
         {"rank", "R", "LoRA rank", "8"},
         {"targets", "LIST", "modules to adapt, comma-separated", "q_proj,k_proj,v_proj,o_proj"}}}},
      "run"};
  int exit_code = 0;
  const std::optional<gla::ParsedArgs> parsed = gla::ParseCommandLine(program, argc, argv, &exit_code);
  if (!parsed) return exit_code;
  const absl::Status st = gla::Main(*parsed);
  if (!st.ok()) {
    std::fprintf(stderr, "gla-finetune-bench: error: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  return 0;
}
