// libgla_sentencepiece.so: SentencePiece behind SentencePieceAdapter. Loaded with dlopen by
// sentencepiece_loader.cc (see sentencepiece_adapter.h for why). No Abseil headers here.
#include <sentencepiece_processor.h>

#include "models/sentencepiece_adapter.h"

namespace gla {
namespace {

class SentencePieceShim final : public SentencePieceAdapter {
 public:
  bool Load(const std::string& path, std::string* error) {
    const auto status = sp_.Load(path);
    if (!status.ok()) *error = status.ToString();
    return status.ok();
  }
  int vocab_size() const override { return sp_.GetPieceSize(); }
  bool Encode(const std::string& text, std::vector<int>* ids, std::string* error) const override {
    const auto status = sp_.Encode(text, ids);
    if (!status.ok()) *error = status.ToString();
    return status.ok();
  }
  bool Decode(const std::vector<int>& ids, std::string* text, std::string* error) const override {
    const auto status = sp_.Decode(ids, text);
    if (!status.ok()) *error = status.ToString();
    return status.ok();
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

// The one exported entry point (looked up with dlsym).
extern "C" __attribute__((visibility("default"))) gla::SentencePieceAdapter* gla_sentencepiece_load(
    const char* path, std::string* error) {
  auto* shim = new gla::SentencePieceShim();
  if (!shim->Load(path, error)) {
    delete shim;
    return nullptr;
  }
  return shim;
}
