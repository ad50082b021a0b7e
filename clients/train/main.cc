// gla-train: trains a GLA model from scratch (full-parameter) with the fine-tune path
// (engine/finetune/trainer.h), on a GPU or the CPU, without a server; writes a checkpoint glad and
// fla can load (config.json + model.safetensors + tokenizer.model) and the training curve.
//
//   gla-train run --config config.json --tokenizer tokenizer.model --train train.txt --eval eval.txt
//                 --out DIR [--device cuda|cpu] [--steps 2000] [--batch 32] [--seq-len 512]
//                 [--lr 2e-3] [--min-lr-ratio 0.1] [--warmup 100] [--weight-decay 0.1] [--clip 1.0]
//                 [--seed 1] [--eval-every 200] [--dtype bf16|f32]
//
// Text files hold documents separated by blank lines (the lines of one document are joined with a
// space). Each document is encoded with the tokenizer, BOS first and EOS last (the ids config.json
// names), and cut into windows of seq-len + 1 tokens. Every eval-every steps, and at the end, the
// mean next-token loss over the eval documents (same windows) is measured: train_log.tsv in DIR
// holds step, train loss, eval loss, eval perplexity, learning rate, gradient norm, tokens seen,
// training tokens/s. DIR must not exist yet (it is written under a temporary name, then renamed).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "clients/common/args.h"
#include "clients/common/usage.h"
#include "engine/finetune/job_output.h"
#include "engine/model/train_model.h"
#include "engine/finetune/trainer.h"
#include "models/checkpoint.h"
#include "models/file_io.h"
#include "models/status_macros.h"

namespace gla {
namespace {

namespace fs = std::filesystem;

// Documents: blocks of non-empty lines separated by blank lines.
std::vector<std::string> SplitDocuments(const std::string& text) {
  std::vector<std::string> docs;
  std::string cur, line;
  std::istringstream in(text);
  auto flush = [&] {
    if (!cur.empty()) docs.push_back(std::move(cur));
    cur.clear();
  };
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) {
      flush();
      continue;
    }
    if (!cur.empty()) cur += ' ';
    cur += line;
  }
  flush();
  return docs;
}

absl::StatusOr<std::vector<std::vector<int32_t>>> EncodeDocuments(const Tokenizer& tok, const std::string& path,
                                                                  int64_t* tokens) {
  // The corpus is the caller's own data, read whole whatever its size (a regular file still).
  ASSIGN_OR_RETURN(const std::string text, ReadWholeFile(path, std::numeric_limits<int64_t>::max()));
  std::vector<std::vector<int32_t>> out;
  *tokens = 0;
  for (const std::string& doc : SplitDocuments(text)) {
    ASSIGN_OR_RETURN(std::vector<int32_t> ids, tok.Encode(doc, /*add_bos=*/true));
    if (tok.eos_id().has_value()) ids.push_back(*tok.eos_id());
    *tokens += static_cast<int64_t>(ids.size());
    out.push_back(std::move(ids));
  }
  if (out.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no document"));
  return out;
}

absl::Status Run(const ParsedArgs& a) {
  ASSIGN_OR_RETURN(const std::string config_path, a.Required("config"));
  ASSIGN_OR_RETURN(const std::string tokenizer_path, a.Required("tokenizer"));
  ASSIGN_OR_RETURN(const std::string train_path, a.Required("train"));
  ASSIGN_OR_RETURN(const std::string eval_path, a.Required("eval"));
  ASSIGN_OR_RETURN(const std::string out_dir, a.Required("out"));
  const std::string device = a.Has("device") ? a.flags.at("device") : "cuda";
  if (device != "cuda" && device != "cpu") return absl::InvalidArgumentError("--device must be cuda or cpu");
  const std::string dtype_name = a.Has("dtype") ? a.flags.at("dtype") : "bf16";
  if (dtype_name != "bf16" && dtype_name != "f32") return absl::InvalidArgumentError("--dtype must be bf16 or f32");
  ASSIGN_OR_RETURN(const int eval_every, a.Int("eval-every", 200, 1));
  TrainOptions o;
  o.method = TrainOptions::Method::kFull;
  ASSIGN_OR_RETURN(const int steps, a.Int("steps", 2000, 1));
  ASSIGN_OR_RETURN(o.batch_sequences, a.Int("batch", 32, 1));
  ASSIGN_OR_RETURN(o.sequence_length, a.Int("seq-len", 512, 1));
  ASSIGN_OR_RETURN(o.learning_rate, a.Double("lr", 2e-3, 1e-9, 1.0));
  ASSIGN_OR_RETURN(o.min_lr_ratio, a.Double("min-lr-ratio", 0.1, 0.0, 1.0));
  ASSIGN_OR_RETURN(const int warmup, a.Int("warmup", 100, 0));
  ASSIGN_OR_RETURN(o.weight_decay, a.Double("weight-decay", 0.1, 0.0, 10.0));
  ASSIGN_OR_RETURN(o.max_grad_norm, a.Double("clip", 1.0, 0.0, 1e6));
  ASSIGN_OR_RETURN(const int seed, a.Int("seed", 1, 0));
  o.max_steps = steps;
  o.warmup_steps = warmup;
  o.seed = static_cast<uint64_t>(seed);
  std::error_code ec;
  if (fs::exists(out_dir, ec)) return absl::AlreadyExistsError(absl::StrCat(out_dir, " exists; not overwritten"));

  ASSIGN_OR_RETURN(const std::string config_text, ReadWholeFile(config_path));
  Checkpoint ck;
  ASSIGN_OR_RETURN(ck.config, ParseGlaConfigJson(config_text, config_path));
  std::optional<int> eos;
  if (!ck.config.eos_token_ids.empty()) eos = ck.config.eos_token_ids.front();
  ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tok, Tokenizer::Load(tokenizer_path, ck.config.bos_token_id, eos));
  if (tok->vocab_size() > ck.config.vocab_size)
    return absl::InvalidArgumentError(absl::StrCat(tokenizer_path, ": ", tok->vocab_size(), " pieces, more than ",
                                                   config_path, "'s vocab_size ", ck.config.vocab_size));
  int64_t train_tokens = 0, eval_tokens = 0;
  ASSIGN_OR_RETURN(std::vector<std::vector<int32_t>> train, EncodeDocuments(*tok, train_path, &train_tokens));
  ASSIGN_OR_RETURN(const std::vector<std::vector<int32_t>> eval, EncodeDocuments(*tok, eval_path, &eval_tokens));
  ck.weights = InitModelWeights(ck.config, static_cast<uint64_t>(seed));
  int64_t params = 0;
  ForEachParam(ck.weights, ck.weights, [&](Weight& p, Weight&, bool) { params += static_cast<int64_t>(p.data.size()); });
  std::printf("gla-train: %lld parameters; train %zu documents, %lld tokens; eval %zu documents, %lld tokens\n",
              static_cast<long long>(params), train.size(), static_cast<long long>(train_tokens), eval.size(),
              static_cast<long long>(eval_tokens));

  TrainDevice where;
  if (device == "cuda") where.cuda_device = 0;
  ASSIGN_OR_RETURN(std::unique_ptr<Trainer> trainer, Trainer::Create(ck, o, std::move(train), where));
  ck.weights = ModelWeights{};  // the trainer holds its own copy

  std::string log = "step\ttrain_loss\teval_loss\teval_ppl\tlr\tgrad_norm\ttokens\ttokens_per_s\n";
  auto evaluate = [&](const TrainProgress& p) -> absl::Status {
    ASSIGN_OR_RETURN(const double loss, trainer->MeanLoss(eval));
    if (p.step == 0) {  // the initial model: no training step to report yet
      absl::StrAppendFormat(&log, "0\t-\t%.4f\t%.2f\t-\t-\t0\t-\n", loss, std::exp(loss));
      std::printf("step      0  eval loss %.4f (ppl %.2f)\n", loss, std::exp(loss));
    } else {
      absl::StrAppendFormat(&log, "%d\t%.4f\t%.4f\t%.2f\t%.3g\t%.3f\t%d\t%.0f\n", p.step, p.loss, loss,
                            std::exp(loss), p.learning_rate, p.grad_norm, p.tokens, p.tokens_per_second);
      std::printf("step %6lld  train loss %.4f  eval loss %.4f (ppl %.2f)  lr %.3g  |g| %.3f  %.0f tok/s\n",
                  static_cast<long long>(p.step), p.loss, loss, std::exp(loss), p.learning_rate, p.grad_norm,
                  p.tokens_per_second);
    }
    std::fflush(stdout);
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(evaluate(trainer->progress()));  // step 0: the initial model
  const auto start = std::chrono::steady_clock::now();
  while (!trainer->done()) {
    ASSIGN_OR_RETURN(const TrainProgress p, trainer->Step());
    if (p.step % eval_every == 0 || trainer->done()) RETURN_IF_ERROR(evaluate(p));
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("gla-train: %lld steps in %.1f s\n", static_cast<long long>(trainer->progress().step), seconds);

  ASSIGN_OR_RETURN(const ModelWeights trained, trainer->weights());
  const DType dtype = dtype_name == "bf16" ? DType::kBF16 : DType::kF32;
  const fs::path out(out_dir);
  ASSIGN_OR_RETURN(const std::string written,
                   WriteDirectoryAtomically(out.parent_path().empty() ? "." : out.parent_path().string(),
                                            out.filename().string(), "gla-train", [&](const std::string& tmp) {
                                              RETURN_IF_ERROR(WriteModelWeights(
                                                  (fs::path(tmp) / "model.safetensors").string(), ck.config, trained,
                                                  dtype));
                                              std::error_code e;
                                              fs::copy_file(config_path, fs::path(tmp) / "config.json", e);
                                              if (!e) fs::copy_file(tokenizer_path, fs::path(tmp) / "tokenizer.model", e);
                                              if (e) return absl::InternalError(absl::StrCat("copying: ", e.message()));
                                              std::ofstream f(fs::path(tmp) / "train_log.tsv");
                                              f << log;
                                              return f ? absl::OkStatus()
                                                       : absl::InternalError("writing train_log.tsv");
                                            }));
  // What is on disk must load as a checkpoint.
  ASSIGN_OR_RETURN(const Checkpoint reloaded, LoadCheckpoint(written));
  std::printf("gla-train: wrote %s (%s)\n", written.c_str(), dtype_name.c_str());
  return absl::OkStatus();
}

}  // namespace
}  // namespace gla

int main(int argc, char** argv) {
  const gla::ProgramSpec program = {
      "gla-train",
      "train a GLA model from scratch (full-parameter), without a server",
      {{"run",
        "train on --train, measure on --eval, write the checkpoint and train_log.tsv to --out",
        {
            {"config", "FILE", "config.json of the model to train", ""},
            {"tokenizer", "FILE", "tokenizer.model (SentencePiece)", ""},
            {"train", "FILE", "training text: documents separated by blank lines", ""},
            {"eval", "FILE", "held-out text, same format", ""},
            {"out", "DIR", "the checkpoint directory to write (must not exist)", ""},
            {"device", "cuda|cpu", "where to train", "cuda"},
            {"steps", "N", "optimizer steps", "2000"},
            {"batch", "B", "sequences per step", "32"},
            {"seq-len", "L", "tokens per sequence", "512"},
            {"lr", "LR", "peak learning rate", "2e-3"},
            {"min-lr-ratio", "R", "final learning rate as a fraction of the peak (cosine decay)", "0.1"},
            {"warmup", "N", "linear warmup steps", "100"},
            {"weight-decay", "W", "AdamW weight decay", "0.1"},
            {"clip", "C", "gradient norm clip", "1.0"},
            {"seed", "S", "initialisation and data order seed", "1"},
            {"eval-every", "N", "steps between two eval-loss measurements", "200"},
            {"dtype", "bf16|f32", "dtype of the written weights", "bf16"},
        }}},
      ""};
  int exit_code = 0;
  const std::optional<gla::ParsedArgs> parsed = gla::ParseCommandLine(program, argc, argv, &exit_code);
  if (!parsed) return exit_code;
  const absl::Status st = gla::Run(*parsed);
  if (!st.ok()) {
    std::fprintf(stderr, "gla-train: error: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  return 0;
}
