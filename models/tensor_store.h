// All tensors of a checkpoint directory: `model.safetensors`, or shards listed by
// `model.safetensors.index.json` ({"weight_map": {"tensor name": "shard file name"}}).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "models/safetensors.h"

namespace gla {

class TensorStore {
 public:
  // Opens `dir`/model.safetensors.index.json if present, else `dir`/model.safetensors.
  static absl::StatusOr<TensorStore> OpenDir(const std::string& dir);
  static absl::StatusOr<TensorStore> OpenFiles(const std::vector<std::string>& paths);

  const TensorView* Find(std::string_view name) const;
  std::vector<std::string> Names() const;
  size_t size() const { return by_name_.size(); }

 private:
  std::vector<SafetensorsFile> files_;
  std::map<std::string, const TensorView*, std::less<>> by_name_;
};

}  // namespace gla
