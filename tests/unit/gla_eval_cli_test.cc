// gla-eval end to end: the logits interface against the reference, and every kind of bad
// checkpoint -> exit code 1 with one line on stderr that names the file, tensor or field.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_split.h"
#include "engine/model/cpu_model.h"
#include "models/safetensors.h"
#include "tests/support/random_model.h"
#include "tests/support/spm_train.h"
#include "tests/support/test_util.h"

namespace gla {
namespace {

namespace fs = std::filesystem;

using RunResult = testing::CommandResult;
using testing::ReadFile;

RunResult RunEval(const std::string& args) { return testing::RunCommand(std::string(GLA_EVAL_PATH) + " " + args); }

TEST(GlaEvalCli, LogitsFileMatchesReference) {
  auto expected = SafetensorsFile::Open(testing::ReferenceDir() + "/gla-tiny/expected.safetensors");
  ASSERT_TRUE(expected.ok());
  const auto ids = *ToInt64(*expected->Find("seq1.input_ids"));
  std::string list;
  for (auto id : ids) list += (list.empty() ? "" : ",") + std::to_string(id);
  const std::string out = testing::MakeTempDir("cli-logits") + "/logits.safetensors";
  const RunResult r = RunEval("logits --model " + testing::TinyModelDir() + " --ids " + list + " --out " + out);
  ASSERT_EQ(r.code, 0) << r.err;
  auto f = SafetensorsFile::Open(out);
  ASSERT_TRUE(f.ok()) << f.status();
  const TensorView* t = f->Find("logits");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->dtype, DType::kF32);
  EXPECT_EQ(t->shape, (std::vector<int64_t>{static_cast<int64_t>(ids.size()), 512}));
  EXPECT_LT(testing::RelErr(*ToFloat32(*t), *ToFloat64(*expected->Find("seq1.logits"))), 1e-5);
}

// --activations bf16: the logits of CpuModelOptions::activations = kBF16, to the bit.
TEST(GlaEvalCli, Bf16ActivationsAreTheModelsOption) {
  const std::vector<int32_t> ids = {1, 17, 42, 99, 5, 230};
  const std::string out = testing::MakeTempDir("cli-bf16-activations") + "/logits.safetensors";
  const RunResult r = RunEval("logits --model " + testing::TinyModelDir() + " --ids 1,17,42,99,5,230 --out " + out +
                              " --activations bf16");
  ASSERT_EQ(r.code, 0) << r.err;
  auto f = SafetensorsFile::Open(out);
  ASSERT_TRUE(f.ok()) << f.status();
  CpuModelOptions o;
  o.activations = CpuModelOptions::ActivationDType::kBF16;
  auto model = CpuModel::Load(testing::TinyModelDir(), o);
  ASSERT_TRUE(model.ok()) << model.status();
  SequenceState st = (*model)->NewState();
  auto want = (*model)->Run(ids, st, /*all_logits=*/true);
  ASSERT_TRUE(want.ok());
  EXPECT_EQ(*ToFloat32(*f->Find("logits")), *want);
}

TEST(GlaEvalCli, GenerateGreedyMatchesReference) {
  auto expected = SafetensorsFile::Open(testing::ReferenceDir() + "/gla-tiny/expected.safetensors");
  ASSERT_TRUE(expected.ok());
  auto join = [](const std::vector<int64_t>& ids) {
    std::string s;
    for (auto id : ids) s += (s.empty() ? "" : ",") + std::to_string(id);
    return s;
  };
  const std::string prompt = join(*ToInt64(*expected->Find("greedy.prompt_ids")));
  const std::string want = join(*ToInt64(*expected->Find("greedy.output_ids")));
  const RunResult r = RunEval("generate --model " + testing::TinyModelDir() + " --prompt-ids " + prompt +
                              " --max-new-tokens 16 --ignore-eos 1");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("ids: " + want + "\n"), std::string::npos) << r.out;
}

// A copy of the reference checkpoint that a case then damages.
std::string CopyOfReference(const std::string& name) {
  const std::string dir = testing::MakeTempDir("cli-" + name);
  for (const auto& e : fs::directory_iterator(testing::TinyModelDir()))
    fs::copy_file(e.path(), fs::path(dir) / e.path().filename());
  for (const auto& e : fs::directory_iterator(dir))
    fs::permissions(e.path(), fs::perms::owner_write, fs::perm_options::add);
  return dir;
}

void Patch(const std::string& path, size_t offset, const std::string& bytes) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

void ReplaceInFile(const std::string& path, const std::string& from, const std::string& to) {
  std::string s = ReadFile(path);
  const size_t at = s.find(from);
  ASSERT_NE(at, std::string::npos) << from;
  s.replace(at, from.size(), to);
  std::ofstream(path, std::ios::binary | std::ios::trunc) << s;
}

struct BadCase {
  const char* name;
  std::function<void(const std::string& dir)> damage;
  const char* expect;  // must appear in the one-line error
};

class BadCheckpoint : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadCheckpoint, OneLineErrorAndNonZeroExit) {
  const BadCase& c = GetParam();
  const std::string dir = CopyOfReference(c.name);
  c.damage(dir);
  const RunResult r = RunEval("logits --model " + dir + " --ids 1,2,3 --out " + dir + "/out.safetensors");
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err.rfind("gla-eval: error: ", 0), 0u) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find(c.expect), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir + "/out.safetensors"));
}

// The reference header: 3072 bytes of JSON after the 8-byte length.
const std::string kSt = "/model.safetensors";
INSTANTIATE_TEST_SUITE_P(
    Cases, BadCheckpoint,
    ::testing::Values(
        BadCase{"no_config", [](const std::string& d) { fs::remove(d + "/config.json"); }, "config.json: cannot open"},
        BadCase{"bad_json", [](const std::string& d) { std::ofstream(d + "/config.json") << "{\"hidden_size\": 64,"; },
                "config.json: not valid JSON"},
        BadCase{"unsupported_option",
                [](const std::string& d) { ReplaceInFile(d + "/config.json", "\"use_gv\": false", "\"use_gv\": true"); },
                "field 'use_gv'"},
        BadCase{"bad_field_type",
                [](const std::string& d) { ReplaceInFile(d + "/config.json", "\"num_heads\": 4", "\"num_heads\": \"4\""); },
                "field 'num_heads'"},
        BadCase{"no_weights", [](const std::string& d) { fs::remove(d + kSt); }, "no model.safetensors"},
        BadCase{"truncated", [](const std::string& d) { fs::resize_file(d + kSt, 100000); },
                "run past the end of the data section"},
        BadCase{"tiny_file", [](const std::string& d) { fs::resize_file(d + kSt, 5); }, "shorter than the 8-byte"},
        BadCase{"huge_header", [](const std::string& d) { Patch(d + kSt, 0, std::string("\xff\xff\xff\xff\xff\xff\xff\x7f", 8)); },
                "exceeds the limit"},
        BadCase{"corrupt_json", [](const std::string& d) { Patch(d + kSt, 8, "}"); }, "not valid JSON"},
        BadCase{"wrong_dtype",
                [](const std::string& d) { ReplaceInFile(d + kSt, "\"dtype\":\"F32\",\"shape\":[512,64]", "\"dtype\":\"F16\",\"shape\":[512,64]"); },
                "does not match"},
        BadCase{"wrong_shape",
                [](const std::string& d) { ReplaceInFile(d + kSt, "\"shape\":[64,256]", "\"shape\":[256,64]"); },
                "'model.layers.0.mlp.down_proj.weight' has shape [256, 64], expected [64, 256]"},
        BadCase{"missing_tensor",
                [](const std::string& d) { ReplaceInFile(d + kSt, "model.norm.weight", "model.norm.weighx"); },
                "missing tensor 'model.norm.weight'"},
        BadCase{"config_mismatch",
                [](const std::string& d) { ReplaceInFile(d + "/config.json", "\"hidden_ratio\": 4", "\"hidden_ratio\": 8"); },
                "'model.layers.0.mlp.gate_proj.weight' has shape [256, 64], expected [512, 64]"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(GlaEvalCli, PerplexityAndTextGenerationWithATokenizer) {
  // A random model with a real tokenizer.model beside it (both with 320 ids).
  const std::string dir = testing::MakeTempDir("cli-ppl");
  const std::string cfg = R"({"hidden_size": 32, "num_hidden_layers": 2, "num_heads": 2, "vocab_size": 320,
                             "bos_token_id": 1, "eos_token_id": 2})";
  ASSERT_TRUE(testing::WriteRandomModel(dir, {cfg, DType::kF32, 5, 1}).ok());
  const std::string spm = testing::TrainSentencePiece("cli-ppl");
  ASSERT_FALSE(spm.empty());
  fs::copy_file(spm, dir + "/tokenizer.model");
  const std::string text = testing::SampleTexts()[1] + "\n" + testing::SampleTexts()[3];
  std::ofstream(dir + "/text.txt") << text;

  const RunResult r = RunEval("perplexity --model " + dir + " --text " + dir + "/text.txt");
  ASSERT_EQ(r.code, 0) << r.err;
  // The same number computed here through the model runner (one window, BOS first).
  auto model = CpuModel::Load(dir);
  ASSERT_TRUE(model.ok());
  auto ids = *(*model)->tokenizer()->Encode(text, true);
  SequenceState st = (*model)->NewState();
  auto logits = *(*model)->Run(ids, st, true);
  double nll = 0;
  for (size_t t = 0; t + 1 < ids.size(); ++t) {
    const float* row = logits.data() + t * 320;
    double z = 0;
    for (int i = 0; i < 320; ++i) z += std::exp(double(row[i]));
    nll -= std::log(std::exp(double(row[ids[t + 1]])) / z);
  }
  const double ppl = std::exp(nll / double(ids.size() - 1));
  EXPECT_NE(r.out.find("tokens: " + std::to_string(ids.size()) + "\n"), std::string::npos) << r.out;
  const size_t at = r.out.find("perplexity: ");
  ASSERT_NE(at, std::string::npos);
  EXPECT_NEAR(std::stod(r.out.substr(at + 12)), ppl, 1e-3 * ppl);

  const RunResult g = RunEval("generate --model " + dir + " --prompt 'the state' --max-new-tokens 12 --ignore-eos 1");
  ASSERT_EQ(g.code, 0) << g.err;
  const size_t ids_at = g.out.find("ids: ");
  ASSERT_NE(ids_at, std::string::npos);
  // The text line is the streaming detokenizer's output: it must equal Decode of the ids.
  std::vector<int32_t> out_ids;
  for (auto part : absl::StrSplit(g.out.substr(ids_at + 5, g.out.find('\n', ids_at) - ids_at - 5), ','))
    out_ids.push_back(std::stoi(std::string(part)));
  EXPECT_EQ(out_ids.size(), 12u);
  EXPECT_EQ(g.out.substr(0, ids_at), *(*model)->tokenizer()->Decode(out_ids) + "\n");
}

// A command line that does not parse exits 2 and points at --help; a bad value exits 1.
TEST(GlaEvalCli, BadArgumentsAreOneLineErrors) {
  const std::string m = " --model " + testing::TinyModelDir();
  struct Case {
    std::string args;
    int code;
  };
  for (const Case& c : std::vector<Case>{{"frobnicate" + m, 2}, {"logits" + m + " --ids 1,2 --out /tmp/x --bogus 1", 2},
                                         {"logits" + m + " --ids 1,x --out /tmp/x", 1}, {"logits" + m + " --ids 1,999 --out /tmp/x", 1},
                                         {"generate" + m + " --prompt hello", 1},
                                         {"logits" + m + " --ids 1,2 --out /tmp/x --activations fp16", 1},
                                         {"logits --model /nonexistent --ids 1 --out /tmp/x", 1}}) {
    const RunResult r = RunEval(c.args);
    EXPECT_EQ(r.code, c.code) << c.args;
    EXPECT_EQ(r.err.rfind("gla-eval: error: ", 0), 0u) << c.args << ": " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    if (c.code == 2) {
      EXPECT_NE(r.err.find("--help"), std::string::npos) << r.err;
    }
  }
}

TEST(GlaEvalCli, HelpListsCommandsAndFlags) {
  const RunResult all = RunEval("--help");
  ASSERT_EQ(all.code, 0) << all.err;
  for (const char* command : {"logits", "perplexity", "generate", "bench"})
    EXPECT_NE(all.out.find(std::string("\n  ") + command + " "), std::string::npos) << command << "\n" << all.out;
  const RunResult bench = RunEval("bench --help");
  ASSERT_EQ(bench.code, 0) << bench.err;
  // The model flags every command shares, the command's own, and defaults from CpuModelOptions.
  for (const char* flag : {"--model DIR", "--chunk C", "(default 64)", "--prompt-len N", "--batch B"})
    EXPECT_NE(bench.out.find(flag), std::string::npos) << flag << "\n" << bench.out;
}

}  // namespace
}  // namespace gla
