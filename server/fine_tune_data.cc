#include "server/fine_tune_data.h"

#include <algorithm>
#include <fstream>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "engine/finetune/confined_path.h"
#include "models/utf8.h"

namespace gla {

namespace fs = std::filesystem;

absl::StatusOr<fs::path> ResolveDataFile(const std::string& data_dir, const std::string& relative) {
  if (data_dir.empty())
    return absl::FailedPreconditionError("data_file: the server was started without --finetune_data_dir");
  return ResolveInside(data_dir, relative, "data_file", "the server's data directory", PathKind::kRegularFile);
}

absl::StatusOr<std::vector<std::string>> ReadLineDocuments(const fs::path& file, int64_t max_bytes) {
  std::error_code ec;
  const uintmax_t size = fs::file_size(file, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("data_file: ", ec.message()));
  if (size > static_cast<uintmax_t>(max_bytes))
    return absl::InvalidArgumentError(absl::StrCat("data_file: ", size, " bytes, more than the ", max_bytes,
                                                   " this server reads (", kDataFileBytesPerToken,
                                                   " per token of --finetune_max_tokens)"));
  std::ifstream in(file, std::ios::binary);
  if (!in) return absl::InvalidArgumentError("data_file: cannot be opened");
  // Read at most max_bytes + 1, even if the file grew since it was measured.
  std::string text(static_cast<size_t>(max_bytes) + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  if (static_cast<int64_t>(text.size()) > max_bytes)
    return absl::InvalidArgumentError(absl::StrCat("data_file: more than ", max_bytes, " bytes"));
  std::vector<std::string> docs;
  size_t line = 0;
  for (size_t start = 0; start < text.size();) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    ++line;
    std::string_view doc(text.data() + start, end - start);
    if (!doc.empty() && doc.back() == '\r') doc.remove_suffix(1);
    if (!IsValidUtf8(doc)) return absl::InvalidArgumentError(absl::StrCat("data_file: line ", line, " is not valid UTF-8"));
    if (!doc.empty()) docs.emplace_back(doc);
    start = end + 1;
  }
  return docs;
}

absl::StatusOr<std::vector<std::vector<int32_t>>> TokenizeDocuments(const Tokenizer& tokenizer,
                                                                    const std::vector<std::string>& texts,
                                                                    int64_t max_tokens, const char* field) {
  std::vector<std::vector<int32_t>> docs;
  int64_t total = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    if (!IsValidUtf8(texts[i]))
      return absl::InvalidArgumentError(absl::StrCat(field, "[", i, "]: not valid UTF-8"));
    // Bounded by what is left of the job's token budget, in bounded memory (Tokenizer::EncodeBounded).
    auto ids = tokenizer.EncodeBounded(texts[i], /*add_bos=*/true, {.max_tokens = std::max<int64_t>(1, max_tokens - total)});
    if (absl::IsOutOfRange(ids.status()))
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": more than ", max_tokens, " tokens (the server's --finetune_max_tokens)"));
    if (!ids.ok()) return absl::InvalidArgumentError(absl::StrCat(field, "[", i, "]: ", ids.status().message()));
    if (tokenizer.eos_id().has_value()) ids->push_back(*tokenizer.eos_id());
    total += static_cast<int64_t>(ids->size());
    if (total > max_tokens)
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": more than ", max_tokens, " tokens (the server's --finetune_max_tokens)"));
    docs.push_back(std::move(*ids));
  }
  return docs;
}

}  // namespace gla
