// gla-eval: run a GLA checkpoint on the CPU without a server.
//
//   gla-eval logits     --model DIR --ids 1,2,3 --out FILE.safetensors   (F32 "logits" [T, vocab])
//   gla-eval perplexity --model DIR --text FILE                          (tokens and perplexity)
//   gla-eval generate   --model DIR (--prompt TEXT | --prompt-ids 1,2) --max-new-tokens N [--ignore-eos 1]
//   gla-eval bench      --model DIR [--prompt-len 512] [--new-tokens 32] [--batch 1]
//
// Common options: --threads N (BLAS threads), --chunk C, --sub-chunk c, --form chunkwise|recurrent,
// --weights native|int8|fp8;
// every flag with its default: Program() below (`gla-eval --help`, `gla-eval COMMAND --help`).
// Any failure: one line "gla-eval: error: ..." on stderr; exit code 2 for a command line that
// does not parse, 1 for the rest.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "clients/common/args.h"
#include "clients/common/usage.h"
#include "clients/gla_eval/drift.h"
#include "engine/model/cpu_model.h"
#include "engine/model/quantized_checkpoint.h"
#include "models/safetensors.h"
#include "models/status_macros.h"

namespace gla {
namespace {

using Clock = std::chrono::steady_clock;
double Seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// The flags every command takes (LoadModel reads them), then the command's own.
std::vector<FlagSpec> With(std::initializer_list<FlagSpec> extra) {
  const CpuModelOptions defaults;
  std::vector<FlagSpec> flags = {
      {"model", "DIR", "checkpoint directory (config.json, model.safetensors)", ""},
      {"threads", "N", "BLAS threads; 0: the library's default", std::to_string(defaults.threads)},
      {"chunk", "C", "chunk length of the chunkwise GLA form", std::to_string(defaults.chunk)},
      {"sub-chunk", "c", "sub-chunk length inside a chunk", std::to_string(defaults.sub_chunk)},
      {"form", "chunkwise|recurrent", "how the GLA layers run a prompt", "chunkwise"},
      {"weights", "native|int8|fp8",
       "the projections' weights: fp32, weight-only INT8 quantized at load, or FP8 E4M3 rounded at load (computed in "
       "fp32)",
       "native"},
      {"state-dtype", "f32|bf16", "what a sequence's state keeps between steps (bf16: rounded after each step)", "f32"},
      {"activations", "f32|bf16",
       "the activations the GPU keeps in bf16 (normed rows, the gated attention output, gate|up, SwiGLU): fp32, or "
       "rounded to bf16 where the GPU rounds them",
       "f32"},
  };
  flags.insert(flags.end(), extra.begin(), extra.end());
  return flags;
}

absl::StatusOr<std::unique_ptr<CpuModel>> LoadModel(const ParsedArgs& a) {
  ASSIGN_OR_RETURN(std::string dir, a.Required("model"));
  CpuModelOptions o;
  ASSIGN_OR_RETURN(o.threads, a.Int("threads", 0, 0));
  ASSIGN_OR_RETURN(o.chunk, a.Int("chunk", o.chunk, 1));
  ASSIGN_OR_RETURN(o.sub_chunk, a.Int("sub-chunk", o.sub_chunk, 1));
  if (a.Has("form")) {
    const std::string form = a.flags.at("form");
    if (form == "recurrent") o.gla_form = CpuModelOptions::GlaForm::kRecurrent;
    else if (form != "chunkwise") return absl::InvalidArgumentError(absl::StrCat("--form must be chunkwise or recurrent, got '", form, "'"));
  }
  if (a.Has("weights")) {
    ASSIGN_OR_RETURN(o.weights, ParseWeightFormat(a.flags.at("weights")));
  }
  if (a.Has("state-dtype")) {
    const std::string d = a.flags.at("state-dtype");
    if (d == "bf16") o.state_dtype = CpuModelOptions::StateDType::kBF16;
    else if (d != "f32") return absl::InvalidArgumentError(absl::StrCat("--state-dtype must be f32 or bf16, not '", d, "'"));
  }
  if (a.Has("activations")) {
    const std::string d = a.flags.at("activations");
    if (d == "bf16") o.activations = CpuModelOptions::ActivationDType::kBF16;
    else if (d != "f32") return absl::InvalidArgumentError(absl::StrCat("--activations must be f32 or bf16, not '", d, "'"));
  }
  return CpuModel::Load(dir, o);
}

int32_t Argmax(const float* row, int n) { return static_cast<int32_t>(std::max_element(row, row + n) - row); }

absl::Status Logits(const ParsedArgs& a) {
  ASSIGN_OR_RETURN(std::string ids_text, a.Required("ids"));
  ASSIGN_OR_RETURN(std::string out, a.Required("out"));
  ASSIGN_OR_RETURN(std::vector<int32_t> ids, ParseIdList(ids_text));
  ASSIGN_OR_RETURN(auto model, LoadModel(a));
  SequenceState state = model->NewState();
  ASSIGN_OR_RETURN(std::vector<float> logits, model->Run(ids, state, /*all_logits=*/true));
  const TensorToWrite t = F32Tensor("logits", {static_cast<int64_t>(ids.size()), model->config().vocab_size}, logits);
  return WriteSafetensors(out, std::span<const TensorToWrite>(&t, 1));
}

absl::Status Perplexity(const ParsedArgs& a) {
  ASSIGN_OR_RETURN(std::string path, a.Required("text"));
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::stringstream ss;
  ss << in.rdbuf();
  ASSIGN_OR_RETURN(auto model, LoadModel(a));
  if (model->tokenizer() == nullptr) return absl::FailedPreconditionError("model directory has no tokenizer.model");
  ASSIGN_OR_RETURN(std::vector<int32_t> ids, model->tokenizer()->Encode(ss.str(), /*add_bos=*/true));
  if (ids.size() < 2) return absl::InvalidArgumentError(absl::StrCat(path, ": fewer than two tokens to score"));
  // The state carries the whole past, so the text is scored in windows with no context lost.
  constexpr size_t kWindow = 512;
  const int V = model->config().vocab_size;
  SequenceState state = model->NewState();
  double nll = 0.0;
  const auto t0 = Clock::now();
  for (size_t begin = 0; begin + 1 < ids.size(); begin += kWindow) {
    const size_t end = std::min(begin + kWindow, ids.size() - 1);  // inputs [begin, end), targets shifted by one
    ASSIGN_OR_RETURN(std::vector<float> logits,
                     model->Run(std::span<const int32_t>(ids).subspan(begin, end - begin), state, true));
    for (size_t t = begin; t < end; ++t) {
      const float* row = logits.data() + (t - begin) * V;
      const float mx = *std::max_element(row, row + V);
      double z = 0.0;
      for (int i = 0; i < V; ++i) z += std::exp(static_cast<double>(row[i]) - mx);
      nll -= static_cast<double>(row[ids[t + 1]]) - mx - std::log(z);
    }
  }
  const size_t scored = ids.size() - 1;
  std::printf("tokens: %zu\nscored: %zu\nperplexity: %.4f\nseconds: %.2f\n", ids.size(), scored,
              std::exp(nll / static_cast<double>(scored)), Seconds(t0, Clock::now()));
  return absl::OkStatus();
}

absl::Status Generate(const ParsedArgs& a) {
  ASSIGN_OR_RETURN(auto model, LoadModel(a));
  ASSIGN_OR_RETURN(int max_new, a.Int("max-new-tokens", 32, 0));
  ASSIGN_OR_RETURN(int ignore_eos, a.Int("ignore-eos", 0, 0));
  const Tokenizer* tok = model->tokenizer();
  std::vector<int32_t> prompt;
  if (a.Has("prompt-ids")) {
    ASSIGN_OR_RETURN(prompt, ParseIdList(a.flags.at("prompt-ids")));
  } else {
    ASSIGN_OR_RETURN(std::string text, a.Required("prompt"));
    if (tok == nullptr) return absl::FailedPreconditionError("model directory has no tokenizer.model: use --prompt-ids");
    ASSIGN_OR_RETURN(prompt, tok->Encode(text, /*add_bos=*/true));
  }
  if (prompt.empty()) return absl::InvalidArgumentError("empty prompt");
  const auto& eos = model->config().eos_token_ids;
  SequenceState state = model->NewState();
  std::unique_ptr<StreamingDetokenizer> detok;
  if (tok != nullptr) detok = std::make_unique<StreamingDetokenizer>(*tok);
  std::vector<int32_t> out;
  const auto t0 = Clock::now();
  ASSIGN_OR_RETURN(std::vector<float> logits, model->Run(prompt, state, false));
  const auto t1 = Clock::now();
  for (int i = 0; i < max_new; ++i) {
    const int32_t next = Argmax(logits.data(), model->config().vocab_size);
    if (!ignore_eos && std::find(eos.begin(), eos.end(), next) != eos.end()) break;
    out.push_back(next);
    if (detok) std::fputs(detok->Push(next).c_str(), stdout), std::fflush(stdout);
    if (i + 1 == max_new) break;
    ASSIGN_OR_RETURN(logits, model->Run(std::span<const int32_t>(&out.back(), 1), state, false));
  }
  const auto t2 = Clock::now();
  if (detok) std::printf("%s\n", detok->Flush().c_str());
  std::printf("ids: %s\n", absl::StrJoin(out, ",").c_str());
  std::fprintf(stderr, "prompt %zu tokens in %.3f s, %zu new tokens in %.3f s\n", prompt.size(), Seconds(t0, t1),
               out.size(), Seconds(t1, t2));
  return absl::OkStatus();
}

// This machine's memory bandwidth, bytes moved (read + written) per second: the best of three copies
// of 256 MiB split over `threads` threads (one core alone does not reach the memory's ceiling).
double CopyBandwidth(int threads) {
  constexpr size_t kBytes = size_t{256} << 20;
  std::vector<char> src(kBytes, 1), dst(kBytes, 0);
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = Clock::now();
    std::vector<std::thread> copiers;
    const size_t part = kBytes / static_cast<size_t>(threads);
    for (int t = 0; t < threads; ++t) {
      const size_t from = part * static_cast<size_t>(t), n = t + 1 == threads ? kBytes - from : part;
      copiers.emplace_back([&, from, n] { std::memcpy(dst.data() + from, src.data() + from, n); });
    }
    for (std::thread& c : copiers) c.join();
    best = std::max(best, 2.0 * kBytes / Seconds(t0, Clock::now()));
  }
  return best;
}

absl::Status Bench(const ParsedArgs& a) {
  ASSIGN_OR_RETURN(auto model, LoadModel(a));
  ASSIGN_OR_RETURN(int prompt_len, a.Int("prompt-len", 512, 1));
  ASSIGN_OR_RETURN(int new_tokens, a.Int("new-tokens", 32, 1));
  ASSIGN_OR_RETURN(int batch, a.Int("batch", 1, 1));
  const int V = model->config().vocab_size;
  std::mt19937 rng(1234);
  std::vector<std::vector<int32_t>> prompts(batch);
  for (auto& p : prompts)
    for (int i = 0; i < prompt_len; ++i) p.push_back(static_cast<int32_t>(rng() % V));
  std::vector<SequenceState> states;
  for (int b = 0; b < batch; ++b) states.push_back(model->NewState());
  // Prefill: each prompt on its own (as a server admits them), timed together.
  std::vector<int32_t> next(batch);
  const auto t0 = Clock::now();
  for (int b = 0; b < batch; ++b) {
    ASSIGN_OR_RETURN(std::vector<float> logits, model->Run(prompts[b], states[b], false));
    next[b] = Argmax(logits.data(), V);
  }
  const auto t1 = Clock::now();
  // Decode: one packed step per token for the whole batch.
  for (int step = 0; step < new_tokens; ++step) {
    std::vector<CpuModel::Segment> segs;
    for (int b = 0; b < batch; ++b) segs.push_back({std::span<const int32_t>(&next[b], 1), states[b].data.data(), false});
    std::vector<float> logits;
    RETURN_IF_ERROR(model->Forward(segs, &logits));
    for (int b = 0; b < batch; ++b) next[b] = Argmax(logits.data() + static_cast<size_t>(b) * V, V);
  }
  const auto t2 = Clock::now();
  const double prefill_s = Seconds(t0, t1), decode_s = Seconds(t1, t2);
  std::printf("prompt_len %d  batch %d  prefill %.1f tok/s (%.3f s)  decode %.2f tok/s (%.3f ms/step)  state %.1f KiB/seq\n",
              prompt_len, batch, prompt_len * batch / prefill_s, prefill_s, new_tokens * batch / decode_s,
              1e3 * decode_s / new_tokens, model->state_layout().bytes() / 1024.0);
  // The decode floor from this machine's own ceiling, measured now: a step must read every weight
  // it uses once and each sequence's state (and write the state back).
  ASSIGN_OR_RETURN(const int threads, a.Int("threads", 0, 0));
  const double bandwidth = CopyBandwidth(threads > 0 ? threads : static_cast<int>(std::thread::hardware_concurrency()));
  const double step_bytes = static_cast<double>(model->step_weight_bytes()) +
                            2.0 * batch * static_cast<double>(model->state_layout().bytes());
  const double floor_ms = 1e3 * step_bytes / bandwidth, step_ms = 1e3 * decode_s / new_tokens;
  std::printf("ceiling: memory %.1f GB/s (memcpy of 2 x 256 MiB, read + write counted)  decode floor %.3f ms/step "
              "(%.1f MiB a step: weights %.1f MiB + states)  measured %.2fx the floor\n",
              bandwidth / 1e9, floor_ms, step_bytes / 1048576.0, model->step_weight_bytes() / 1048576.0,
              step_ms / floor_ms);
  return absl::OkStatus();
}

absl::Status Drift(const ParsedArgs& a) {
  ASSIGN_OR_RETURN(auto candidate, LoadModel(a));
  ASSIGN_OR_RETURN(std::string model_dir, a.Required("model"));
  const std::string reference_dir = a.Has("reference") ? a.flags.at("reference") : model_dir;
  CpuModelOptions ro;
  ASSIGN_OR_RETURN(ro.threads, a.Int("threads", 0, 0));
  ASSIGN_OR_RETURN(auto reference, CpuModel::Load(reference_dir, ro));
  std::vector<int32_t> prompt;
  if (a.Has("prompt-ids")) {
    ASSIGN_OR_RETURN(prompt, ParseIdList(a.flags.at("prompt-ids")));
  } else {
    ASSIGN_OR_RETURN(std::string text, a.Required("prompt"));
    const Tokenizer* tok = reference->tokenizer();
    if (tok == nullptr) return absl::FailedPreconditionError("the reference has no tokenizer.model: use --prompt-ids");
    ASSIGN_OR_RETURN(prompt, tok->Encode(text, /*add_bos=*/true));
  }
  DriftOptions o;
  ASSIGN_OR_RETURN(o.tokens, a.Int("tokens", o.tokens, 1));
  ASSIGN_OR_RETURN(int seed, a.Int("seed", 1, 0));
  o.seed = static_cast<uint64_t>(seed);
  ASSIGN_OR_RETURN(o.temperature, a.Double("temperature", 0.0, 0.0, 100.0));
  const auto t0 = Clock::now();
  ASSIGN_OR_RETURN(DriftStats d, MeasureDrift(*reference, *candidate, prompt, o));
  std::printf("| candidate | reference | stream | tokens | mean KL (nats/token) | p99 KL | max KL | top-1 agreement | "
              "greedy identical for |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
  std::printf("| %s (%s%s) | %s (%s) | %s | %d | %.3g | %.3g | %.3g | %.2f%% | %d tokens |\n", model_dir.c_str(),
              WeightFormatName(candidate->weights()),
              absl::StrCat(candidate->options().state_dtype == CpuModelOptions::StateDType::kBF16 ? ", bf16 states" : "",
                           candidate->options().activations == CpuModelOptions::ActivationDType::kBF16
                               ? ", bf16 activations"
                               : "")
                  .c_str(),
              reference_dir.c_str(), WeightFormatName(reference->weights()),
              o.temperature == 0 ? "greedy" : absl::StrCat("sampled, T ", o.temperature, ", seed ", seed).c_str(),
              d.tokens, d.mean_kl, d.p99_kl, d.max_kl, 100 * d.top1_agreement, d.free_run_identical);
  std::fprintf(stderr, "%.1f s\n", Seconds(t0, Clock::now()));
  return absl::OkStatus();
}

absl::Status Quantize(const ParsedArgs& a) {
  ASSIGN_OR_RETURN(std::string dir, a.Required("model"));
  ASSIGN_OR_RETURN(std::string out, a.Required("out"));
  const std::string scheme = a.Has("scheme") ? a.flags.at("scheme") : "int8";
  if (scheme != "int8" && scheme != "fp8")
    return absl::InvalidArgumentError(absl::StrCat("--scheme must be int8 or fp8, not '", scheme, "'"));
  const bool fp8 = scheme == "fp8";
  RETURN_IF_ERROR(WriteQuantizedCheckpoint(
      dir, out, fp8 ? CheckpointQuantization::Kind::kFp8E4M3 : CheckpointQuantization::Kind::kInt8));
  std::printf("wrote %s (compressed-tensors %s: %s weights, one scale per output row)\n", out.c_str(),
              fp8 ? "float-quantized" : "int-quantized", fp8 ? "FP8 E4M3" : "INT8");
  return absl::OkStatus();
}

ProgramSpec Program() {
  return {"gla-eval",
          "run a GLA checkpoint on the CPU, without a server",
          {
              {"logits",
               "write the logits of --ids as F32 tensor \"logits\" [T, vocab] to a safetensors file",
               With({{"ids", "IDS", "comma-separated token ids", ""}, {"out", "FILE", "the safetensors file to write", ""}})},
              {"perplexity", "the perplexity of a text file (needs DIR/tokenizer.model)",
               With({{"text", "FILE", "the text to score", ""}})},
              {"generate", "greedy generation; prints the text (with a tokenizer) and the ids",
               With({{"prompt", "TEXT", "prompt text (needs DIR/tokenizer.model)", ""},
                     {"prompt-ids", "IDS", "prompt as comma-separated token ids, instead of --prompt", ""},
                     {"max-new-tokens", "N", "tokens to generate at most", "32"},
                     {"ignore-eos", "0|1", "keep generating past end-of-sequence", "0"}})},
              {"bench", "prefill and batched decode speed on random prompts",
               With({{"prompt-len", "N", "tokens per prompt", "512"},
                     {"new-tokens", "N", "decode steps", "32"},
                     {"batch", "B", "sequences decoded together", "1"}})},
              {"drift",
               "how far --model with --weights drifts from --reference (default: --model as it is): KL per token "
               "and top-1 agreement along the reference's own output, then greedy decoding of each alone",
               With({{"reference", "DIR", "the reference checkpoint, run as it is (default: --model)", ""},
                     {"prompt", "TEXT", "prompt text (needs the reference's tokenizer.model)", ""},
                     {"prompt-ids", "IDS", "prompt as comma-separated token ids, instead of --prompt", ""},
                     {"tokens", "N", "decode steps measured (at most 1048576)", "4096"},
                     {"temperature", "T", "the reference's stream: 0 greedy, else sampled at T", "0"},
                     {"seed", "N", "sampling seed", "1"}})},
              {"quantize",
               "write --model quantized as a compressed-tensors checkpoint (every Linear weight but lm_head, one "
               "scale per output row): INT8 serves as INT8 on the CPU with no --weights flag",
               {{"model", "DIR", "checkpoint directory to quantize", ""},
                {"out", "DIR", "the directory to create for the quantized checkpoint", ""},
                {"scheme", "int8|fp8", "INT8 (int-quantized) or FP8 E4M3 (float-quantized)", "int8"}}},
          },
          ""};
}

int Main(int argc, char** argv) {
  const ProgramSpec program = Program();
  int exit_code = 0;
  const std::optional<ParsedArgs> args = ParseCommandLine(program, argc, argv, &exit_code);
  if (!args) return exit_code;
  absl::Status status;
  if (args->command == "logits") status = Logits(*args);
  else if (args->command == "perplexity") status = Perplexity(*args);
  else if (args->command == "generate") status = Generate(*args);
  else if (args->command == "quantize") status = Quantize(*args);
  else if (args->command == "drift") status = Drift(*args);
  else status = Bench(*args);
  if (!status.ok()) {
    std::fprintf(stderr, "gla-eval: error: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace gla

int main(int argc, char** argv) { return gla::Main(argc, argv); }
