#include "engine/constraints/regex_cache.h"

namespace gla::constraints {

RegexCache& RegexCache::Shared() {
  static RegexCache* cache = new RegexCache();  // never destroyed: threads may outlive main
  return *cache;
}

std::shared_ptr<const Regex> RegexCache::Find(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = index_.find(key);
  if (it == index_.end()) {
    ++misses_;
    return nullptr;
  }
  ++hits_;
  lru_.splice(lru_.begin(), lru_, it->second);
  return it->second->second;
}

std::shared_ptr<const Regex> RegexCache::Put(const std::string& key, std::shared_ptr<const Regex> re) {
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = index_.find(key); it != index_.end()) return it->second->second;  // made meanwhile
  lru_.emplace_front(key, re);
  index_.emplace(key, lru_.begin());
  bytes_ += key.size() + re->bytes();
  while (bytes_ > capacity_ && lru_.size() > 1) {  // the newest stays, whatever its size
    auto& [old_key, old] = lru_.back();
    bytes_ -= old_key.size() + old->bytes();
    index_.erase(old_key);
    lru_.pop_back();
  }
  return re;
}

absl::StatusOr<std::shared_ptr<const Regex>> RegexCache::Compile(const std::string& pattern) {
  if (auto found = Find(pattern)) return found;
  // Compiled outside the lock: other threads' lookups need not wait for a determinization.
  absl::StatusOr<Regex> re = Regex::Compile(pattern);
  if (!re.ok()) return re.status();
  return Put(pattern, std::make_shared<const Regex>(*std::move(re)));
}

void RegexCache::Clear() {
  std::lock_guard<std::mutex> lock(mu_);
  index_.clear();
  lru_.clear();
  bytes_ = 0;
}

RegexCache::Stats RegexCache::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return {hits_, misses_, lru_.size(), bytes_};
}

}  // namespace gla::constraints
