// The only door to SentencePiece, as an abstract interface.
//
// Debian's libsentencepiece.so embeds and exports its own protobuf 3.14, while gRPC needs the
// system's libprotobuf 3.21: in one symbol namespace each binds to the other's code and the
// process aborts (whichever loads first). So the implementation lives in a small shared library
// (libgla_sentencepiece.so, sentencepiece_shim.cc) that is dlopen()ed with RTLD_LOCAL |
// RTLD_DEEPBIND: SentencePiece resolves to its own protobuf and nothing else sees it. This header
// includes neither SentencePiece nor Abseil (Debian's SentencePiece header also clashes with
// Abseil's string_view).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace gla {

class SentencePieceAdapter {
 public:
  virtual ~SentencePieceAdapter() = default;
  virtual int vocab_size() const = 0;
  virtual bool Encode(const std::string& text, std::vector<int>* ids, std::string* error) const = 0;
  virtual bool Decode(const std::vector<int>& ids, std::string* text, std::string* error) const = 0;
  // Per-piece facts that streaming detokenization needs.
  virtual std::string IdToPiece(int id) const = 0;
  virtual bool IsControl(int id) const = 0;
  virtual bool IsUnknown(int id) const = 0;
  virtual bool IsByte(int id) const = 0;
  virtual int bos_id() const = 0;
  virtual int eos_id() const = 0;
  virtual int unk_id() const = 0;
};

// Loads the shim library (once) and a model from its serialized bytes (a tokenizer.model file's
// contents: the caller opens and reads the file, so what was checked is what is parsed).
// nullptr and *error on failure.
std::unique_ptr<SentencePieceAdapter> LoadSentencePieceAdapter(const std::string& serialized_model,
                                                               std::string* error);

}  // namespace gla
