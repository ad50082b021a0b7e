// gla-train end to end on the CPU: a tiny model trained from scratch on a small text lowers its
// held-out loss, and what it writes is a checkpoint the engine loads (config, bf16 weights,
// tokenizer, training curve); bad arguments are refused with one line that names them.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_split.h"
#include "models/checkpoint.h"
#include "models/safetensors.h"
#include "tests/support/spm_train.h"
#include "tests/support/test_util.h"

namespace gla {
namespace {

namespace fs = std::filesystem;

using RunResult = testing::CommandResult;
using testing::ReadFile;

RunResult RunTrain(const std::string& args) { return testing::RunCommand(std::string(GLA_TRAIN_PATH) + " " + args); }

struct Inputs {
  std::string dir, config, tokenizer, train, eval;
};

// A 2-layer model on the sample sentences: documents of repeated sentences (blank-line separated);
// the eval file holds the same kind of text, so a model that learns it lowers its eval loss.
Inputs MakeInputs() {
  Inputs in;
  in.dir = testing::MakeTempDir("gla-train-inputs");
  in.tokenizer = testing::TrainSentencePiece("gla_train_cli");
  in.config = in.dir + "/config.json";
  std::ofstream(in.config) << R"({"model_type": "gla", "hidden_size": 64, "num_hidden_layers": 2, "num_heads": 2,
    "expand_k": 0.5, "expand_v": 1, "hidden_ratio": 4, "vocab_size": 320, "bos_token_id": 1, "eos_token_id": 2,
    "tie_word_embeddings": true, "use_short_conv": false, "norm_eps": 1e-6})";
  const auto& s = testing::SampleTexts();
  std::string train, eval;
  for (int d = 0; d < 12; ++d) {
    for (int k = 0; k < 4; ++k) train += s[(d + k) % s.size()] + "\n";
    train += "\n";
  }
  for (int k = 0; k < 3; ++k) eval += s[k % s.size()] + "\n";
  in.train = in.dir + "/train.txt";
  in.eval = in.dir + "/eval.txt";
  std::ofstream(in.train) << train;
  std::ofstream(in.eval) << eval;
  return in;
}

std::string Common(const Inputs& in) {
  return " --config " + in.config + " --tokenizer " + in.tokenizer + " --train " + in.train + " --eval " + in.eval;
}

TEST(GlaTrainCli, TrainsFromScratchAndWritesALoadableCheckpoint) {
  const Inputs in = MakeInputs();
  ASSERT_FALSE(in.tokenizer.empty());
  const std::string out = testing::MakeTempDir("gla-train-out") + "/model";
  const RunResult r = RunTrain("run" + Common(in) + " --out " + out +
                               " --device cpu --steps 40 --batch 4 --seq-len 32 --lr 1e-2 --warmup 4 --eval-every 20");
  ASSERT_EQ(r.code, 0) << r.err << r.out;
  // train_log.tsv: a header, then step 0 (the initial model), 20 and 40.
  const std::vector<std::string> lines = absl::StrSplit(ReadFile(out + "/train_log.tsv"), '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 4u) << ReadFile(out + "/train_log.tsv");
  auto eval_loss = [&](size_t i) {
    const std::vector<std::string> f = absl::StrSplit(lines[i], '\t');
    return std::stod(f.at(2));
  };
  EXPECT_NEAR(eval_loss(1), std::log(320.0), 0.5) << "an initial model predicts about uniformly";
  EXPECT_LT(eval_loss(3), eval_loss(1) - 1.0) << "training lowers the held-out loss";
  // The checkpoint: bf16 weights in the fla layout, the config and tokenizer beside them.
  auto ck = LoadCheckpoint(out);
  ASSERT_TRUE(ck.ok()) << ck.status();
  EXPECT_NE(ck->tokenizer, nullptr);
  EXPECT_EQ(ck->config.hidden_size, 64);
  auto st = SafetensorsFile::Open(out + "/model.safetensors");
  ASSERT_TRUE(st.ok()) << st.status();
  const TensorView* emb = st->Find("model.embeddings.weight");
  ASSERT_NE(emb, nullptr);
  EXPECT_EQ(emb->dtype, DType::kBF16);
  EXPECT_EQ(st->Find("lm_head.weight"), nullptr) << "tied embeddings: no lm_head tensor";
}

TEST(GlaTrainCli, RefusesBadArgumentsByName) {
  const Inputs in = MakeInputs();
  const std::string out = testing::MakeTempDir("gla-train-bad") + "/model";
  struct Case {
    std::string args, expect;
    int code = 1;  // 2: the command line does not parse
  };
  const std::vector<Case> cases = {
      {"run" + Common(in) + " --out " + out + " --device tpu", "--device"},
      {"run" + Common(in) + " --out " + out + " --lr 0", "--lr"},
      {"run" + Common(in) + " --out " + out + " --dtype f16", "--dtype"},
      {"run" + Common(in) + " --out " + out + " --warmup 50 --steps 10", "warmup_steps"},
      {"run" + Common(in) + " --out " + out + " --bogus 1", "bogus", 2},
      {"run --config " + in.config + " --tokenizer " + in.tokenizer + " --train /nonexistent --eval " + in.eval +
           " --out " + out + " --device cpu",
       "/nonexistent"},
      {"run" + Common(in) + " --out " + in.dir + " --device cpu", "exists"},  // never overwritten
  };
  for (const Case& c : cases) {
    const RunResult r = RunTrain(c.args);
    EXPECT_EQ(r.code, c.code) << c.args;
    EXPECT_NE(r.err.find(c.expect), std::string::npos) << c.args << " -> " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
  EXPECT_FALSE(fs::exists(out)) << "a refused run writes nothing";
}

// One table for parsing and help: every flag the run command accepts is listed with its default.
TEST(GlaTrainCli, HelpListsEveryFlag) {
  const RunResult r = RunTrain("--help");
  ASSERT_EQ(r.code, 0) << r.err;
  for (const char* flag : {"--config FILE", "--tokenizer FILE", "--train FILE", "--eval FILE", "--out DIR",
                           "--device cuda|cpu", "(default 2000)", "--lr LR", "(default 2e-3)", "--dtype bf16|f32"})
    EXPECT_NE(r.out.find(flag), std::string::npos) << flag << "\n" << r.out;
}

}  // namespace
}  // namespace gla
