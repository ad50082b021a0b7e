#include "models/checkpoint.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "models/status_macros.h"
#include "models/tensor_store.h"

namespace gla {

absl::StatusOr<Checkpoint> LoadCheckpoint(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return absl::NotFoundError(absl::StrCat(dir, ": not a directory"));
  Checkpoint ck;
  ASSIGN_OR_RETURN(ck.config, LoadGlaConfig(dir));
  ASSIGN_OR_RETURN(TensorStore store, TensorStore::OpenDir(dir));
  ASSIGN_OR_RETURN(ck.weights, LoadModelWeights(ck.config, store));
  const fs::path tok = fs::path(dir) / "tokenizer.model";
  if (fs::exists(tok, ec)) {
    std::optional<int> eos;
    if (!ck.config.eos_token_ids.empty()) eos = ck.config.eos_token_ids.front();
    ASSIGN_OR_RETURN(ck.tokenizer, Tokenizer::Load(tok.string(), ck.config.bos_token_id, eos));
    if (ck.tokenizer->vocab_size() > ck.config.vocab_size)
      return absl::InvalidArgumentError(absl::StrCat(tok.string(), ": ", ck.tokenizer->vocab_size(),
                                                     " pieces, more than config.json's vocab_size ",
                                                     ck.config.vocab_size));
  }
  return ck;
}

}  // namespace gla
