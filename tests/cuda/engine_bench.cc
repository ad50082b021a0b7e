// gla-engine-bench: end-to-end speed of the CUDA backend (the same Backend::Step the server runs:
// packed steps, GPU state pool, CUDA-graph decode, GPU sampling) on one model directory.
//
//   gla-engine-bench --model DIR [--name gla-1.3B] [--prefill_tokens 4096] [--prompt 512]
//                    [--batches 1,32] [--decode_steps 64] [--cuda_graphs 1] [--chunked_prefill 1]
//                    [--persistent_decode 1] [--state_dtype f32|bf16] [--weights native|fp8|int8]
//                    [--byte_rows 16] [--fp8_made_rows 512] [--medium_rows N: every format; default: bf16 0, fp8 32, int8 64]
//                    [--warp_rows N: row kernels a warp a row from N rows; 0: never; default: the backend's]
//                    [--warp_rows_width W: ... on rows of at most W values; default: the backend's]
//                    [--gemm_tuning 0|1: bf16 GEMMs through the timed cuBLASLt algorithms; default: the backend's]
//                    [--persistent_batch N: decode steps of 2..N sequences through the batched persistent kernel; default: the backend's]
//                    [--tiles_in_flight N: the persistent kernels' weight tiles in flight, 0 the whole ring; default: the backend's]
//                    [--tile_bytes N: a cap on those tiles' bytes, 0 the kernels' own; default: the backend's]
//                    [--persistent_blocks N: the persistent kernels' grid, 0 one block per SM; default: the backend's]
//                    [--early_state 0|1: a block's first state item loaded after in_proj or before; default: the backend's]
//                    [--tagged 0|1|2|3: batch 1's residual stream and activations (2: and in_proj's values; 3: in_proj's values alone) as tagged words, not grid barriers; default: the backend's (3)]
//
// Prints one table row per measurement: time, tokens/s, the floor and the fla anchor of issue 4
// where one exists. Floors come from the device's own ceilings, measured at the start of the run
// (tests/cuda/device_ceilings.h): prefill = FLOPs / bf16 GEMM peak (TTFT: the larger of that and
// the weights read once / copy bandwidth); decode = (weights once per step + every state read and
// written) / copy bandwidth. Decode is timed greedy and sampled (temperature 0.8, top-p 0.95,
// repetition penalty 1.1), time per step. The "target" column holds issue 19's goal for the row.
// With --weights fp8 or int8 the decode floors count the one-byte rows (a byte per projection
// weight). With fp8 the prefill floor puts the projections' FLOPs at the FP8 GEMM peak, measured in
// the same run through the engine's own cuBLASLt path (tests/cuda/fp8_gemm_peak.h), and the rest
// (the GLA operator) at the bf16 peak; INT8 is weight-only (its prefill runs bf16 GEMMs), so its
// prefill floor is bf16's.
// With GLA_BENCH_OUT=DIR the table is also written to DIR/engine-<name>.json.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "engine/backend.h"
#include "kernels/gla.h"
#include "kernels/persistent_decode.h"
#include "tests/cuda/bench_report.h"
#include "tests/cuda/device_ceilings.h"
#include "tests/cuda/fp8_gemm_peak.h"
#include "tests/cuda/model_costs.h"

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void Die(const std::string& msg) {
  std::fprintf(stderr, "gla-engine-bench: error: %s\n", msg.c_str());
  std::exit(1);
}

double Seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

struct Anchor {
  double b1 = 0, b32 = 0, prefill = 0;  // tok/s, 0 = none
};

// Issue 19's targets, as fractions of the floor (0 = none for this model).
struct Targets {
  double decode = 0, prefill = 0, ttft_ms = 0;
};

}  // namespace

int main(int argc, char** argv) {
  const gla::CudaBackendOptions kDefaults;  // the backend's own: the flags' defaults and the name's suffixes
  std::map<std::string, std::string> flags = {{"model", ""},         {"name", ""},        {"prefill_tokens", "4096"},
                                              {"prompt", "512"},     {"batches", "1,32"}, {"decode_steps", "64"},
                                              {"cuda_graphs", "1"},  {"chunked_prefill", "1"}, {"persistent_decode", "1"},
                                              {"gate_in_prep", kDefaults.prefill_gate_in_prep ? "1" : "0"},
                                              {"chunk_segments", std::to_string(kDefaults.prefill_chunk_segments)},
                                              {"chunk_split_prep", std::to_string(kDefaults.prefill_chunk_split_prep)},
                                              {"state_dtype", "f32"},  {"weights", "native"},
                                              {"byte_rows", std::to_string(kDefaults.paths.byte_weight_kernel_rows)},
                                              {"fp8_made_rows", std::to_string(kDefaults.paths.fp8_made_rows_from)},
                                              {"medium_rows", "default"},
                                              {"gemm_tuning", kDefaults.paths.tuned_bf16_gemms ? "1" : "0"},
                                              {"gemm_tuning_cache", ""},
                                              {"warp_rows", std::to_string(kDefaults.paths.warp_rows_from)},
                                              {"warp_rows_width", std::to_string(kDefaults.paths.warp_rows_max_width)},
                                              {"persistent_batch", std::to_string(kDefaults.persistent_decode_max_batch)},
                                              {"tiles_in_flight", std::to_string(kDefaults.persistent_tiles_in_flight)},
                                              {"tile_bytes", std::to_string(kDefaults.persistent_tile_bytes)},
                                              {"persistent_blocks", std::to_string(kDefaults.persistent_blocks)},
                                              {"early_state", kDefaults.persistent_early_state_loads ? "1" : "0"},
                                              {"tagged", std::to_string(kDefaults.persistent_tagged_exchange)}};
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string f = argv[i];
    if (f.rfind("--", 0) != 0 || !flags.count(f.substr(2))) Die("unknown option " + f);
    flags[f.substr(2)] = argv[i + 1];
  }
  if (flags["model"].empty()) Die("--model DIR is required");
  auto num = [&](const std::string& k) {
    int v = 0;
    if (!absl::SimpleAtoi(flags[k], &v) || v < 0) Die("--" + k + " wants a number");
    return v;
  };
  const int prefill_tokens = num("prefill_tokens"), prompt = num("prompt"), steps = num("decode_steps");
  std::vector<int> batches;
  for (absl::string_view b : absl::StrSplit(flags["batches"], ',')) {
    int v = 0;
    if (!absl::SimpleAtoi(b, &v) || v < 1) Die("--batches wants numbers");
    batches.push_back(v);
  }
  const int max_batch = *std::max_element(batches.begin(), batches.end());

  gla::CudaBackendOptions o;
  o.slots = max_batch + 1;
  o.step_token_budget = std::max({prefill_tokens, prompt, 1});
  o.cuda_graphs = num("cuda_graphs") != 0;
  o.chunked_prefill = num("chunked_prefill") != 0;
  if (num("gate_in_prep") > 1) Die("--gate_in_prep wants 0 or 1");
  o.prefill_gate_in_prep = num("gate_in_prep") == 1;  // the prefill's gates made in the chunkwise prep
  o.prefill_chunk_segments = num("chunk_segments");    // the chunkwise kernel's plan forced (0: its own)
  if (o.prefill_chunk_segments > gla::kChunkMaxSegments) Die("--chunk_segments wants 0 to 64");
  o.prefill_chunk_split_prep = num("chunk_split_prep");
  if (o.prefill_chunk_split_prep > 2) Die("--chunk_split_prep wants 0 (auto), 1 (no) or 2 (yes)");
  o.persistent_decode = num("persistent_decode") != 0;
  o.persistent_decode_max_batch = num("persistent_batch");  // 2-8: the batched persistent kernel up to that batch
  if (o.persistent_decode_max_batch < 1 || o.persistent_decode_max_batch > gla::cuda::kPersistentMaxBatch)
    Die("--persistent_batch wants 1 to 8");
  o.persistent_tiles_in_flight = num("tiles_in_flight");  // the persistent kernels' producer: 0 the whole ring
  if (!gla::cuda::PersistentTilesInFlightValid(o.persistent_tiles_in_flight)) Die("--tiles_in_flight wants 0 to 16");
  o.persistent_tile_bytes = num("tile_bytes");  // a cap on the persistent kernels' weight tiles
  if (!gla::cuda::PersistentTileBytesValid(o.persistent_tile_bytes)) Die("--tile_bytes wants 0 or 2048 to 98304 in whole KiB");
  o.persistent_blocks = num("persistent_blocks");  // the persistent kernels' grid (capped at the SMs)
  if (!gla::cuda::PersistentBlocksValid(o.persistent_blocks)) Die("--persistent_blocks wants 0 to 1024");
  if (num("early_state") > 1) Die("--early_state wants 0 or 1");
  o.persistent_early_state_loads = num("early_state") == 1;
  if (num("tagged") > 3) Die("--tagged wants 0, 1, 2 or 3");
  o.persistent_tagged_exchange = num("tagged");
  const std::optional<gla::StateDType> state_dtype = gla::ParseStateDType(flags["state_dtype"]);
  if (!state_dtype) Die("--state_dtype wants f32 or bf16");
  o.state_dtype = *state_dtype;  // the floors follow: a bf16 state moves half the bytes
  const absl::StatusOr<gla::WeightFormat> weights = gla::ParseWeightFormat(flags["weights"]);
  if (!weights.ok()) Die(std::string(weights.status().message()));
  o.weights = *weights;  // so do they for FP8 weights (the backend's weight_bytes)
  // FP8 / INT8: the most rows the one-byte tensor-core kernel takes; FP8: the fewest rows a step
  // makes its inputs in the quantizing kernel for (0: never, quantized by their own launches).
  o.paths.byte_weight_kernel_rows = num("byte_rows");
  o.paths.fp8_made_rows_from = num("fp8_made_rows");
  if (flags["medium_rows"] != "default")  // 17-256-row projections in LinearMediumM* for every format (0: never)
    o.paths.medium_m_kernel_rows = o.paths.fp8_medium_m_kernel_rows = o.paths.int8_medium_m_kernel_rows =
        num("medium_rows");
  o.paths.tuned_bf16_gemms = num("gemm_tuning") != 0;
  // A GEMM tuning cache (CudaModelOptions::gemm_tuning_cache): a later run on the same file runs the
  // algorithms this one timed without timing them (deploy/engine-profile.sh: its Nsight runs profile
  // the steps, not thousands of tuning launches).
  o.gemm_tuning_cache = flags["gemm_tuning_cache"];
  o.paths.warp_rows_from = num("warp_rows");  // steps of this many rows and more: row kernels a warp a row (0: never)
  o.paths.warp_rows_max_width = num("warp_rows_width");  // ... on rows of at most this many values
  // The backend's load: the checkpoint read, weights uploaded, workspace, and (bf16 weights with
  // tuning) the GEMM tuning of every step size (CudaModel::TuneBf16GemmsForEveryStepSize).
  const auto load_start = std::chrono::steady_clock::now();
  auto backend_or = gla::MakeCudaBackend(flags["model"], o);
  if (!backend_or.ok()) Die(std::string(backend_or.status().message()));
  const double load_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - load_start).count();
  gla::Backend& b = **backend_or;
  const gla::GlaConfig& c = b.config();
  const std::string name = flags["name"].empty() ? flags["model"] : flags["name"];
  const Anchor anchor = name == "gla-1.3B" ? Anchor{23, 568, 57000} : name == "gla-340M" ? Anchor{19, 512, 0} : Anchor{};
  const Targets target = name == "gla-1.3B" ? Targets{0.80, 0.70, 2.5} : name == "gla-340M" ? Targets{0.75, 0.60, 0} : Targets{};
  // The report's name: the model, then each setting that differs from the backend's default.
  std::string report_name = "engine-" + name + (o.state_dtype == gla::StateDType::kBF16 ? "-bf16-states" : "");
  if (o.weights != gla::WeightFormat::kNative) report_name += std::string("-") + gla::WeightFormatName(o.weights) + "-weights";
  auto unless_default = [&](const char* what, auto value, auto default_value) {
    if (value != default_value) report_name += std::string("-") + what + "-" + std::to_string(value);
  };
  unless_default("byte-rows", o.paths.byte_weight_kernel_rows, kDefaults.paths.byte_weight_kernel_rows);
  unless_default("fp8-made-rows-from", o.paths.fp8_made_rows_from, kDefaults.paths.fp8_made_rows_from);
  if (flags["medium_rows"] != "default") report_name += "-medium-rows-" + std::to_string(o.paths.medium_m_kernel_rows);
  unless_default("gemm-tuning", int{o.paths.tuned_bf16_gemms}, int{kDefaults.paths.tuned_bf16_gemms});
  unless_default("gate-in-prep", int{o.prefill_gate_in_prep}, int{kDefaults.prefill_gate_in_prep});
  unless_default("chunk-segments", o.prefill_chunk_segments, kDefaults.prefill_chunk_segments);
  unless_default("chunk-split-prep", o.prefill_chunk_split_prep, kDefaults.prefill_chunk_split_prep);
  unless_default("warp-rows", o.paths.warp_rows_from, kDefaults.paths.warp_rows_from);
  unless_default("warp-rows-width", o.paths.warp_rows_max_width, kDefaults.paths.warp_rows_max_width);
  unless_default("persistent-batch", o.persistent_decode_max_batch, kDefaults.persistent_decode_max_batch);
  unless_default("tiles-in-flight", o.persistent_tiles_in_flight, kDefaults.persistent_tiles_in_flight);
  unless_default("tile-bytes", o.persistent_tile_bytes, kDefaults.persistent_tile_bytes);
  unless_default("persistent-blocks", o.persistent_blocks, kDefaults.persistent_blocks);
  unless_default("early-state", int{o.persistent_early_state_loads}, int{kDefaults.persistent_early_state_loads});
  unless_default("tagged", o.persistent_tagged_exchange, kDefaults.persistent_tagged_exchange);
  // The ceilings measured after the model is loaded (its memory is taken), before anything is timed.
  gla::bench::BenchReport report(report_name, gla::bench::MeasureDeviceCeilings());
  const gla::bench::DeviceCeilings& ceil = report.ceilings();

  const gla::bench::ModelCosts costs = gla::bench::CostsOf(b);
  const double flops_per_token = costs.flops_per_token, state_bytes = costs.state_bytes;
  const double decode_bytes_b1 = costs.step_weight_bytes;
  // FP8 weights: the projections' share of prefill at the FP8 GEMM peak (0 where none was measured:
  // then bf16's, and the header says so).
  const double fp8_peak = o.weights == gla::WeightFormat::kFp8 ? gla::bench::MeasureFp8GemmPeak() : 0;
  auto prefill_floor_s = [&](double T) {
    if (fp8_peak <= 0) return ceil.FlopsSeconds(flops_per_token * T);
    return costs.projection_flops_per_token * T / fp8_peak +
           ceil.FlopsSeconds((flops_per_token - costs.projection_flops_per_token) * T);
  };

  report.PrintHeader();
  std::printf("# %s: weights %.2f GiB (%s), state %.1f MiB per sequence (%s), workspace %.2f GiB; %.2f GFLOP and "
              "%.2f GB (B=1) per token\n",
              name.c_str(), b.weight_bytes() / 1073741824.0,
              o.weights == gla::WeightFormat::kNative ? "bf16" : gla::WeightFormatName(o.weights),
              state_bytes / 1048576.0,
              gla::StateDTypeName(b.pool().state_dtype()), b.workspace_bytes() / 1073741824.0, flops_per_token / 1e9,
              (decode_bytes_b1 + 2 * state_bytes) / 1e9);
  std::printf("# decode: %s; backend: %s\n", o.cuda_graphs ? "CUDA graphs" : "eager", b.device().c_str());
  const int medium_rows = o.weights == gla::WeightFormat::kInt8  ? o.paths.int8_medium_m_kernel_rows
                          : o.weights == gla::WeightFormat::kFp8 ? o.paths.fp8_medium_m_kernel_rows
                                                                 : o.paths.medium_m_kernel_rows;
  std::printf("# medium-M kernel above the decode-sized kernels: to %d rows with %s weights (0: never)\n", medium_rows,
              o.weights == gla::WeightFormat::kNative ? "bf16" : gla::WeightFormatName(o.weights));
  if (o.weights != gla::WeightFormat::kNative)  // the A/B switches (kernels/linear.h, linear_fp8.h)
    std::printf("# one-byte rows read by the tensor-core kernel up to %d rows a step; FP8 inputs %s\n",
                o.paths.byte_weight_kernel_rows,
                o.paths.fp8_made_rows_from > 0
                    ? ("made in the quantizing kernel from " + std::to_string(o.paths.fp8_made_rows_from) + " rows")
                          .c_str()
                    : "quantized separately");
  report.SetNote("model", name);
  report.SetNote("decode", o.cuda_graphs ? "CUDA graphs" : "eager");
  report.SetNote("backend", b.device());
  std::printf("# backend load: %.0f ms (checkpoint, upload, workspace%s)\n", load_ms,
              o.paths.tuned_bf16_gemms && o.weights == gla::WeightFormat::kNative ? ", GEMM tuning of every step size" : "");
  report.SetNote("backend_load_ms", std::to_string(static_cast<int64_t>(load_ms)));
  report.SetNote("medium_m_kernel_rows", std::to_string(medium_rows));
  std::printf("# bf16 GEMMs: %s\n", o.paths.tuned_bf16_gemms ? "cuBLASLt algorithms timed per shape and row count (--gemm_tuning 1)"
                                                              : "cublasGemmEx's default (--gemm_tuning 0)");
  report.SetNote("tuned_bf16_gemms", o.paths.tuned_bf16_gemms ? "1" : "0");
  std::printf("# row kernels (norms, FP8 input quantizers): a warp a row %s (--warp_rows, --warp_rows_width)\n",
              o.paths.warp_rows_from > 0 ? ("from " + std::to_string(o.paths.warp_rows_from) + " rows of at most " +
                                            std::to_string(o.paths.warp_rows_max_width) + " values")
                                               .c_str()
                                         : "never, a block a row");
  report.SetNote("warp_rows_from", std::to_string(o.paths.warp_rows_from));
  report.SetNote("warp_rows_max_width", std::to_string(o.paths.warp_rows_max_width));
  std::printf("# decode steps through the persistent kernel: %s (--persistent_decode, --persistent_batch)\n",
              !o.persistent_decode                   ? "none"
              : o.persistent_decode_max_batch > 1 ? ("batches of 1 to " + std::to_string(o.persistent_decode_max_batch) +
                                                     " where the device and shapes allow")
                                                        .c_str()
                                                  : "batch 1 where the device and shapes allow");
  static const char* const kTaggedLevels[] = {"grid barriers", "x and act as tagged words",
                                               "x, act and in_proj's values as tagged words",
                                               "in_proj's values as tagged words, x and act through barriers"};
  if (o.persistent_decode)
    std::printf("# batch-1 persistent exchanges: level %d, %s, where the shapes allow (--tagged)\n",
                o.persistent_tagged_exchange, kTaggedLevels[o.persistent_tagged_exchange]);
  std::printf("# prefill gates: %s (--gate_in_prep)\n",
              o.prefill_gate_in_prep ? "made in the chunkwise prep kernel" : "LowRankGate, read back by the prep");
  report.SetNote("prefill_gate_in_prep", o.prefill_gate_in_prep ? "1" : "0");
  if (o.prefill_chunk_segments != 0 || o.prefill_chunk_split_prep != 0)
    std::printf("# chunkwise plan forced: %d segments a sequence (0: its own), prep split %d (0 its own, 1 no, 2 yes)\n",
                o.prefill_chunk_segments, o.prefill_chunk_split_prep);
  report.SetNote("prefill_chunk_plan", std::to_string(o.prefill_chunk_segments) + "/" + std::to_string(o.prefill_chunk_split_prep));
  report.SetNote("persistent_tiles_in_flight", std::to_string(o.persistent_tiles_in_flight));
  report.SetNote("persistent_tile_bytes", std::to_string(o.persistent_tile_bytes));
  report.SetNote("persistent_blocks", std::to_string(o.persistent_blocks));
  report.SetNote("persistent_early_state_loads", o.persistent_early_state_loads ? "1" : "0");
  report.SetNote("persistent_tagged_exchange", std::to_string(o.persistent_tagged_exchange));
  report.SetNote("persistent_decode_max_batch", std::to_string(o.persistent_decode ? o.persistent_decode_max_batch : 0));
  if (o.weights != gla::WeightFormat::kNative) {
    report.SetNote("byte_weight_kernel_rows", std::to_string(o.paths.byte_weight_kernel_rows));
    report.SetNote("fp8_made_rows_from", std::to_string(o.paths.fp8_made_rows_from));
  }
  if (o.weights == gla::WeightFormat::kFp8) {
    std::printf("# fp8 GEMM peak (8192^3, cuBLASLt, scales per row): %.0f TFLOP/s%s\n", fp8_peak / 1e12,
                fp8_peak > 0 ? " (the projections' prefill floor)" : ": not measured, prefill floor at bf16's peak");
    report.SetNote("fp8_gemm_tflops", std::to_string(fp8_peak / 1e12));
  }
  std::printf("%-26s %10s %12s %12s %9s %12s %9s  %s\n", "measure", "time ms", "tok/s", "floor tok/s", "of floor",
              "anchor tok/s", "x anchor", "target");
  // `goal`: the target as a fraction of the floor (0: none); `goal_ms`: as a time instead.
  auto row = [&](const std::string& what, double seconds, double tokens, double floor_tps, double anchor_tps,
                 double goal, double goal_ms = 0) {
    const double tps = tokens / seconds, of_floor = tps / floor_tps;
    std::printf("%-26s %10.3f %12.0f %12.0f %8.1f%% ", what.c_str(), seconds * 1e3, tps, floor_tps, 100.0 * of_floor);
    if (anchor_tps > 0) std::printf("%12.0f %8.2fx", anchor_tps, tps / anchor_tps);
    else std::printf("%12s %9s", "-", "-");
    std::string verdict = "-";
    if (goal > 0) verdict = (of_floor >= goal ? "met (>= " : "missed (>= ") + std::to_string(int(goal * 100 + 0.5)) + "%)";
    if (goal_ms > 0)
      verdict = (seconds * 1e3 <= goal_ms ? "met (<= " : "missed (<= ") + std::to_string(goal_ms).substr(0, 3) + " ms)";
    std::printf("  %s\n", verdict.c_str());
    report.AddRow()
        .Str("measure", what)
        .Num("time_ms", seconds * 1e3)
        .Num("tokens_per_s", tps)
        .Num("floor_tokens_per_s", floor_tps)
        .Num("of_floor", of_floor)
        .Num("anchor_tokens_per_s", anchor_tps)
        .Str("target", verdict);
  };

  std::mt19937 rng(1);
  std::uniform_int_distribution<int> tok(3, std::min(c.vocab_size, 32000) - 1);
  auto tokens = [&](int n) {
    std::vector<int32_t> v(n);
    for (auto& t : v) t = tok(rng);
    return v;
  };
  gla::SamplingParams greedy;
  gla::TokenHistory history;
  auto run = [&](const std::vector<gla::StepItem>& items) {
    std::vector<gla::SampledToken> out;
    const auto s = b.Step(items, &out);
    if (!s.ok()) Die(std::string(s.message()));
    return out;
  };
  auto fresh_slot = [&]() {
    auto s = b.pool().Acquire();
    if (!s) Die("no free slot");
    return *s;
  };

  // Prefill throughput and TTFT: one sequence, whole prompt in one step, first token sampled.
  for (auto [what, T] : {std::pair{std::string("prefill T=") + std::to_string(prefill_tokens), prefill_tokens},
                         std::pair{std::string("TTFT prompt ") + std::to_string(prompt), prompt}}) {
    if (T == 0) continue;
    const auto ids = tokens(T);
    std::vector<double> times;
    for (int rep = 0; rep < 4; ++rep) {
      const int slot = fresh_slot();
      const auto t0 = Clock::now();
      run({gla::StepItem{ids, slot, true, &greedy, &history, 0}});
      times.push_back(Seconds(t0, Clock::now()));
      b.pool().Release(slot);
    }
    std::sort(times.begin() + 1, times.end());  // the first is warm-up
    const double t = times[2];
    const bool is_prefill = what.rfind("prefill", 0) == 0;
    // A short prompt may be bound by reading the weights once rather than by the FLOPs.
    const double floor_s = std::max(prefill_floor_s(T), is_prefill ? 0.0 : ceil.BytesSeconds(decode_bytes_b1));
    row(what, t, T, T / floor_s, is_prefill ? anchor.prefill : 0, is_prefill ? target.prefill : 0,
        is_prefill || T != 512 ? 0 : target.ttft_ms);
  }

  // Decode: B sequences after a `prompt`-token prefill each, `steps` steps of one token each.
  for (int B : batches) {
    std::vector<int> slots;
    std::vector<std::vector<int32_t>> prompts, feed(B);
    for (int i = 0; i < B; ++i) {
      slots.push_back(fresh_slot());
      prompts.push_back(tokens(std::max(prompt, 1)));
    }
    std::vector<gla::StepItem> items;
    int in_step = 0;
    for (int i = 0; i < B; ++i) {  // prefill, packed up to the step budget
      items.push_back({prompts[i], slots[i], true, &greedy, &history, 0});
      in_step += static_cast<int>(prompts[i].size());
      if (i + 1 == B || in_step + static_cast<int>(prompts[i + 1].size()) > o.step_token_budget) {
        const auto out = run(items);
        for (size_t j = 0; j < items.size(); ++j) feed[i + 1 - items.size() + j] = {out[j].token};
        items.clear();
        in_step = 0;
      }
    }
    // Sampled decoding as a chat server runs it: temperature, nucleus, a repetition penalty over
    // each sequence's prompt (the GPU sampler's sort and penalty paths; greedy skips both).
    gla::SamplingParams sampled;
    sampled.temperature = 0.8f;
    sampled.top_p = 0.95f;
    sampled.repetition_penalty = 1.1f;
    std::vector<gla::TokenHistory> histories(B);
    for (int i = 0; i < B; ++i) histories[i].AddPrompt(prompts[i]);
    auto decode_step = [&](uint64_t k, const gla::SamplingParams* p) {
      std::vector<gla::StepItem> step;
      for (int i = 0; i < B; ++i) step.push_back({feed[i], slots[i], true, p, &histories[i], k});
      const auto out = run(step);
      for (int i = 0; i < B; ++i) feed[i] = {out[i].token};
    };
    const double floor_step = ceil.BytesSeconds(decode_bytes_b1 + 2.0 * B * state_bytes);
    for (const gla::SamplingParams* p : {&greedy, &sampled}) {
      for (int k = 0; k < 3; ++k) decode_step(1 + k, p);  // warm-up (captures the bucket's graph)
      const auto t0 = Clock::now();
      for (int k = 0; k < steps; ++k) decode_step(4 + k, p);
      const double t = Seconds(t0, Clock::now()) / std::max(steps, 1);
      row("decode B=" + std::to_string(B) + (p == &greedy ? " greedy" : " top-p 0.95"), t, B, B / floor_step,
          B == 1 ? anchor.b1 : B == 32 ? anchor.b32 : 0, p == &greedy ? target.decode : 0);
    }
    for (int s : slots) b.pool().Release(s);
  }
  return report.WriteJsonIfAsked() ? 0 : 1;
}
