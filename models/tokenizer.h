// SentencePiece tokenizer (`tokenizer.model`) with streaming detokenization.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace gla {

class SentencePieceAdapter;

class Tokenizer {
 public:
  // bos/eos override the model's own ids when the checkpoint's config.json names them.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& path,
                                                         std::optional<int> bos_id = std::nullopt,
                                                         std::optional<int> eos_id = std::nullopt);
  // The same from a tokenizer.model's bytes (Load reads the file and calls this); `name` is what
  // errors call the model.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromModelBytes(const std::string& model, const std::string& name,
                                                                   std::optional<int> bos_id = std::nullopt,
                                                                   std::optional<int> eos_id = std::nullopt);
  ~Tokenizer();

  int vocab_size() const;
  std::optional<int> bos_id() const { return bos_id_; }
  std::optional<int> eos_id() const { return eos_id_; }

  // Text must be valid UTF-8 (INVALID_ARGUMENT otherwise).
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text, bool add_bos) const;

  // Encode with a limit applied while the text is read, for text from the network: SentencePiece
  // holds 60-80 times the text's size while it encodes, so a long text is encoded in segments of
  // at most `segment_bytes` cut after whitespace (where the model removes extra whitespace, a
  // segment then encodes exactly as it does inside the whole text), and encoding stops as soon as
  // the count passes `max_tokens`. A text longer than `max_tokens` times the longest piece is
  // refused before any encoding. Over a limit: OUT_OF_RANGE naming the limit.
  struct Bounds {
    int64_t max_tokens = 0;                   // > 0; BOS included
    size_t segment_bytes = size_t{64} << 10;  // tests set it smaller
  };
  absl::StatusOr<std::vector<int32_t>> EncodeBounded(std::string_view text, bool add_bos, const Bounds& bounds) const;
  // Bytes that `max_tokens` tokens can cover at most (the longest piece's bytes per token).
  int64_t MaxBytesFor(int64_t max_tokens) const;
  absl::StatusOr<std::string> Decode(std::span<const int32_t> ids) const;
  // What one token stands for on its own, as token-level logprobs show it: a text piece with its
  // leading space (U+2581 as ' '), "" for a control token or an id outside the vocabulary, and a
  // byte piece as its byte when that is ASCII, else "bytes:\xNN" (OpenAI's spelling).
  std::string PieceText(int32_t id) const;
  // The bytes each id adds to the text (structured output: what a constraint sees), in the middle
  // of an output (*bytes) and as its first text (*at_start: a leading space dropped, as
  // StreamingDetokenizer drops it). A byte piece is its byte; a control token "".
  // *invisible_at_start: the pieces that are only that space (they add nothing there): Encode
  // begins a text whose first character joins no piece with the space that way ("▁" then "{"),
  // so an output may too.
  void TokenBytes(std::vector<std::string>* bytes, std::vector<std::string>* at_start,
                  std::vector<int32_t>* invisible_at_start) const;

 private:
  friend class StreamingDetokenizer;
  Tokenizer();
  // What one non-byte piece contributes, before the leading-space rule.
  struct PieceInfo {
    enum Kind : uint8_t { kText, kControl, kByte } kind = kText;
    uint8_t byte = 0;        // kByte
    bool starts_with_space = false;  // kText: piece began with U+2581
    std::string text;        // kText: U+2581 replaced by ' ' (leading one kept)
  };
  std::unique_ptr<SentencePieceAdapter> sp_;
  std::vector<PieceInfo> pieces_;
  bool strip_first_space_ = true;      // add_dummy_prefix || remove_extra_whitespaces
  bool keep_stripping_spaces_ = false; // remove_extra_whitespaces
  int64_t max_piece_bytes_ = 1;         // longest surface a piece stands for
  std::optional<int> bos_id_, eos_id_;
};

// Turns a stream of token ids into text deltas that are always complete, valid UTF-8, and whose
// concatenation equals Tokenizer::Decode of all the ids (SentencePiece's own rules: control
// tokens are invisible, byte pieces join into characters, broken byte sequences become U+FFFD,
// the first piece's dummy-prefix space is dropped).
class StreamingDetokenizer {
 public:
  explicit StreamingDetokenizer(const Tokenizer& tokenizer) : tok_(tokenizer) {}
  // Out-of-vocabulary ids are ignored (the caller validates ids).
  std::string Push(int32_t id);
  // Call at end of stream: pending bytes of an unfinished character become U+FFFD each.
  std::string Flush();
  // Whether the next text piece would lose its leading space (nothing shown yet): then a token
  // adds Tokenizer::TokenBytes' at_start bytes, else its bytes.
  bool AtStart() const;

 private:
  void DrainBytes(std::string* out, bool at_end);
  const Tokenizer& tok_;
  std::string pending_;  // bytes of a character still being completed
  bool any_text_ = false;
  bool is_bos_ws_ = true;
  bool bos_ws_seen_ = false;
};

}  // namespace gla
