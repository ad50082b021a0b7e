// Fuzzes a hostile tokenizer.model (a model directory is input too: "a truncated or hostile
// checkpoint"): Tokenizer::FromModelBytes of arbitrary bytes — SentencePiece parses them (the
// Debian library, not instrumented, through the dlopen'd shim) and our side builds its piece table
// (control, unknown and byte pieces, space symbols, the normalizer probe) — then, when it loads,
// Encode of a fixed text, Decode of the ids and the streaming detokenizer over them and over ids
// taken from the input. Seeds: tests/data/tokenizers (a unigram and a byte-fallback BPE model).
// Promise: INVALID_ARGUMENT naming the model, or a tokenizer whose Encode gives ids inside its
// vocabulary and whose streamed deltas are each valid UTF-8 (a hostile vocabulary may decode in ways
// the stream cannot follow, so equality with Decode is tokenizer_fuzz's promise, on a real model);
// no UB, crash or leak.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "models/tokenizer.h"
#include "models/utf8.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  auto loaded = gla::Tokenizer::FromModelBytes(bytes, "fuzz.model");
  if (!loaded.ok()) {
    GLA_FUZZ_CHECK(loaded.status().code() == absl::StatusCode::kInvalidArgument, "refused with %s",
                   loaded.status().ToString().c_str());
    GLA_FUZZ_CHECK(loaded.status().message().find("fuzz.model") != std::string::npos, "an error without the name: %s",
                   loaded.status().ToString().c_str());
    return 0;
  }
  const gla::Tokenizer& tok = **loaded;
  const int n = tok.vocab_size();
  GLA_FUZZ_CHECK(n > 0, "a loaded tokenizer with %d pieces", n);
  std::vector<int32_t> ids;
  auto encoded = tok.Encode("the jury said caf\xc3\xa9 \xe2\x80\x94 ok", /*add_bos=*/true);
  if (encoded.ok()) {
    for (int32_t id : *encoded) GLA_FUZZ_CHECK(id >= 0 && id < n, "encoded id %d outside [0, %d)", id, n);
    ids = *encoded;
  }
  for (size_t i = 0; i + 1 < size && ids.size() < 64; i += 2)  // ids from the input's bytes
    ids.push_back(static_cast<int32_t>((data[i] | (data[i + 1] << 8)) % n));
  (void)tok.Decode(ids);  // may refuse; must not crash
  gla::StreamingDetokenizer d(tok);
  for (int32_t id : ids) GLA_FUZZ_CHECK(gla::IsValidUtf8(d.Push(id)), "a delta that is not valid UTF-8");
  GLA_FUZZ_CHECK(gla::IsValidUtf8(d.Flush()), "a final delta that is not valid UTF-8");
  return 0;
}
