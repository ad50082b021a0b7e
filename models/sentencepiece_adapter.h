// The only door to SentencePiece. Debian's sentencepiece_processor.h declares its own
// absl::string_view, which clashes with Abseil's: this header and its .cc include no Abseil
// (and this header includes no SentencePiece), so the two never meet in one translation unit.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace gla {

class SentencePieceAdapter {
 public:
  // Returns nullptr and sets *error on failure.
  static std::unique_ptr<SentencePieceAdapter> Load(const std::string& path, std::string* error);
  ~SentencePieceAdapter();

  int vocab_size() const;
  bool Encode(const std::string& text, std::vector<int>* ids, std::string* error) const;
  bool Decode(const std::vector<int>& ids, std::string* text, std::string* error) const;

  // Per-piece facts that streaming detokenization needs.
  std::string IdToPiece(int id) const;
  bool IsControl(int id) const;
  bool IsUnknown(int id) const;
  bool IsByte(int id) const;
  int bos_id() const;
  int eos_id() const;
  int unk_id() const;

 private:
  SentencePieceAdapter();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace gla
