// SentencePiece tokenizer: a small model is trained here with Debian's spm_train, on text this
// test writes (with characters rare enough to fall back to byte pieces).
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <random>

#include "models/tokenizer.h"
#include "models/utf8.h"
#include "tests/support/spm_train.h"
#include "tests/support/test_util.h"

namespace gla {
namespace {

const std::vector<std::string>& kTexts = testing::SampleTexts();

class TokenizerTest : public ::testing::TestWithParam<std::string> {
 protected:
  static std::map<std::string, std::string>& Models() {
    static std::map<std::string, std::string> m;
    return m;
  }
  std::unique_ptr<Tokenizer> Load() {
    const std::string& flags = GetParam();
    if (!Models().count(flags)) Models()[flags] = testing::TrainSentencePiece(std::to_string(Models().size()), flags);
    auto t = Tokenizer::Load(Models()[flags]);
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? std::move(*t) : nullptr;
  }
};

std::string Stream(const Tokenizer& tok, const std::vector<int32_t>& ids, bool* all_valid) {
  StreamingDetokenizer d(tok);
  std::string out;
  *all_valid = true;
  for (int32_t id : ids) {
    const std::string delta = d.Push(id);
    *all_valid = *all_valid && IsValidUtf8(delta);
    out += delta;
  }
  const std::string last = d.Flush();
  *all_valid = *all_valid && IsValidUtf8(last);
  return out + last;
}

TEST_P(TokenizerTest, EncodeDecodeRoundTrips) {
  auto tok = Load();
  ASSERT_TRUE(tok);
  for (const auto& text : kTexts) {
    if (GetParam().empty() && text.find("  ") != std::string::npos) continue;  // default normaliser squeezes spaces
    auto ids = tok->Encode(text, /*add_bos=*/true);
    ASSERT_TRUE(ids.ok());
    EXPECT_EQ((*ids)[0], 1);
    EXPECT_EQ(*tok->Decode(*ids), text);
  }
}

TEST_P(TokenizerTest, StreamingEqualsDecodeOnText) {
  auto tok = Load();
  ASSERT_TRUE(tok);
  for (const auto& text : kTexts) {
    auto ids = *tok->Encode(text, true);
    bool valid = false;
    EXPECT_EQ(Stream(*tok, ids, &valid), *tok->Decode(ids)) << text;
    EXPECT_TRUE(valid) << text;
  }
}

TEST_P(TokenizerTest, StreamingNeverEmitsHalfACharacter) {
  auto tok = Load();
  ASSERT_TRUE(tok);
  auto ids = *tok->Encode("🚀", false);  // rare: byte pieces, 4 of them
  ASSERT_GE(ids.size(), 4u);
  StreamingDetokenizer d(*tok);
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) {
    const std::string delta = d.Push(ids[i]);
    EXPECT_TRUE(IsValidUtf8(delta));
    out += delta;
  }
  EXPECT_EQ(out + d.Flush(), "🚀");
}

TEST_P(TokenizerTest, StreamingEqualsDecodeOnRandomIds) {
  auto tok = Load();
  ASSERT_TRUE(tok);
  std::mt19937 rng(11);
  for (int trial = 0; trial < 300; ++trial) {
    std::vector<int32_t> ids;
    const int n = 1 + rng() % 12;
    for (int i = 0; i < n; ++i) {
      // Mostly byte pieces (ids 3..258 with these flags) so broken sequences are common.
      ids.push_back(rng() % 3 ? 3 + rng() % 256 : rng() % tok->vocab_size());
    }
    bool valid = false;
    EXPECT_EQ(Stream(*tok, ids, &valid), *tok->Decode(ids)) << "trial " << trial;
    EXPECT_TRUE(valid);
  }
}

TEST_P(TokenizerTest, RefusesInvalidInput) {
  auto tok = Load();
  ASSERT_TRUE(tok);
  EXPECT_EQ(tok->Encode("bad \xC3\x28 utf8", false).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(tok->Decode(std::vector<int32_t>{5, tok->vocab_size()}).status().code(), absl::StatusCode::kInvalidArgument);
}

// Encoding in segments (what the server does with text from the network) gives the ids of
// encoding the whole text, whatever the whitespace between the segments.
TEST_P(TokenizerTest, EncodeBoundedEqualsEncode) {
  auto tok = Load();
  ASSERT_TRUE(tok);
  std::mt19937 rng(7);
  const char* const kSpaces[] = {" ", "  ", "\n", "\t ", " \n\n ", ""};
  std::string text;
  for (int i = 0; i < 60; ++i) text += kTexts[rng() % kTexts.size()] + kSpaces[rng() % std::size(kSpaces)];
  auto whole = tok->Encode(text, true);
  ASSERT_TRUE(whole.ok()) << whole.status();
  // Segments longer than any run of these texts without whitespace.
  for (size_t segment : {size_t{24}, size_t{64}, size_t{1000}, size_t{1} << 20}) {
    auto bounded = tok->EncodeBounded(text, true, {.max_tokens = 1 << 20, .segment_bytes = segment});
    ASSERT_TRUE(bounded.ok()) << bounded.status();
    EXPECT_EQ(*bounded, *whole) << "segments of " << segment << " bytes";
  }
}

TEST_P(TokenizerTest, EncodeBoundedRefusesPastItsLimits) {
  auto tok = Load();
  ASSERT_TRUE(tok);
  const std::string text = kTexts[0] + " " + kTexts[1];
  const auto ids = tok->Encode(text, true);
  ASSERT_TRUE(ids.ok());
  const int64_t n = static_cast<int64_t>(ids->size());
  EXPECT_TRUE(tok->EncodeBounded(text, true, {.max_tokens = n, .segment_bytes = 16}).ok());
  const auto over = tok->EncodeBounded(text, true, {.max_tokens = n - 1, .segment_bytes = 16});
  EXPECT_EQ(over.status().code(), absl::StatusCode::kOutOfRange) << over.status();
  // A text longer than the tokens could ever cover is refused by its length, before encoding.
  const std::string huge(static_cast<size_t>(tok->MaxBytesFor(10)) + 1, 'a');
  const auto too_long = tok->EncodeBounded(huge, true, {.max_tokens = 10});
  EXPECT_EQ(too_long.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_NE(std::string(too_long.status().message()).find("bytes"), std::string::npos) << too_long.status();
  EXPECT_EQ(tok->EncodeBounded("bad \xC3\x28", true, {.max_tokens = 10}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// "" = SentencePiece defaults; the second mirrors Llama's tokenizer.model normaliser.
INSTANTIATE_TEST_SUITE_P(Normalizers, TokenizerTest,
                         ::testing::Values("", "--remove_extra_whitespaces=false --add_dummy_prefix=true"),
                         [](const auto& info) { return info.index == 0 ? "Default" : "LlamaLike"; });

TEST(Tokenizer, NotAModelFileIsRefusedByPath) {
  const std::string path = testing::MakeTempDir("notspm") + "/tokenizer.model";
  std::ofstream(path) << "this is not a protobuf";
  auto t = Tokenizer::Load(path);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(std::string(t.status().message()).find(path), std::string::npos);
}

// A model's bytes load as its file does (Load reads the file once and hands SentencePiece the
// bytes): the same vocabulary and ids; a byte-fallback model's byte pieces decode to their bytes;
// a truncated model is refused naming what the caller called it.
TEST(Tokenizer, FromModelBytesEqualsLoadAndNamesTheModel) {
  const std::string path = std::string(GLA_SOURCE_DIR) + "/tests/data/tokenizers/tiny_bpe_bytes.model";
  std::ifstream in(path, std::ios::binary);
  const std::string bytes{std::istreambuf_iterator<char>(in), {}};
  ASSERT_GT(bytes.size(), 1000u);
  auto from_file = Tokenizer::Load(path);
  auto from_bytes = Tokenizer::FromModelBytes(bytes, "the tiny model");
  ASSERT_TRUE(from_file.ok()) << from_file.status();
  ASSERT_TRUE(from_bytes.ok()) << from_bytes.status();
  EXPECT_EQ((*from_bytes)->vocab_size(), (*from_file)->vocab_size());
  const std::string text = "the jury said caf\xc3\xa9";  // the accent is not in its pieces: byte fallback
  auto a = (*from_file)->Encode(text, false), b = (*from_bytes)->Encode(text, false);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);
  auto decoded = (*from_bytes)->Decode(*b);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(*decoded, text);
  auto bad = Tokenizer::FromModelBytes(bytes.substr(0, bytes.size() / 2), "the tiny model");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("the tiny model"), std::string::npos) << bad.status();
}

// SentencePiece takes a piece that is not UTF-8 (its bytes are only a protobuf string); we refuse
// the model by name, as every response using the piece would carry invalid text (found by the
// tokenizer_model fuzzer).
TEST(Tokenizer, APieceThatIsNotUtf8IsRefusedByName) {
  std::ifstream in(std::string(GLA_SOURCE_DIR) + "/tests/data/tokenizers/tiny_unigram.model", std::ios::binary);
  std::string bytes{std::istreambuf_iterator<char>(in), {}};
  ASSERT_TRUE(Tokenizer::FromModelBytes(bytes, "tiny").ok());
  const size_t at = bytes.find("\xe2\x96\x81the");  // the piece "▁the": break its first character
  ASSERT_NE(at, std::string::npos);
  bytes[at + 1] = '=';
  auto bad = Tokenizer::FromModelBytes(bytes, "tiny");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("is not valid UTF-8"), std::string::npos) << bad.status();
}

// A unigram model with a zero-length piece made SentencePiece's trie builder throw (darts_clone:
// "zero-length key") through the load and terminate the process (found by the tokenizer_model
// fuzzer; tests/data/tokenizers/zero_length_piece.model is its input): refused by name instead.
TEST(Tokenizer, AModelThatMakesSentencePieceThrowIsRefusedNotFatal) {
  const std::string path = std::string(GLA_SOURCE_DIR) + "/tests/data/tokenizers/zero_length_piece.model";
  auto t = Tokenizer::Load(path);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(t.status().message().find(path + ": not a SentencePiece model: SentencePiece threw"), std::string::npos)
      << t.status();
}

// A real 32,000-piece vocabulary as a tokenizer model (tests/data/vocabularies: Mistral 7B's pieces,
// written as a SentencePiece BPE model by sentencepiece_bpe_model.py, scores by merge rank): it
// encodes as Mistral's tokenizer does (the ids the vocabulary's source publishes for "Hello
// world!"), round-trips text, and its constraint bytes are the pieces'. What the GPU's structured-
// output throughput runs with at 32,000 tokens (deploy/gpu-check.sh structured).
TEST(Tokenizer, MistralsVocabularyAsABpeModel) {
  const std::string dir = std::string(GLA_SOURCE_DIR) + "/tests/data/vocabularies";
  const std::string path = testing::MakeTempDir("mistral") + "/tokenizer.model";
  const std::string command =
      "python3 " + dir + "/sentencepiece_bpe_model.py " + dir + "/mistral-7b-v0.1.txt " + path;
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  auto tok = Tokenizer::Load(path);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->vocab_size(), 32000);
  auto ids = (*tok)->Encode("Hello world!", /*add_bos=*/true);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, (std::vector<int32_t>{1, 22557, 1526, 28808}));
  for (const std::string& text : kTexts) {
    auto encoded = (*tok)->Encode(text, false);
    ASSERT_TRUE(encoded.ok());
    auto decoded = (*tok)->Decode(*encoded);
    ASSERT_TRUE(decoded.ok());
    EXPECT_EQ(*decoded, text);
    bool all_valid = false;  // streamed, the first piece's space is dropped as Decode drops it
    EXPECT_EQ(Stream(**tok, *encoded, &all_valid), text);
  }
  std::vector<std::string> bytes, at_start;
  std::vector<int32_t> invisible;
  (*tok)->TokenBytes(&bytes, &at_start, &invisible);
  EXPECT_EQ(bytes[259], "  ");           // "▁▁"
  EXPECT_EQ(bytes[3 + 'A'], "A");        // <0x41>, a byte piece
  EXPECT_EQ(at_start[22557], "Hello");   // "▁Hello" loses its space at the start
  EXPECT_EQ(bytes[22557], " Hello");
}

TEST(Utf8, Validation) {
  EXPECT_TRUE(IsValidUtf8("aé漢🙂"));
  EXPECT_FALSE(IsValidUtf8("\xC0\xAF"));          // overlong
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\x80"));      // surrogate
  EXPECT_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));  // past U+10FFFF
  EXPECT_FALSE(IsValidUtf8("\xE6\xBC"));          // truncated
  EXPECT_TRUE(IsUtf8Prefix("\xE6\xBC"));
  EXPECT_FALSE(IsUtf8Prefix("\xE6\x41"));
}

}  // namespace
}  // namespace gla
