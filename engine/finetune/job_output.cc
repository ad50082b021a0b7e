#include "engine/finetune/job_output.h"

#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "models/status_macros.h"

namespace gla {

namespace fs = std::filesystem;

absl::StatusOr<std::string> WriteDirectoryAtomically(const std::string& root, const std::string& name,
                                                     const std::string& tag,
                                                     const std::function<absl::Status(const std::string& dir)>& write) {
  const fs::path final_dir = fs::path(root) / name;
  const fs::path tmp_dir = fs::path(root) / absl::StrCat(".", name, ".", tag, ".tmp");
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) return absl::InternalError(absl::StrCat("creating ", root, ": ", ec.message()));
  if (fs::exists(final_dir, ec))
    return absl::AlreadyExistsError(absl::StrCat(final_dir.string(), " exists already; not overwritten"));
  fs::remove_all(tmp_dir, ec);
  fs::create_directories(tmp_dir, ec);
  absl::Status st = ec ? absl::InternalError(absl::StrCat("creating ", tmp_dir.string(), ": ", ec.message()))
                       : write(tmp_dir.string());
  // rename() would replace an empty directory that appeared meanwhile; check once more just before.
  if (st.ok() && fs::exists(final_dir, ec))
    st = absl::AlreadyExistsError(absl::StrCat(final_dir.string(), " appeared meanwhile; not overwritten"));
  if (st.ok()) {
    fs::rename(tmp_dir, final_dir, ec);
    if (ec) st = absl::InternalError(absl::StrCat("renaming ", tmp_dir.string(), " to ", final_dir.string(), ": ",
                                                  ec.message()));
  }
  if (!st.ok()) {
    fs::remove_all(tmp_dir, ec);
    return st;
  }
  return final_dir.string();
}

absl::Status WriteFullCheckpoint(const std::string& dir, const std::string& base_model_dir, const GlaConfig& config,
                                 const ModelWeights& weights) {
  RETURN_IF_ERROR(WriteModelWeights((fs::path(dir) / "model.safetensors").string(), config, weights));
  for (const char* file : {"config.json", "tokenizer.model", "generation_config.json"}) {
    const fs::path from = fs::path(base_model_dir) / file;
    std::error_code ec;
    if (!fs::exists(from, ec)) {
      if (std::string(file) == "config.json")
        return absl::NotFoundError(absl::StrCat(from.string(), ": missing (the base model's config is copied)"));
      continue;
    }
    fs::copy_file(from, fs::path(dir) / file, ec);
    if (ec) return absl::InternalError(absl::StrCat("copying ", from.string(), ": ", ec.message()));
  }
  return absl::OkStatus();
}

}  // namespace gla
