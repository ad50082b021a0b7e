#include "engine/sessions/peer_prefix_states.h"

#include <algorithm>

namespace gla {

void PeerPrefixStates::Publish(uint64_t key, std::span<const int32_t> tokens, std::span<const float> state) {
  if (max_entries_ <= 0) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (entries_.count(key) != 0) return;
  }
  // The copy (tens of MiB at 1.3B) is made before the lock is taken again.
  auto copy = std::make_shared<const std::vector<float>>(state.begin(), state.end());
  std::lock_guard<std::mutex> lock(mu_);
  if (entries_.count(key) != 0) return;  // another engine published it meanwhile
  while (static_cast<int>(entries_.size()) >= max_entries_) {
    entries_.erase(lru_.back());  // a reader holding its state keeps that copy alive
    lru_.pop_back();
  }
  lru_.push_front(key);
  entries_.emplace(key, Entry{std::vector<int32_t>(tokens.begin(), tokens.end()), std::move(copy), lru_.begin()});
}

std::optional<PeerPrefixStates::Found> PeerPrefixStates::FindLongest(const std::vector<uint64_t>& hashes,
                                                                     std::span<const int32_t> prompt, int block) {
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t i = hashes.size(); i-- > 0;) {
    auto it = entries_.find(hashes[i]);
    if (it == entries_.end()) continue;
    const size_t n = (i + 1) * static_cast<size_t>(block);
    const std::vector<int32_t>& t = it->second.tokens;
    if (t.size() != n || n > prompt.size() || !std::equal(t.begin(), t.end(), prompt.begin())) continue;
    lru_.splice(lru_.begin(), lru_, it->second.lru);
    return Found{i + 1, it->second.state};
  }
  return std::nullopt;
}

int PeerPrefixStates::entries() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(entries_.size());
}

}  // namespace gla
