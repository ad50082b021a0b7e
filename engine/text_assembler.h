// Turns a request's generated tokens into the text it may show: streaming detokenization
// (valid UTF-8 only) plus stop strings. Text that could be the start of a stop string is held
// back until it is known not to be; when a stop string completes, output ends before it.
#pragma once

#include <string>
#include <vector>

#include "models/tokenizer.h"

namespace gla {

class TextAssembler {
 public:
  // tokenizer may be null (a checkpoint without tokenizer.model): text stays empty.
  TextAssembler(const Tokenizer* tokenizer, std::vector<std::string> stop_strings);

  // Returns the text that is safe to emit now; sets *stopped when a stop string completed.
  std::string Push(int32_t token, bool* stopped);
  // End of generation (not by a stop string): everything held back.
  std::string Finish();
  // Whether the next token's text loses its leading space (StreamingDetokenizer::AtStart); false
  // without a tokenizer.
  bool AtStart() const { return detok_ != nullptr && detok_->AtStart(); }

 private:
  std::unique_ptr<StreamingDetokenizer> detok_;
  std::vector<std::string> stops_;
  std::string pending_;  // produced but not yet emitted
  bool stopped_ = false;
};

}  // namespace gla
