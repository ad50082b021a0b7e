// The LoRA adapters a server can apply, by name: loaded at start-up (--adapter flags) or
// registered by a finished fine-tune job. Thread-safe; adapters are immutable once added, and a
// running sequence keeps its adapter alive (shared_ptr) even if a newer one takes its name.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "models/lora_adapter.h"

namespace gla {

struct AdapterInfo {
  std::string name;
  std::string dir;  // where its PEFT files are
  int r = 0;
  double alpha = 0.0;
  std::vector<std::string> target_modules;
  std::string source;  // "flag", or "job:<id>"
};

// The listing of an adapter read from `dir`: its rank, alpha and target modules from its config,
// and how it came to be loaded (`source`: "flag", "load" or "job:<id>").
AdapterInfo DescribeAdapter(const std::string& name, const std::string& dir, const std::string& source,
                            const LoraAdapter& adapter);

class AdapterRegistry {
 public:
  // INVALID_ARGUMENT for a bad name (1-64 chars of [A-Za-z0-9._-], not starting with '.');
  // ALREADY_EXISTS when the name is taken and !replace.
  absl::Status Add(const AdapterInfo& info, std::shared_ptr<const LoraAdapter> adapter, bool replace = false);
  std::shared_ptr<const LoraAdapter> Find(const std::string& name) const;  // null when unknown
  // Takes the name off the list; sequences that hold the adapter keep it. NOT_FOUND when unknown.
  absl::Status Remove(const std::string& name);
  std::vector<AdapterInfo> List() const;                                   // sorted by name
  static absl::Status ValidateName(const std::string& name);

 private:
  mutable std::mutex mu_;
  std::map<std::string, std::pair<AdapterInfo, std::shared_ptr<const LoraAdapter>>> adapters_;
};

}  // namespace gla
