// Training data of a CreateFineTuneJob request, as token documents: a data_file confined to the
// server's --finetune_data_dir, and text documents tokenized with the model's tokenizer. Every
// refusal is INVALID_ARGUMENT naming the field (data_file, texts).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "models/tokenizer.h"

namespace gla {

// Bytes a data_file may hold per token of --finetune_max_tokens: a bound on what is read before
// tokenizing (no SentencePiece piece is anywhere near this long).
inline constexpr int64_t kDataFileBytesPerToken = 16;

// `relative` resolved inside `data_dir`, with every symbolic link followed. Refused: an empty
// path, an absolute one, one with a '..' component, one that leads outside the directory (through
// a symbolic link), one that is not an existing regular file. FAILED_PRECONDITION when `data_dir`
// is empty (the server has no data directory) or does not exist.
absl::StatusOr<std::filesystem::path> ResolveDataFile(const std::string& data_dir, const std::string& relative);

// One document per line ('\n' or "\r\n"; empty lines skipped). INVALID_ARGUMENT when the file is
// larger than max_bytes or a line is not valid UTF-8 (naming the line).
absl::StatusOr<std::vector<std::string>> ReadLineDocuments(const std::filesystem::path& file, int64_t max_bytes);

// BOS + text + EOS (each where the tokenizer has one) per document. INVALID_ARGUMENT naming
// `field` and the document for invalid UTF-8, or as soon as the total passes max_tokens.
absl::StatusOr<std::vector<std::vector<int32_t>>> TokenizeDocuments(const Tokenizer& tokenizer,
                                                                    const std::vector<std::string>& texts,
                                                                    int64_t max_tokens, const char* field);

}  // namespace gla
