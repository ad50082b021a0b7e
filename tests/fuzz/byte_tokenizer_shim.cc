// A stand-in for libgla_sentencepiece.so in generate_request_fuzz: a byte-level tokenizer
// (<unk>, <s>, </s>, then one byte piece <0xNN> per byte) behind the same SentencePieceAdapter
// entry point, loaded through $GLA_SENTENCEPIECE_SHIM.
//
// Why: Debian's SentencePiece embeds protobuf 3.14 and is kept apart from the system's libprotobuf
// 3.21 only by RTLD_DEEPBIND, which AddressSanitizer refuses; a sanitized process that links
// libprotobuf (gla_server does, for the request messages) aborts in protobuf's version check as soon
// as it loads the real shim. This one lets the harness validate text prompts through
// Tokenizer::Encode; SentencePiece itself is fuzzed by tokenizer_fuzz, which links no protobuf.
#include <cstddef>
#include <string>
#include <vector>

#include "models/sentencepiece_adapter.h"

namespace {

constexpr int kFirstByte = 3;

class ByteTokenizer final : public gla::SentencePieceAdapter {
 public:
  int vocab_size() const override { return kFirstByte + 256; }
  bool Encode(const std::string& text, std::vector<int>* ids, std::string*) const override {
    ids->clear();
    for (unsigned char c : text) ids->push_back(kFirstByte + c);
    return true;
  }
  bool Decode(const std::vector<int>& ids, std::string* text, std::string*) const override {
    text->clear();
    for (int id : ids)
      if (IsByte(id)) text->push_back(static_cast<char>(id - kFirstByte));
    return true;
  }
  std::string IdToPiece(int id) const override {
    if (id == 0) return "<unk>";
    if (id == 1) return "<s>";
    if (id == 2) return "</s>";
    static const char kHex[] = "0123456789ABCDEF";
    const int b = id - kFirstByte;
    return std::string("<0x") + kHex[b >> 4] + kHex[b & 15] + ">";
  }
  bool IsControl(int id) const override { return id == 1 || id == 2; }
  bool IsUnknown(int id) const override { return id == 0; }
  bool IsByte(int id) const override { return id >= kFirstByte && id < vocab_size(); }
  int bos_id() const override { return 1; }
  int eos_id() const override { return 2; }
  int unk_id() const override { return 0; }
};

}  // namespace

extern "C" __attribute__((visibility("default"))) gla::SentencePieceAdapter* gla_sentencepiece_load_model(
    const char*, size_t, std::string*) {
  return new ByteTokenizer();
}
