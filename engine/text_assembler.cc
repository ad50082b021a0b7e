#include "engine/text_assembler.h"

#include <algorithm>

namespace gla {

TextAssembler::TextAssembler(const Tokenizer* tokenizer, std::vector<std::string> stop_strings)
    : stops_(std::move(stop_strings)) {
  if (tokenizer != nullptr) detok_ = std::make_unique<StreamingDetokenizer>(*tokenizer);
  std::erase_if(stops_, [](const std::string& s) { return s.empty(); });
}

std::string TextAssembler::Push(int32_t token, bool* stopped) {
  *stopped = false;
  if (detok_ == nullptr || stopped_) return "";
  pending_ += detok_->Push(token);
  // The earliest completed stop string wins.
  size_t cut = std::string::npos;
  for (const auto& s : stops_) cut = std::min(cut, pending_.find(s));
  if (cut != std::string::npos) {
    stopped_ = *stopped = true;
    std::string out = pending_.substr(0, cut);
    pending_.clear();
    return out;
  }
  // Hold back the longest suffix that is a proper prefix of some stop string. Stop strings are
  // valid UTF-8, so such a suffix starts on a character boundary.
  size_t hold = 0;
  for (const auto& s : stops_)
    for (size_t n = std::min(s.size() - 1, pending_.size()); n > hold; --n)
      if (pending_.compare(pending_.size() - n, n, s, 0, n) == 0) {
        hold = n;
        break;
      }
  std::string out = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return out;
}

std::string TextAssembler::Finish() {
  if (detok_ == nullptr || stopped_) return "";
  std::string out = pending_ + detok_->Flush();
  pending_.clear();
  // A flush can complete a stop string only with U+FFFD bytes; check anyway for consistency.
  for (const auto& s : stops_)
    if (auto at = out.find(s); at != std::string::npos) out.resize(at);
  return out;
}

}  // namespace gla
