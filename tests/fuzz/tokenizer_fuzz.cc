// Fuzzes the tokenizer input path (models/tokenizer.h) with the default model's
// tokenizer.model (models/gla-brown): Tokenizer::Encode of arbitrary bytes, Decode of what it
// returns, and the streaming detokenizer over those ids and over ids taken from the input's bytes.
// SentencePiece (a Debian library, not instrumented) runs through the dlopen'd shim; coverage
// guides through our side of it. Inputs are short (-max_len in deploy/fuzz.sh): this is not the
// test of huge texts.
// Promise: invalid UTF-8 is refused with INVALID_ARGUMENT; valid text gives ids inside the
// vocabulary that decode; the streamed deltas are each valid UTF-8 and join to Decode's text;
// no UB, crash or leak.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "models/tokenizer.h"
#include "models/utf8.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

const gla::Tokenizer& Tok() {
  static const std::unique_ptr<gla::Tokenizer> t = [] {
    auto loaded = gla::Tokenizer::Load(GLA_SOURCE_DIR "/models/gla-brown/tokenizer.model");
    if (!loaded.ok()) {
      std::fprintf(stderr, "tokenizer_fuzz: %s\n", loaded.status().ToString().c_str());
      std::abort();
    }
    return *std::move(loaded);
  }();
  return *t;
}

// Streams `ids` and checks each delta and the whole against Decode.
void CheckStreaming(const gla::Tokenizer& tok, const std::vector<int32_t>& ids) {
  auto decoded = tok.Decode(ids);
  GLA_FUZZ_CHECK(decoded.ok(), "Decode: %s", decoded.status().ToString().c_str());
  gla::StreamingDetokenizer d(tok);
  std::string streamed;
  for (int32_t id : ids) {
    const std::string delta = d.Push(id);
    GLA_FUZZ_CHECK(gla::IsValidUtf8(delta), "a delta that is not valid UTF-8");
    streamed += delta;
  }
  const std::string last = d.Flush();
  GLA_FUZZ_CHECK(gla::IsValidUtf8(last), "a final delta that is not valid UTF-8");
  streamed += last;
  GLA_FUZZ_CHECK(streamed == *decoded, "streamed '%s' != decoded '%s'", streamed.c_str(), decoded->c_str());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  (void)Tok();  // load once, before the first input (and outside leak accounting of inputs)
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const gla::Tokenizer& tok = Tok();
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto ids = tok.Encode(text, /*add_bos=*/size % 2 == 0);
  if (!gla::IsValidUtf8(text)) {
    GLA_FUZZ_CHECK(!ids.ok() && ids.status().code() == absl::StatusCode::kInvalidArgument,
                   "invalid UTF-8 was not refused");
  } else {
    GLA_FUZZ_CHECK(ids.ok(), "Encode: %s", ids.status().ToString().c_str());
    for (int32_t id : *ids) GLA_FUZZ_CHECK(id >= 0 && id < tok.vocab_size(), "id %d outside the vocabulary", id);
    CheckStreaming(tok, *ids);
  }
  // The same bytes as little-endian 16-bit ids modulo the vocabulary: any sequence a model may sample.
  std::vector<int32_t> raw;
  for (size_t i = 0; i + 1 < size; i += 2) raw.push_back((data[i] | data[i + 1] << 8) % tok.vocab_size());
  CheckStreaming(tok, raw);
  return 0;
}
