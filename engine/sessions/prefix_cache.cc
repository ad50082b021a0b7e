#include "engine/sessions/prefix_cache.h"

#include <algorithm>

#include "models/fingerprint.h"

namespace gla {

namespace {
constexpr size_t kMaxSeen = 1 << 16;  // sightings remembered (8+4 bytes each); forgotten wholesale past it
}

PrefixCache::PrefixCache(StatePool& pool, int block_tokens, int64_t budget_bytes)
    : pool_(pool), block_(std::max(block_tokens, 1)),
      max_entries_(static_cast<int>(std::min<int64_t>(budget_bytes / std::max<int64_t>(pool.state_bytes(), 1), 1 << 20))) {}

std::vector<uint64_t> PrefixCache::BlockHashes(std::span<const int32_t> prompt, const LoraAdapter* adapter) const {
  std::vector<uint64_t> out;
  const uintptr_t a = reinterpret_cast<uintptr_t>(adapter);
  uint64_t h = Hash64({reinterpret_cast<const uint8_t*>(&a), sizeof(a)}, 0x70726566);
  for (size_t end = block_; end < prompt.size(); end += block_) {
    const auto block = prompt.subspan(end - block_, block_);
    h = Hash64({reinterpret_cast<const uint8_t*>(block.data()), block.size_bytes()}, h);
    out.push_back(h);
  }
  return out;
}

std::optional<PrefixCache::Match> PrefixCache::Lookup(std::span<const int32_t> prompt, const LoraAdapter* adapter,
                                                      int* snapshot) {
  *snapshot = 0;
  if (!enabled()) return std::nullopt;
  const std::vector<uint64_t> hashes = BlockHashes(prompt, adapter);
  if (hashes.empty()) return std::nullopt;  // shorter than a block and a token: nothing to cache
  std::optional<Match> match;
  for (size_t i = hashes.size(); i-- > 0 && !match;) {
    auto it = entries_.find(hashes[i]);
    if (it == entries_.end()) continue;
    const Entry& e = it->second;
    const size_t n = (i + 1) * static_cast<size_t>(block_);
    if (e.adapter.get() != adapter || e.tokens.size() != n || !std::equal(e.tokens.begin(), e.tokens.end(), prompt.begin()))
      continue;  // a hash collision
    lru_.splice(lru_.begin(), lru_, e.lru);
    match = Match{static_cast<int>(n), e.state};
  }
  if (match) {
    ++counters_.hits;
    counters_.saved_tokens += static_cast<uint64_t>(match->tokens);
  } else {
    ++counters_.misses;
  }
  if (seen_.size() + hashes.size() > kMaxSeen) seen_.clear();
  const size_t covered = match ? static_cast<size_t>(match->tokens / block_) : 0;
  for (size_t i = 0; i < hashes.size(); ++i) {
    const uint32_t count = ++seen_[hashes[i]];
    if (i >= covered && count >= 2 && entries_.count(hashes[i]) == 0) *snapshot = static_cast<int>((i + 1) * block_);
  }
  return match;
}

absl::Status PrefixCache::Insert(std::span<const int32_t> prefix, std::shared_ptr<const LoraAdapter> adapter, int slot) {
  if (!enabled() || prefix.empty() || prefix.size() % block_ != 0) return absl::OkStatus();
  std::vector<int32_t> probe(prefix.begin(), prefix.end());
  probe.push_back(0);  // BlockHashes covers blocks shorter than its input
  const std::vector<uint64_t> hashes = BlockHashes(probe, adapter.get());
  const uint64_t key = hashes.back();
  if (entries_.count(key) != 0) return absl::OkStatus();
  std::shared_ptr<HostState> state;
  while (static_cast<int>(entries_.size()) >= max_entries_) {  // evict; reuse a buffer nobody else holds
    auto victim = entries_.find(lru_.back());
    if (victim->second.state.use_count() == 1 && !state) state = std::move(victim->second.state);
    lru_.pop_back();
    entries_.erase(victim);
    ++counters_.evicted;
  }
  if (!state) {
    auto fresh = pool_.NewHostState();
    if (!fresh.ok()) return fresh.status();
    state = std::move(*fresh);
  }
  if (absl::Status s = pool_.SaveToHost(slot, *state); !s.ok()) return s;
  lru_.push_front(key);
  entries_.emplace(key, Entry{std::vector<int32_t>(prefix.begin(), prefix.end()), std::move(adapter), std::move(state), lru_.begin()});
  ++counters_.inserted;
  return absl::OkStatus();
}

PrefixCacheStats PrefixCache::stats() const {
  PrefixCacheStats s = counters_;
  s.entries = static_cast<int>(entries_.size());
  s.bytes = s.entries * pool_.state_bytes();
  return s;
}

}  // namespace gla
