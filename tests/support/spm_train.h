// Trains a small SentencePiece model with Debian's spm_train on text written here (BPE, byte
// fallback, vocabulary 320, bos=1 eos=2 unk=0), for tests that need a real tokenizer.model.
#pragma once

#include <string>
#include <vector>

namespace gla::testing {

// Sentences guaranteed to be in the training text (some with rare characters -> byte pieces).
const std::vector<std::string>& SampleTexts();

// Returns the path of the trained model ("" and a gtest failure when spm_train fails).
std::string TrainSentencePiece(const std::string& name, const std::string& extra_flags = "");

}  // namespace gla::testing
