#include "engine/adapter_registry.h"

#include "absl/strings/str_cat.h"

namespace gla {

absl::Status AdapterRegistry::ValidateName(const std::string& name) {
  if (name.empty() || name.size() > 64 || name[0] == '.')
    return absl::InvalidArgumentError(absl::StrCat("adapter name '", name, "' must be 1-64 characters, not starting with '.'"));
  for (char ch : name) {
    const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
                    ch == '_' || ch == '-';
    if (!ok) return absl::InvalidArgumentError(absl::StrCat("adapter name '", name, "' may hold only [A-Za-z0-9._-]"));
  }
  return absl::OkStatus();
}

absl::Status AdapterRegistry::Add(const AdapterInfo& info, std::shared_ptr<const LoraAdapter> adapter, bool replace) {
  if (absl::Status s = ValidateName(info.name); !s.ok()) return s;
  if (adapter == nullptr) return absl::InvalidArgumentError(absl::StrCat("adapter '", info.name, "' has no weights"));
  std::lock_guard<std::mutex> lock(mu_);
  auto it = adapters_.find(info.name);
  if (it != adapters_.end() && !replace)
    return absl::AlreadyExistsError(absl::StrCat("an adapter named '", info.name, "' is already loaded"));
  adapters_[info.name] = {info, std::move(adapter)};
  return absl::OkStatus();
}

std::shared_ptr<const LoraAdapter> AdapterRegistry::Find(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = adapters_.find(name);
  return it == adapters_.end() ? nullptr : it->second.second;
}

std::vector<AdapterInfo> AdapterRegistry::List() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<AdapterInfo> out;
  for (const auto& [name, entry] : adapters_) out.push_back(entry.first);
  return out;
}

absl::Status AdapterRegistry::Remove(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  if (adapters_.erase(name) == 0) return absl::NotFoundError(absl::StrCat("no adapter named '", name, "' is loaded"));
  return absl::OkStatus();
}

AdapterInfo DescribeAdapter(const std::string& name, const std::string& dir, const std::string& source,
                            const LoraAdapter& adapter) {
  AdapterInfo info;
  info.name = name;
  info.dir = dir;
  info.r = adapter.config.r;
  info.alpha = adapter.config.alpha;
  for (LoraTarget t : adapter.config.targets) info.target_modules.push_back(LoraTargetName(t));
  info.source = source;
  return info;
}

}  // namespace gla
