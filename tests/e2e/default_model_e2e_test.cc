// The model glad serves by default (models/gla-brown, trained by our own training path on the
// Brown Corpus): glad started without --model serves it with its tokenizer, it has learned the
// language (held-out perplexity far below the uniform 8,000), and the README's request returns the
// text the README shows (on the CPU backend, whose sampling is deterministic for a seed).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <regex>
#include <sstream>

#include "tests/support/glad_process.h"
#include "tests/support/test_util.h"

namespace gla {
namespace {

std::string CliPath() {
  const char* env = std::getenv("GLA_CLI_PATH");
  return env != nullptr ? env : GLA_CLI_PATH;
}
std::string EvalPath() {
  const char* env = std::getenv("GLA_EVAL_PATH");
  return env != nullptr ? env : GLA_EVAL_PATH;
}

using testing::ReadFile;

// stdout, with stderr appended after it (gla-cli writes the text to stdout, its counts to stderr).
std::string RunCommand(const std::string& cmd, int* code) {
  const testing::CommandResult r = testing::RunCommand(cmd);
  *code = r.code;
  return r.out + r.err;
}

const std::string kModelDir = std::string(GLA_SOURCE_DIR) + "/models/gla-brown";

TEST(DefaultModel, HeldOutPerplexityShowsItLearnedEnglish) {
  int code = 0;
  const std::string out =
      RunCommand(EvalPath() + " perplexity --model " + kModelDir + " --text " + kModelDir + "/heldout_sample.txt", &code);
  ASSERT_EQ(code, 0) << out;
  const size_t at = out.find("perplexity: ");
  ASSERT_NE(at, std::string::npos) << out;
  const double ppl = std::stod(out.substr(at + 12));
  // Measured 153.9 on these two held-out documents (models/gla-brown/README.md); an untrained
  // model of this vocabulary scores about 8,000.
  EXPECT_LT(ppl, 200.0);
  EXPECT_GT(ppl, 20.0) << "far below what a 7M-parameter model reaches on unseen text: a leak?";
}

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kUnderAsan = true;
#else
constexpr bool kUnderAsan = false;
#endif

TEST(DefaultModel, GladServesItWithoutModelFlagAndTheReadmeRequestReturnsTheReadmeText) {
  if (kUnderAsan) {
    GTEST_SKIP() << "skipped under AddressSanitizer: glad loads SentencePiece with RTLD_DEEPBIND (to keep it off "
                    "gRPC's protobuf), which the sanitizer runtime refuses; the release build runs this test";
  }
  testing::GladProcess glad({});
  ASSERT_TRUE(glad.ok()) << glad.log();
  int code = 0;
  const std::string addr = " --addr " + glad.address();
  const std::string info = RunCommand(CliPath() + " info" + addr, &code);
  ASSERT_EQ(code, 0) << info;
  EXPECT_NE(info.find("gla-brown"), std::string::npos) << info;
  EXPECT_NE(info.find("has_tokenizer: true"), std::string::npos) << info;
  // The README's request, word for word.
  const std::string request = "generate" + addr +
                              " --prompt \"The jury said\" --max-new-tokens 40 --temperature 0.8 --top-p 0.95 --seed 1";
  const std::string gen = RunCommand(CliPath() + " " + request, &code);
  ASSERT_EQ(code, 0) << gen;
  EXPECT_NE(gen.find("completion_tokens=40"), std::string::npos) << gen;
  const std::string text = gen.substr(0, gen.find('\n'));
  ASSERT_GT(text.size(), 40u) << gen;
  const char* backend = std::getenv("GLA_EXPECT_BACKEND");
  if (backend != nullptr && std::string(backend) == "cuda") {
    std::printf("[ note ] cuda backend: bf16 logits sample other tokens than the README's CPU text: %s\n", text.c_str());
    return;
  }
  const std::string readme = ReadFile(std::string(GLA_SOURCE_DIR) + "/README.md");
  EXPECT_NE(readme.find("--prompt \"The jury said\" --max-new-tokens 40 --temperature 0.8 --top-p 0.95 --seed 1"),
            std::string::npos)
      << "README.md no longer shows this request";
  EXPECT_NE(readme.find(text), std::string::npos) << "README.md should quote what the request returns:\n" << text;
}

// Structured output over gRPC through gla-cli (the constraint oneof of GenerateRequest): a regex,
// a JSON Schema file, a refused schema keyword (INVALID_ARGUMENT naming the field and keyword),
// two constraints at once refused by the CLI itself.
TEST(DefaultModel, GlaCliConstrainsTheOutputOverGrpc) {
  if (kUnderAsan) GTEST_SKIP() << "skipped under AddressSanitizer: see the test above";
  testing::GladProcess glad({});
  ASSERT_TRUE(glad.ok()) << glad.log();
  int code = 0;
  const std::string cli = CliPath() + " generate --addr " + glad.address() + " --prompt \"The number is\" ";
  const std::string digits = RunCommand(cli + "--max-new-tokens 20 --temperature 1 --seed 4 --regex '[0-9]{3}-[0-9]{2}'", &code);
  ASSERT_EQ(code, 0) << digits;
  const std::string text = digits.substr(0, digits.find('\n'));
  EXPECT_TRUE(std::regex_match(text, std::regex("[0-9]{3}-[0-9]{2}"))) << digits;
  EXPECT_NE(digits.find("finish=stop"), std::string::npos) << digits;

  const std::string dir = ::testing::TempDir();
  const std::string schema = dir + "/gla_cli_schema.json";
  {
    std::ofstream out(schema);
    out << R"({"type": "object", "properties": {"ok": {"type": "boolean"}, "n": {"enum": [1, 2, 3]}},
               "required": ["ok", "n"], "additionalProperties": false})";
  }
  const std::string json = RunCommand(cli + "--max-new-tokens 40 --temperature 1 --seed 2 --json-schema " + schema, &code);
  ASSERT_EQ(code, 0) << json;
  const std::string object = json.substr(0, json.find('\n'));
  EXPECT_TRUE(std::regex_match(object, std::regex(R"(\{ ?"ok" ?: ?(true|false) ?, ?"n" ?: ?[123] ?\})"))) << json;

  const std::string refused_file = dir + "/gla_cli_refused.json";
  {
    std::ofstream out(refused_file);
    out << R"J({"type": "string", "pattern": "^(?=a)"})J";
  }
  const std::string refused = RunCommand(cli + "--json-schema " + refused_file, &code);
  EXPECT_NE(code, 0) << refused;
  EXPECT_NE(refused.find("INVALID_ARGUMENT"), std::string::npos) << refused;
  EXPECT_NE(refused.find("json_schema"), std::string::npos) << refused;
  EXPECT_NE(refused.find("pattern"), std::string::npos) << refused;
  const std::string two = RunCommand(cli + "--regex a --json-object 1", &code);
  EXPECT_NE(code, 0) << two;
  EXPECT_NE(two.find("one at most"), std::string::npos) << two;
}

}  // namespace
}  // namespace gla
