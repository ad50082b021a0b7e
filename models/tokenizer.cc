#include "models/tokenizer.h"

#include <algorithm>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "models/file_io.h"
#include "models/sentencepiece_adapter.h"
#include "models/status_macros.h"
#include "models/utf8.h"

namespace gla {

namespace {
constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";  // U+2581, SentencePiece's space

std::string ReplaceSpaceSymbols(std::string_view piece) {
  std::string out;
  for (size_t i = 0; i < piece.size();) {
    if (piece.substr(i, 3) == kSpaceSymbol) {
      out += ' ';
      i += 3;
    } else {
      out += piece[i++];
    }
  }
  return out;
}

int ParseBytePiece(const std::string& piece) {  // "<0xNN>"
  if (piece.size() != 6 || piece.compare(0, 3, "<0x") != 0 || piece[5] != '>') return -1;
  return static_cast<int>(std::strtol(piece.substr(3, 2).c_str(), nullptr, 16));
}
}  // namespace

Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::string& path, std::optional<int> bos_id,
                                                           std::optional<int> eos_id) {
  // Read here, once, as every small model file is (a regular file of a sane size, opened without
  // blocking: a FIFO named tokenizer.model would block start-up, a huge file would be read whole),
  // and SentencePiece parses those bytes: it never opens the file, so nothing can be swapped in
  // between the check and the read.
  ASSIGN_OR_RETURN(const std::string model, ReadWholeFile(path));
  return FromModelBytes(model, path, bos_id, eos_id);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromModelBytes(const std::string& model,
                                                                     const std::string& name,
                                                                     std::optional<int> bos_id,
                                                                     std::optional<int> eos_id) {
  std::string error;
  std::unique_ptr<Tokenizer> t(new Tokenizer());
  t->sp_ = LoadSentencePieceAdapter(model, &error);
  if (t->sp_ == nullptr) return absl::InvalidArgumentError(absl::StrCat(name, ": not a SentencePiece model: ", error));
  const int n = t->sp_->vocab_size();
  t->pieces_.resize(n);
  int lone_space = -1, spaced_piece = -1;
  for (int id = 0; id < n; ++id) {
    PieceInfo& p = t->pieces_[id];
    const std::string piece = t->sp_->IdToPiece(id);
    if (t->sp_->IsControl(id)) {
      p.kind = PieceInfo::kControl;
    } else if (t->sp_->IsByte(id)) {
      const int b = ParseBytePiece(piece);
      if (b < 0) return absl::InvalidArgumentError(absl::StrCat(name, ": byte piece ", id, " is malformed"));
      p.kind = PieceInfo::kByte;
      p.byte = static_cast<uint8_t>(b);
    } else if (t->sp_->IsUnknown(id)) {
      std::string surface;
      t->sp_->Decode({id}, &surface, &error);
      if (!IsValidUtf8(surface))
        return absl::InvalidArgumentError(absl::StrCat(name, ": the unknown piece ", id, " is not valid UTF-8"));
      p.text = surface;  // unknown pieces decode to their surface, never space-stripped
    } else {
      // Text goes out as it is (streamed deltas, gRPC strings, JSON): a piece that is not UTF-8
      // would put invalid text into every response that uses it. SentencePiece does not check.
      if (!IsValidUtf8(piece))
        return absl::InvalidArgumentError(absl::StrCat(name, ": piece ", id, " is not valid UTF-8"));
      p.starts_with_space = piece.compare(0, kSpaceSymbol.size(), kSpaceSymbol) == 0;
      p.text = ReplaceSpaceSymbols(piece);
      if (piece == kSpaceSymbol) lone_space = id;
      // The probe below needs a space then text: Llama/Mistral vocabularies list "▁▁" (two spaces)
      // before any word, and it decodes to a space whether the first space is dropped or not.
      else if (p.starts_with_space && spaced_piece < 0 && p.text.size() > 1 && p.text[1] != ' ') spaced_piece = id;
    }
  }
  for (const PieceInfo& p : t->pieces_)
    t->max_piece_bytes_ = std::max<int64_t>(t->max_piece_bytes_, static_cast<int64_t>(p.text.size()) + 1);
  // The normalizer's flags are not exposed by the C++ API: observe them through Decode.
  if (spaced_piece >= 0) {
    std::string one;
    t->sp_->Decode({spaced_piece}, &one, &error);
    t->strip_first_space_ = one.empty() || one[0] != ' ';
    if (lone_space >= 0 && t->strip_first_space_) {
      std::string two;
      t->sp_->Decode({lone_space, spaced_piece}, &two, &error);
      t->keep_stripping_spaces_ = !two.empty() && two[0] != ' ';
    }
  }
  auto in_vocab = [n](std::optional<int> id) { return !id || (*id >= 0 && *id < n); };
  if (!in_vocab(bos_id) || !in_vocab(eos_id))
    return absl::InvalidArgumentError(absl::StrCat(name, ": bos/eos id from config.json is outside the ", n,
                                                   "-piece vocabulary"));
  t->bos_id_ = bos_id ? bos_id : (t->sp_->bos_id() >= 0 ? std::optional<int>(t->sp_->bos_id()) : std::nullopt);
  t->eos_id_ = eos_id ? eos_id : (t->sp_->eos_id() >= 0 ? std::optional<int>(t->sp_->eos_id()) : std::nullopt);
  return t;
}

int Tokenizer::vocab_size() const { return sp_->vocab_size(); }

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(std::string_view text, bool add_bos) const {
  if (!IsValidUtf8(text)) return absl::InvalidArgumentError("text is not valid UTF-8");
  std::vector<int> ids;
  std::string error;
  if (!sp_->Encode(std::string(text), &ids, &error)) return absl::InternalError(absl::StrCat("encode: ", error));
  std::vector<int32_t> out;
  out.reserve(ids.size() + 1);
  if (add_bos && bos_id_) out.push_back(*bos_id_);
  out.insert(out.end(), ids.begin(), ids.end());
  return out;
}

int64_t Tokenizer::MaxBytesFor(int64_t max_tokens) const {
  // Whitespace the normalizer collapses costs no token: allow a little beyond the piece bound.
  return max_tokens > (int64_t{1} << 40) / max_piece_bytes_ ? int64_t{1} << 40 : max_tokens * max_piece_bytes_ + 4096;
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::EncodeBounded(std::string_view text, bool add_bos,
                                                              const Bounds& bounds) const {
  if (bounds.max_tokens <= 0 || bounds.segment_bytes == 0)
    return absl::InvalidArgumentError("EncodeBounded: max_tokens and segment_bytes must be positive");
  const int64_t max_bytes = MaxBytesFor(bounds.max_tokens);
  if (static_cast<int64_t>(text.size()) > max_bytes)
    return absl::OutOfRangeError(absl::StrCat(text.size(), " bytes, more than the ", max_bytes, " bytes that ",
                                              bounds.max_tokens, " tokens can hold"));
  if (!IsValidUtf8(text)) return absl::InvalidArgumentError("text is not valid UTF-8");
  std::vector<int32_t> out;
  if (add_bos && bos_id_) out.push_back(*bos_id_);
  // Without whitespace removal a segment's edges would encode differently: one segment then
  // (its size is bounded by max_bytes above).
  const size_t segment = keep_stripping_spaces_ ? bounds.segment_bytes : text.size();
  std::vector<int> ids;
  std::string error;
  for (size_t start = 0; start < text.size();) {
    size_t end = text.size();
    if (end - start > segment) {
      end = start + segment;
      // Cut after the last whitespace inside the segment; with none, at a character boundary.
      const size_t ws = text.substr(start, segment).find_last_of(" \t\n\r");
      if (ws != std::string_view::npos && ws > 0) {
        end = start + ws + 1;
      } else {
        const auto continuation = [&](size_t i) { return (static_cast<uint8_t>(text[i]) & 0xC0) == 0x80; };
        while (end > start + 1 && continuation(end)) --end;
        while (end < text.size() && continuation(end)) ++end;  // a segment shorter than one character
      }
    }
    ids.clear();
    if (!sp_->Encode(std::string(text.substr(start, end - start)), &ids, &error))
      return absl::InternalError(absl::StrCat("encode: ", error));
    if (static_cast<int64_t>(out.size() + ids.size()) > bounds.max_tokens)
      return absl::OutOfRangeError(absl::StrCat("more than ", bounds.max_tokens, " tokens"));
    out.insert(out.end(), ids.begin(), ids.end());
    start = end;
  }
  return out;
}

absl::StatusOr<std::string> Tokenizer::Decode(std::span<const int32_t> ids) const {
  const int n = vocab_size();
  for (int32_t id : ids)
    if (id < 0 || id >= n) return absl::InvalidArgumentError(absl::StrCat("token id ", id, " is outside the vocabulary [0, ", n, ")"));
  std::string text, error;
  if (!sp_->Decode(std::vector<int>(ids.begin(), ids.end()), &text, &error))
    return absl::InternalError(absl::StrCat("decode: ", error));
  return text;
}

void StreamingDetokenizer::DrainBytes(std::string* out, bool at_end) {
  while (!pending_.empty()) {
    if (const size_t n = Utf8CharLength(pending_); n > 0) {
      out->append(pending_, 0, n);
      pending_.erase(0, n);
    } else if (!at_end && IsUtf8Prefix(pending_)) {
      return;  // wait for the rest of the character
    } else {
      out->append(kUtf8Replacement);  // SentencePiece maps each broken byte to U+FFFD
      pending_.erase(0, 1);
    }
    any_text_ = true;
  }
}

std::string Tokenizer::PieceText(int32_t id) const {
  if (id < 0 || id >= static_cast<int32_t>(pieces_.size())) return "";
  const PieceInfo& p = pieces_[id];
  switch (p.kind) {
    case PieceInfo::kText: return p.text;
    case PieceInfo::kControl: return "";
    case PieceInfo::kByte: break;
  }
  if (p.byte >= 0x20 && p.byte < 0x7f) return std::string(1, static_cast<char>(p.byte));
  char hex[16];
  std::snprintf(hex, sizeof hex, "bytes:\\x%02x", p.byte);
  return hex;
}

std::string StreamingDetokenizer::Push(int32_t id) {
  std::string out;
  if (id < 0 || id >= static_cast<int32_t>(tok_.pieces_.size())) return out;
  const Tokenizer::PieceInfo& p = tok_.pieces_[id];
  if (p.kind == Tokenizer::PieceInfo::kByte) {
    pending_.push_back(static_cast<char>(p.byte));
    DrainBytes(&out, /*at_end=*/false);
    return out;
  }
  DrainBytes(&out, /*at_end=*/true);  // a byte run ends at any other piece
  if (bos_ws_seen_ || any_text_) is_bos_ws_ = false;
  bool has_bos_ws = false;
  if (p.kind == Tokenizer::PieceInfo::kText) {
    std::string_view text = p.text;
    if (is_bos_ws_ && tok_.strip_first_space_ && p.starts_with_space) {
      text.remove_prefix(1);
      has_bos_ws = !tok_.keep_stripping_spaces_;
    }
    out.append(text);
    if (!text.empty()) any_text_ = true;
  }
  bos_ws_seen_ = has_bos_ws;
  return out;
}

bool StreamingDetokenizer::AtStart() const {
  return tok_.strip_first_space_ && is_bos_ws_ && !bos_ws_seen_ && !any_text_ && pending_.empty();
}

void Tokenizer::TokenBytes(std::vector<std::string>* bytes, std::vector<std::string>* at_start,
                           std::vector<int32_t>* invisible_at_start) const {
  bytes->assign(pieces_.size(), std::string());
  at_start->assign(pieces_.size(), std::string());
  invisible_at_start->clear();
  for (size_t id = 0; id < pieces_.size(); ++id) {
    const PieceInfo& p = pieces_[id];
    switch (p.kind) {
      case PieceInfo::kControl: break;
      case PieceInfo::kByte:
        (*bytes)[id] = (*at_start)[id] = std::string(1, static_cast<char>(p.byte));
        break;
      case PieceInfo::kText:
        (*bytes)[id] = p.text;
        (*at_start)[id] = strip_first_space_ && p.starts_with_space ? p.text.substr(1) : p.text;
        if (p.text == " " && strip_first_space_) invisible_at_start->push_back(static_cast<int32_t>(id));
        break;
    }
  }
}

std::string StreamingDetokenizer::Flush() {
  std::string out;
  DrainBytes(&out, /*at_end=*/true);
  return out;
}

}  // namespace gla
