// No Abseil headers here (see the header comment).
#include "models/sentencepiece_adapter.h"

#include <sentencepiece_processor.h>

namespace gla {

struct SentencePieceAdapter::Impl {
  sentencepiece::SentencePieceProcessor sp;
};

SentencePieceAdapter::SentencePieceAdapter() : impl_(std::make_unique<Impl>()) {}
SentencePieceAdapter::~SentencePieceAdapter() = default;

std::unique_ptr<SentencePieceAdapter> SentencePieceAdapter::Load(const std::string& path, std::string* error) {
  std::unique_ptr<SentencePieceAdapter> a(new SentencePieceAdapter());
  const auto status = a->impl_->sp.Load(path);
  if (!status.ok()) {
    *error = status.ToString();
    return nullptr;
  }
  return a;
}

int SentencePieceAdapter::vocab_size() const { return impl_->sp.GetPieceSize(); }

bool SentencePieceAdapter::Encode(const std::string& text, std::vector<int>* ids, std::string* error) const {
  const auto status = impl_->sp.Encode(text, ids);
  if (!status.ok()) *error = status.ToString();
  return status.ok();
}

bool SentencePieceAdapter::Decode(const std::vector<int>& ids, std::string* text, std::string* error) const {
  const auto status = impl_->sp.Decode(ids, text);
  if (!status.ok()) *error = status.ToString();
  return status.ok();
}

std::string SentencePieceAdapter::IdToPiece(int id) const { return impl_->sp.IdToPiece(id); }
bool SentencePieceAdapter::IsControl(int id) const { return impl_->sp.IsControl(id); }
bool SentencePieceAdapter::IsUnknown(int id) const { return impl_->sp.IsUnknown(id); }
bool SentencePieceAdapter::IsByte(int id) const { return impl_->sp.IsByte(id); }
int SentencePieceAdapter::bos_id() const { return impl_->sp.bos_id(); }
int SentencePieceAdapter::eos_id() const { return impl_->sp.eos_id(); }
int SentencePieceAdapter::unk_id() const { return impl_->sp.unk_id(); }

}  // namespace gla
