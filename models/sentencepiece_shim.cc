// libgla_sentencepiece.so: SentencePiece behind SentencePieceAdapter. Loaded with dlopen by
// sentencepiece_loader.cc (see sentencepiece_adapter.h for why). No Abseil headers here.
#include <sentencepiece_processor.h>

#include <cstddef>
#include <exception>
#include <string>
#include <string_view>

#include "models/sentencepiece_adapter.h"

namespace gla {
namespace {

// Runs a SentencePiece call: true when its status is OK; otherwise false with *error set, also when
// it throws.
template <class Call>
bool Guarded(std::string* error, Call&& call) {
  try {
    const auto status = call();
    if (!status.ok()) *error = status.ToString();
    return status.ok();
  } catch (const std::exception& e) {
    *error = std::string("SentencePiece threw: ") + e.what();
  } catch (...) {
    *error = "SentencePiece threw an exception";
  }
  return false;
}

class SentencePieceShim final : public SentencePieceAdapter {
 public:
  // SentencePiece reports most bad input through its status, but some of a hostile model reaches
  // code that throws (darts_clone's trie builder: "zero-length key", found by the tokenizer_model
  // fuzzer): an exception is an error here, never a terminate() of the server.
  bool Load(std::string_view serialized_model, std::string* error) {
    return Guarded(error, [&] { return sp_.LoadFromSerializedProto(serialized_model); });
  }
  int vocab_size() const override { return sp_.GetPieceSize(); }
  bool Encode(const std::string& text, std::vector<int>* ids, std::string* error) const override {
    return Guarded(error, [&] { return sp_.Encode(text, ids); });
  }
  bool Decode(const std::vector<int>& ids, std::string* text, std::string* error) const override {
    return Guarded(error, [&] { return sp_.Decode(ids, text); });
  }
  std::string IdToPiece(int id) const override { return sp_.IdToPiece(id); }
  bool IsControl(int id) const override { return sp_.IsControl(id); }
  bool IsUnknown(int id) const override { return sp_.IsUnknown(id); }
  bool IsByte(int id) const override { return sp_.IsByte(id); }
  int bos_id() const override { return sp_.bos_id(); }
  int eos_id() const override { return sp_.eos_id(); }
  int unk_id() const override { return sp_.unk_id(); }

 private:
  sentencepiece::SentencePieceProcessor sp_;
};

}  // namespace
}  // namespace gla

// The one exported entry point (looked up with dlsym): a model from its serialized bytes (the
// caller reads the file: SentencePiece never opens one).
extern "C" __attribute__((visibility("default"))) gla::SentencePieceAdapter* gla_sentencepiece_load_model(
    const char* data, size_t size, std::string* error) {
  auto* shim = new gla::SentencePieceShim();
  if (!shim->Load(std::string_view(data, size), error)) {
    delete shim;
    return nullptr;
  }
  return shim;
}
