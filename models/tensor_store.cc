#include "models/tensor_store.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "models/status_macros.h"
#include "nlohmann/json.hpp"

namespace gla {

namespace fs = std::filesystem;

absl::StatusOr<TensorStore> TensorStore::OpenFiles(const std::vector<std::string>& paths) {
  TensorStore store;
  store.files_.reserve(paths.size());  // TensorView pointers below must stay valid
  for (const auto& p : paths) {
    ASSIGN_OR_RETURN(SafetensorsFile f, SafetensorsFile::Open(p));
    store.files_.push_back(std::move(f));
  }
  for (const auto& f : store.files_) {
    for (const auto& t : f.tensors()) {
      auto [it, inserted] = store.by_name_.emplace(t.name, &t);
      if (!inserted)
        return absl::DataLossError(absl::StrCat("tensor '", t.name, "' appears in both ", it->second->file,
                                                " and ", t.file));
    }
  }
  return store;
}

absl::StatusOr<TensorStore> TensorStore::OpenDir(const std::string& dir) {
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  std::error_code ec;
  if (!fs::exists(index, ec)) {
    const fs::path single = fs::path(dir) / "model.safetensors";
    if (!fs::exists(single, ec))
      return absl::NotFoundError(absl::StrCat(dir, ": no model.safetensors or model.safetensors.index.json"));
    return OpenFiles({single.string()});
  }
  std::ifstream in(index);
  std::stringstream text;
  text << in.rdbuf();
  if (!in) return absl::NotFoundError(absl::StrCat(index.string(), ": cannot read"));
  nlohmann::json j = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return absl::DataLossError(absl::StrCat(index.string(), ": not valid JSON"));
  auto wm = j.find("weight_map");
  if (wm == j.end() || !wm->is_object() || wm->empty())
    return absl::DataLossError(absl::StrCat(index.string(), ": no 'weight_map' object"));
  std::map<std::string, std::string> expected;  // tensor -> shard
  std::vector<std::string> shards;
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    if (!it.value().is_string())
      return absl::DataLossError(absl::StrCat(index.string(), ": weight_map['", it.key(), "'] is not a file name"));
    const std::string shard = it.value().get<std::string>();
    // A shard is a plain file name beside the index: never a path that leaves the directory.
    if (shard.empty() || shard.find('/') != std::string::npos || shard == "." || shard == "..")
      return absl::InvalidArgumentError(absl::StrCat(index.string(), ": shard name '", shard,
                                                     "' for tensor '", it.key(), "' is not a plain file name"));
    expected[it.key()] = shard;
    if (std::find(shards.begin(), shards.end(), shard) == shards.end()) shards.push_back(shard);
  }
  std::vector<std::string> paths;
  for (const auto& s : shards) paths.push_back((fs::path(dir) / s).string());
  ASSIGN_OR_RETURN(TensorStore store, OpenFiles(paths));
  for (const auto& [name, shard] : expected) {
    const TensorView* t = store.Find(name);
    if (t == nullptr || fs::path(t->file).filename() != shard)
      return absl::DataLossError(absl::StrCat(index.string(), ": tensor '", name, "' is not in shard ", shard));
  }
  if (store.size() != expected.size()) {
    for (const auto& n : store.Names())
      if (!expected.count(n))
        return absl::DataLossError(absl::StrCat(index.string(), ": tensor '", n, "' is in a shard but not in weight_map"));
  }
  return store;
}

const TensorView* TensorStore::Find(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

std::vector<std::string> TensorStore::Names() const {
  std::vector<std::string> out;
  for (const auto& [n, t] : by_name_) out.push_back(n);
  return out;
}

}  // namespace gla
