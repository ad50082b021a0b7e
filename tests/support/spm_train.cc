#include "tests/support/spm_train.h"

#include <gtest/gtest.h>

#include <fstream>
#include <random>

#include "tests/support/test_util.h"

namespace gla::testing {

const std::vector<std::string>& SampleTexts() {
  static const std::vector<std::string> texts = {
      "The quick brown fox jumps over the lazy dog.",
      "Gated linear attention keeps a matrix state per head.",
      "naïve café déjà vu — “quotes” and ü",
      "emoji 🙂 and 🚀 fly; CJK 漢字 and かな",
      "  leading spaces and double  spaces",
      "numbers 12345 and symbols #$%&*",
  };
  return texts;
}

std::string TrainSentencePiece(const std::string& name, const std::string& extra_flags) {
  const std::string dir = MakeTempDir("spm-" + name);
  {
    std::ofstream corpus(dir + "/corpus.txt");
    std::mt19937 rng(7);
    const std::vector<std::string> words = {"the", "state", "gate", "linear", "attention", "model", "token",
                                            "stream", "decode", "prefill", "chunk", "server", "quick", "fox"};
    for (int line = 0; line < 400; ++line) {
      for (int w = 0; w < 12; ++w) corpus << words[rng() % words.size()] << (w == 11 ? "" : " ");
      corpus << (line % 50 == 0 ? " café naïve" : "") << "\n";
    }
    for (const auto& t : SampleTexts()) corpus << t << "\n";
  }
  const std::string cmd = "spm_train --input=" + dir + "/corpus.txt --model_prefix=" + dir +
                          "/tok --vocab_size=320 --model_type=bpe --byte_fallback=true"
                          " --character_coverage=0.98 --bos_id=1 --eos_id=2 --unk_id=0 --minloglevel=2 " +
                          extra_flags + " > " + dir + "/train.log 2>&1";
  const int rc = std::system(cmd.c_str());
  EXPECT_EQ(rc, 0) << "spm_train failed (deploy/install-deps.sh installs it): " << cmd;
  return rc == 0 ? dir + "/tok.model" : "";
}

}  // namespace gla::testing
